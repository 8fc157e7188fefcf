"""The pipeline tests the claimed DP-SGD privacy curve (white-box audits): a rejection is a
VIOLATION, the bounds and the curve tests share the confidence, and the report, the
verdict and the MLflow metrics carry the p-value and the effective noise."""

import json
from pathlib import Path

import pytest

from audit.cli import main
from audit.pipeline.verdict import dp_verdict
from audit.tracking import metrics_from_report, tags_from_report

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "whitebox_plugin.toml")
ZOO = ["--no-progress", "--set", "mlflow.enabled=false", "--set", 'trainer.kind="zoo"', "--set", 'trainer.plugin=""']


def test_half_noise_is_a_violation_of_the_claimed_curve(tmp_path):
    """half_noise at a claimed epsilon of 4, one run (the bug zoo's design): the (epsilon,
    delta) bound stays below 4, the test of the claimed curve rejects it."""
    out = tmp_path / "half"
    assert main(["run", EXAMPLE, *ZOO, "--set", 'trainer.variant="half_noise"', "--set", "dp.target_epsilon=4",
                 "--set", f'output_dir="{out}"']) == 1
    report = json.loads((out / "report.json").read_text())
    v = report["verdict"]
    assert v["decision"] == "VIOLATION" and v["epsilon_lower_bound"] < v["claimed_epsilon"]
    assert v["claim_rejected"] and v["claim_p_value"] <= 0.05 / 6 and v["message"].startswith("Violation of the claimed")
    assert v["effective_epsilon"] > v["claimed_epsilon"] and v["effective_noise_multiplier"] < 0.7355
    # The noise test on the never-inserted canaries measures half the claimed noise.
    assert report["claim_tests"][0]["effective"]["details"]["decided_by"] == "noise"
    assert 0.7355 / 2 < v["effective_noise_multiplier"] < 0.7355 / 2 * 1.02
    assert (out / "readings.npz").exists()
    # Three statistics (likelihood ratio at sigma and at sigma / 2, spread), each with a bound
    # and a curve test: 6 share the level.
    test = report["claim_tests"][0]
    assert [t["name"] for t in report["claim_tests"]] == [
        "claim-test/likelihood-ratio", "claim-test/likelihood-ratio-half-sigma", "claim-test/spread"]
    assert test["confidence"] == pytest.approx(1 - 0.05 / 6) and test["confidence_overall"] == 0.95
    assert report["bounds"][0]["confidence"] == pytest.approx(1 - 0.05 / 6)
    assert "sigma=0.7355" in test["claim"] and "q=0.01" in test["claim"] and "T=1000" in test["claim"]
    metrics = metrics_from_report(report)
    assert metrics["claim_p_value"] == v["claim_p_value"] and metrics["effective_epsilon"] > 4
    assert tags_from_report(report)["dp_audit.claim_rejected"] == "true"
    assert "## Claimed privacy curve" in (out / "report.md").read_text()


def _row(rejected, p, testable=True):
    return {"name": "claim-test/s", "claim": "DP-SGD sigma=1, q=0.01, T=100, add/remove", "rejected": rejected,
            "p_value": p, "testable": testable, "confidence": 0.975,
            "effective": {"noise_multiplier": 0.8, "epsilon": 1.5}}


def _bound(value, power):
    return {"name": "one-run/s", "epsilon_lower_bound": value, "details": {"power": power}}


def test_verdict_rules_with_the_curve():
    claim = 2.0
    # the bound exceeds the claim: a violation, whatever the curve test says
    assert dp_verdict([_bound(2.5, 5.0)], claim, 0.95, claim_tests=[_row(False, 0.5)])["decision"] == "VIOLATION"
    # the curve is rejected: a violation of the claimed profile
    v = dp_verdict([_bound(1.0, 5.0)], claim, 0.95, claim_tests=[_row(True, 0.001)])
    assert v["decision"] == "VIOLATION" and v["claim_rejected"] and "privacy profile" in v["message"]
    # power below the claim, but the curve test could have rejected: not blind, so a pass
    v = dp_verdict([_bound(0.1, 1.5)], claim, 0.95, claim_tests=[_row(False, 0.7)])
    assert v["decision"] == "NO VIOLATION DETECTED" and "not rejected" in v["message"]
    # power below the claim and no outcome could reject the curve: blind, inconclusive
    v = dp_verdict([_bound(0.1, 1.5)], claim, 0.95, claim_tests=[_row(False, 1.0, testable=False)])
    assert v["decision"] == "INCONCLUSIVE" and v["exit_code"] == 1
    # without curve tests, as before
    assert dp_verdict([_bound(0.1, 1.5)], claim, 0.95)["decision"] == "INCONCLUSIVE"
    assert "claim_p_value" not in dp_verdict([_bound(0.1, 5.0)], claim, 0.95)


def test_readings_round_trip_and_older_run_directories(tmp_path):
    """A run directory from before readings were kept loads as None (the audit then runs
    without the noise test); saved readings come back bit for bit."""
    import numpy as np

    from audit.pipeline import rundir

    assert rundir.load_readings(tmp_path) is None
    readings = np.random.default_rng(0).normal(size=(5, 3))
    rundir.save_readings(tmp_path, readings, 2.5)
    back, c = rundir.load_readings(tmp_path)
    assert np.array_equal(back, readings) and c == 2.5


@pytest.mark.slow
def test_split_canaries_from_the_config_catch_per_tensor_clipping(tmp_path):
    """audit.canary_tensors = 4 splits each canary over four slot tensors: the correct Opacus
    trainer passes, a plugin that clips each tensor separately lets sqrt(4) C = 2 C through
    (as much as half the noise: caught in one run at the example's claimed epsilon 2)."""
    plugin = tmp_path / "per_tensor.py"
    plugin.write_text(
        "import torch\n"
        "from opacus.optimizers import DPOptimizer\n"
        "from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed\n\n"
        "class PerTensorClip(DPOptimizer):\n"
        "    def clip_and_accumulate(self):\n"
        "        for p in self.params:\n"
        "            _check_processed_flag(p.grad_sample)\n"
        "            g = self._get_flat_grad_sample(p)\n"
        "            norms = g.reshape(len(g), -1).norm(2, dim=-1)\n"
        "            factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)\n"
        "            grad = torch.einsum('i,i...', factor, g)\n"
        "            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad\n"
        "            _mark_as_processed(p.grad_sample)\n")
    common = ["--no-progress", "--set", "mlflow.enabled=false", "--set", "audit.canary_tensors=4"]
    assert main(["run", EXAMPLE, *common, "--set", f'output_dir="{tmp_path / "ok"}"']) == 0
    assert main(["run", EXAMPLE, *common, "--set", f'trainer.plugin="{plugin}:PerTensorClip"',
                 "--set", f'output_dir="{tmp_path / "bug"}"']) == 1
    report = json.loads((tmp_path / "bug" / "report.json").read_text())
    assert report["verdict"]["decision"] == "VIOLATION"
    assert json.loads((tmp_path / "ok" / "report.json").read_text())["verdict"]["decision"] == "NO VIOLATION DETECTED"


def test_canary_tensors_needs_gradient_canaries():
    from audit.config import parse_config
    from audit.errors import InputError

    with pytest.raises(InputError, match="canary_tensors"):
        parse_config({"audit": {"canary_tensors": 2}})
