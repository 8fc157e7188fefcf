"""An attack's warnings (LiRA's per-record variance on too few shadows) reach report.json,
the rendered report and the terminal summary."""

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest

from audit.attacks._common import AttackWarning
from audit.attacks.lira import MIN_VALUES_PER_RECORD
from audit.config import parse_config
from audit.observations import Observations
from audit.pipeline import analysis
from audit.report import load_report, render_report, summary_table

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"
ATTACKS = ["loss", "lira-offline", "lira-offline-fixed", "lira-online"]


def audit(models: int, canaries: int = 60, seed: int = 0):
    """Black-box observations as the pipeline holds them: canaries, then a population."""
    rng = np.random.default_rng(seed)
    population = 20
    keep = np.zeros((models, canaries + population), bool)
    keep[:, :canaries] = rng.random((models, canaries)) < 0.5
    phi = rng.normal(size=keep.shape) + keep
    logits = np.zeros(keep.shape + (1, 2))
    logits[..., 0, 0] = phi  # label 0: the logit-scaled confidence is phi
    observations = Observations(keep=keep, labels=np.zeros(keep.shape[1], int), logits=logits,
                                population=np.arange(keep.shape[1]) >= canaries)
    config = parse_config({"audit": {"models": models, "canaries": canaries, "attacks": ATTACKS},
                           "mlflow": {"enabled": False}})
    return config, observations, keep[:, :canaries]


def test_eight_models_record_the_warning_per_attack():
    config, observations, keep = audit(models=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttackWarning)  # recorded, not raised past the table
        table = analysis.attack_table(config, observations, keep)
    assert table["loss"]["warnings"] == [] and table["lira-offline-fixed"]["warnings"] == []
    for method in ("lira-offline", "lira-online"):
        (message,) = table[method]["warnings"]  # once, though each of the 8 targets warned
        assert message.startswith(f"{method}: ") and f"{method}-fixed" in message
        assert f"fewer than {MIN_VALUES_PER_RECORD}" in message


def test_many_shadows_record_no_warning():
    config, observations, keep = audit(models=2 * MIN_VALUES_PER_RECORD + 12, canaries=30)
    table = analysis.attack_table(config, observations, keep)
    assert all(entry["warnings"] == [] for entry in table.values())


def test_other_warnings_still_reach_the_caller(monkeypatch):
    config, observations, keep = audit(models=8)
    real = analysis.leave_one_out

    def noisy(*args, **kwargs):
        warnings.warn("something else", RuntimeWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "leave_one_out", noisy)
    with pytest.warns(RuntimeWarning, match="something else"):
        table = analysis.attack_table(config, observations, keep)
    assert all("something else" not in w for entry in table.values() for w in entry["warnings"])


@pytest.fixture
def warned():
    report = load_report(FIXTURE)
    report = copy.deepcopy(report)
    report["attacks"]["lira-online"]["warnings"] = [
        "lira-online: the median record's variance is estimated from only 4 IN and 3 OUT shadow values."]
    report["attacks"]["loss"]["warnings"] = []
    return report


def test_the_rendered_report_shows_the_warning(warned, tmp_path):
    render_report(warned, tmp_path)
    md = (tmp_path / "report.md").read_text()
    attacks = md.split("## Membership-inference attacks", 1)[1].split("\n## ", 1)[0]
    assert "**Warning:** lira-online: the median record's variance is estimated from only 4 IN and 3 OUT" in attacks
    assert "<strong>Warning:</strong> lira-online: the median record" in (tmp_path / "report.html").read_text()


def test_the_terminal_summary_shows_the_warning(warned):
    lines = summary_table([warned, load_report(FIXTURE)]).splitlines()
    assert lines[-1] == ("warning: quickstart-dp: lira-online: the median record's variance is estimated "
                         "from only 4 IN and 3 OUT shadow values.")
    assert sum(line.startswith("warning:") for line in lines) == 1


def test_a_report_without_warnings_renders_none(tmp_path):
    report = load_report(FIXTURE)
    render_report(report, tmp_path)
    assert "Warning:" not in (tmp_path / "report.md").read_text()
    assert "warning" not in summary_table(report)


def test_malformed_warnings_are_named(warned, tmp_path):
    from audit.errors import InputError

    warned["attacks"]["loss"]["warnings"] = "not a list"
    with pytest.raises(InputError, match=r"attacks\.loss\.warnings"):
        render_report(warned, tmp_path)
