"""experiments.shuffle_gap: the shuffle mechanism's ROC against the claimed Poisson curve."""

import numpy as np
import pytest

from experiments import shuffle_gap


def test_concave_hull_against_a_naive_majorant():
    rng = np.random.default_rng(0)
    x = np.sort(rng.random(40))
    y = np.clip(x + rng.normal(0, 0.1, 40), 0, 1)
    hull = shuffle_gap._concave_hull(x, y)
    # naive: the least concave majorant at x_i is the max over chords between points on either side
    pts = np.array([[0.0, 0.0], *zip(x, y), [1.0, 1.0]])
    for xi, hi in zip(x, hull):
        best = max(p[1] + (q[1] - p[1]) * (xi - p[0]) / (q[0] - p[0])
                   for p in pts for q in pts if p[0] <= xi <= q[0] and q[0] > p[0])
        assert hi == pytest.approx(best, abs=1e-12)
    assert np.all(hull >= y - 1e-12)


def test_claimed_sigma_gives_the_claim_back():
    from opacus.accountants import PRVAccountant

    sigma = shuffle_gap.claimed_sigma(2.0, 0.25, 4)
    acc = PRVAccountant()
    acc.history = [(sigma, 0.25, 4)]
    assert acc.get_epsilon(delta=shuffle_gap.DELTA) == pytest.approx(2.0, abs=0.02)


def test_the_claimed_mechanism_does_not_exceed_its_own_curve():
    """The method's check: Poisson in the shuffle's place leaves only Monte Carlo noise
    (20,000 samples: a TPR's standard error is at most 0.0036; 4 of them is the allowance)."""
    row = shuffle_gap.gap(4.0, 4, 1, 20_000, seed=1, mechanism="poisson")
    assert row["max_excess"] < 4 * 0.0036


def test_quick_run_finds_the_shuffle_above_the_claim_in_mid_roc(capsys):
    assert shuffle_gap.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| 4 | 2 | 1 |" in out and "largest excess" in out
    row = shuffle_gap.gap(4.0, 4, 1, 20_000, seed=0)
    assert 0.05 < row["at_fpr"] < 0.9 and row["max_excess"] > 0
