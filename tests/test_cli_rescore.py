"""Issue 17: a `dpaudit run` directory re-scored from the command line gives the run's own
figures. Before the fix, `attack --observations RUN` failed ("no manifest.json"), and on
RUN/observations `evaluate` skipped calibrated, every LiRA and RMIA ("records have no OUT
shadow model") while `attack --method lira-offline` exited 2: the CLI scored every canary
against every target, the pipeline only those each target's shadows include at least once
and exclude at least once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.cli import EXIT_BAD_INPUT, main
from audit.config import load_config
from audit.observations import load_observations
from audit.pipeline import analysis
from audit.pipeline.data import inclusion
from audit.stats.roc import auc
from tests.test_pipeline import TINY_BLACKBOX, TINY_WHITEBOX, write
from tests.test_verdict_integrity import one_error_line

# Every attack that applies to a black-box run's logits, each computed by the pipeline.
ATTACKS = ["loss", "confidence", "entropy", "modified-entropy", "calibrated", "lira-online",
           "lira-online-fixed", "lira-offline", "lira-offline-fixed", "rmia", "shokri", "label-only"]


@pytest.fixture(scope="module")
def blackbox(tmp_path_factory):
    """A tiny audit (5 models, 120 canaries, 100 population records) with every attack;
    at 0.05 and 0.9 FPR and 90% confidence, so that defaults cannot pass for the run's own."""
    tmp = tmp_path_factory.mktemp("rescore")
    cfg = write(tmp, TINY_BLACKBOX, out=tmp / "run")
    overrides = [f"audit.attacks={json.dumps(ATTACKS)}", "audit.fprs=[0.05, 0.9]", "confidence=0.9"]
    assert main(["run", str(cfg), "--no-progress", *[a for o in overrides for a in ("--set", o)]]) == 0
    report = json.loads((tmp / "run" / "report.json").read_text())
    config = load_config(cfg, overrides)
    return tmp / "run", report, inclusion(config, config.audit.canaries)


