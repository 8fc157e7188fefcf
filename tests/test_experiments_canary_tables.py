"""Smoke tests of the canary tables' ``--quick`` runs (experiments.multi_run_whitebox,
experiments.blackbox_canaries) and reference values for the Gaussian calibration."""

import math

import pytest
from scipy.stats import norm

from experiments import blackbox_canaries, multi_run_whitebox as mrw

pytestmark = [pytest.mark.filterwarnings("ignore:Secure RNG"), pytest.mark.filterwarnings("ignore:Full backward hook")]


def _naive_delta(eps, sigma):
    # Balle & Wang 2018, Theorem 8, written out directly (no log space)
    return norm.cdf(1 / (2 * sigma) - eps * sigma) - math.exp(eps) * norm.cdf(-1 / (2 * sigma) - eps * sigma)


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_sigma_makes_the_gaussian_mechanism_exactly_eps_delta(eps):
    sigma = mrw.sigma_for_epsilon(eps)
    assert abs(_naive_delta(eps, sigma) - 1e-5) < 1e-10
    assert abs(mrw.gaussian_delta(eps, sigma) - _naive_delta(eps, sigma)) < 1e-12
    # a larger claim needs less noise; the classical sigma = sqrt(2 ln(1.25/delta))/eps is looser (larger) for eps <= 1
    if eps <= 1.0:
        assert sigma < math.sqrt(2 * math.log(1.25 / 1e-5)) / eps


def test_sigma_decreases_with_the_claim():
    sigmas = [mrw.sigma_for_epsilon(e) for e in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(a > b for a, b in zip(sigmas, sigmas[1:]))


def test_ceiling_for_1000_runs_is_about_5_6():
    from audit.stats import epsilon_from_counts

    assert abs(epsilon_from_counts(1000, 0, 0, 1000, delta=1e-5).value - 5.6) < 0.05


def test_multi_run_quick_is_sound_and_writes_the_table(tmp_path, capsys):
    assert mrw.main(["--quick", "--opacus-runs", "60", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "multi_run_whitebox.md").read_text()
    assert "| 8 | 0.600 | 1000 |" in text and "above the claim: 0 of 24." in text
    rows = mrw.table(mrw.QUICK)
    for r in rows:
        for key in ("split", "bonferroni", "pilot"):
            assert 0.0 <= r[key][1] <= r[key][2] <= min(r["claim"], r["ceiling"])
    # claim 8, 1000 runs per world: the audit shows a clearly positive bound
    assert next(r for r in rows if r["claim"] == 8.0 and r["n"] == 1000)["pilot"][0] > 1.5


def test_blackbox_quick_reports_every_kind(tmp_path):
    assert blackbox_canaries.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "blackbox_canaries.md").read_text()
    for kind in blackbox_canaries.KINDS:
        assert text.count(f"| {kind} |") == 2  # plain and DP-SGD
    # the quick DP-SGD audits are small: a verdict, never a violation of the accountant's claim
    assert "NO VIOLATION DETECTED" in text or "INCONCLUSIVE" in text
    assert "| VIOLATION |" not in text