def _evaluate_json(capsys, path, *extra):
    capsys.readouterr()
    assert main(["evaluate", "--observations", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("where", ["", "observations"])
def test_evaluate_on_a_run_directory_gives_its_report(blackbox, capsys, where):
    run, report, _ = blackbox
    payload = _evaluate_json(capsys, run / where)
    assert sorted(payload) == sorted(ATTACKS) == sorted(report["attacks"])  # nothing skipped
    for method, row in report["attacks"].items():
        got = payload[method]
        assert got["auc"] == row["auc"], method
        assert (got["members"], got["non_members"]) == (row["n_members"], row["n_nonmembers"])
        assert got["tpr_at_fpr"] == row["tpr_at_fpr"], method  # TPR, intervals, FPRs 0.05 and 0.9
        assert got["confidence"] == 0.9 and got["targets"] == [0, 1, 2, 3, 4]


def test_the_report_is_still_the_pipelines_per_target_analysis(blackbox):
    """attack_table now pools analysis.leave_one_out; the figures are those of the
    per-target scores_for_target, concatenated, as before."""
    run, report, keep = blackbox
    observations = load_observations(run / "observations")
    for method in ("lira-offline", "rmia", "lira-online-fixed"):
        pairs = [analysis.scores_for_target(observations, method, k, keep) for k in range(5)]
        scores, members = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
        assert report["attacks"][method]["auc"] == auc(scores, members)


@pytest.mark.parametrize("target", [0, 3])
def test_attack_lira_offline_on_a_run_gives_the_pipelines_scores(blackbox, tmp_path, capsys, target):
    run, _, keep = blackbox
    out = tmp_path / "scores.npy"
    assert main(["attack", "--method", "lira-offline", "--observations", str(run), "--target", str(target),
                 "--out", str(out)]) == 0
    scores = np.load(out, allow_pickle=False)
    assert scores.dtype == np.float64 and scores.shape == (220,)  # 120 canaries, 100 population
    use = analysis.auditable(keep, target)
    want, _ = analysis.scores_for_target(load_observations(run / "observations"), "lira-offline", target, keep)
    np.testing.assert_array_equal(scores[:120][use], want)
    assert np.isnan(scores[:120][~use]).all() and np.isnan(scores[120:]).all()
    out_text = capsys.readouterr().out
    assert f"{220 - use.sum()} NaN: records its analysis did not score" in out_text
    assert "100 population records as references" in out_text


def test_attack_parameters_reach_the_run_analysis(blackbox, tmp_path):
    run, _, keep = blackbox
    out = tmp_path / "scores.npy"
    assert main(["attack", "--method", "rmia", "--observations", str(run / "observations"), "--target", "1",
                 "--out", str(out), "--param", "gamma=1.5"]) == 0
    want, _ = analysis.scores_for_target(load_observations(run), "rmia", 1, keep, gamma=1.5)
    np.testing.assert_array_equal(np.load(out)[:120][analysis.auditable(keep, 1)], want)


def test_a_run_directory_loads_as_its_observations(blackbox):
    run, _, _ = blackbox
    direct, inner = load_observations(run), load_observations(run / "observations")
    np.testing.assert_array_equal(direct.logits, inner.logits)
    np.testing.assert_array_equal(direct.population, inner.population)
    assert direct.population.sum() == 100


def test_help_says_what_observations_are_accepted(capsys):
    for command in ("attack", "evaluate"):
        capsys.readouterr()
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for accepted in (".npz", "observations run directory", "LiRA reference layout",
                         "`dpaudit run` directory (RUN or RUN/observations"):
            assert accepted in text, (command, accepted)


def test_bad_input_on_a_run_directory_is_one_line(blackbox, tmp_path, capsys):
    run, _, _ = blackbox
    out = str(tmp_path / "s.npy")
    assert main(["attack", "--method", "lira-offline", "--observations", str(run), "--target", "5",
                 "--out", out]) == EXIT_BAD_INPUT
    assert "--target: 5 out of range; expected 0..4 (5 models)" in one_error_line(capsys)
    assert main(["evaluate", "--observations", str(run), "--methods", "lira,loss"]) == EXIT_BAD_INPUT
    assert "--methods: unknown attack method(s) ['lira']" in one_error_line(capsys)

    broken = tmp_path / "broken"
    (broken / "observations").mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    (broken / "observations" / "manifest.json").write_text("{}")
    assert main(["evaluate", "--observations", str(broken)]) == EXIT_BAD_INPUT
    assert "manifest.json: expected format 'dpaudit-observations-run'" in one_error_line(capsys)
    (broken / "observations" / "manifest.json").write_text((run / "observations" / "manifest.json").read_text())
    for name in ("shared.npz", "model-00000.npz", "model-00001.npz", "model-00002.npz", "model-00003.npz",
                 "model-00004.npz"):
        (broken / "observations" / name).write_bytes((run / "observations" / name).read_bytes())
    assert main(["evaluate", "--observations", str(broken / "observations")]) == EXIT_BAD_INPUT
    assert "config.json: not readable JSON" in one_error_line(capsys)
    (broken / "config.json").write_text(json.dumps({"audit": {"fprs": [0.1]}}))
    assert main(["attack", "--method", "loss", "--observations", str(broken), "--target", "0",
                 "--out", out]) == EXIT_BAD_INPUT
    assert "config.json: expected audit.fprs (numbers), confidence and audit.canary_kind" in one_error_line(capsys)

    started = tmp_path / "started"  # a run killed before its first model: nothing to score
    started.mkdir()
    (started / "config.json").write_text((run / "config.json").read_text())
    assert main(["evaluate", "--observations", str(started)]) == EXIT_BAD_INPUT
    assert "no config.json beside observations (not a dpaudit run directory)" in one_error_line(capsys)


def test_evaluate_on_a_whitebox_run_gives_its_canary_statistics(tmp_path, capsys):
    cfg = write(tmp_path, TINY_WHITEBOX, out=tmp_path / "run", kind="dp", variant="")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    for where in ("", "observations.npz"):
        payload = _evaluate_json(capsys, tmp_path / "run" / where)
        assert sorted(payload) == sorted(report["attacks"]) == ["all-iterates", "last-iterate", "likelihood-ratio", "likelihood-ratio-half-sigma", "spread"]
        for name, row in report["attacks"].items():
            assert payload[name]["auc"] == row["auc"] and payload[name]["tpr_at_fpr"] == row["tpr_at_fpr"]
    canary = _evaluate_json(capsys, tmp_path / "run", "--methods", "canary-statistic")["canary-statistic"]
    assert canary["auc"] == report["attacks"]["likelihood-ratio"]["auc"]  # column 0
