"""Bounds from raw scores: ties, the valid abstention search, threshold strategies."""

import numpy as np
import pytest
from scipy import stats

from audit.errors import InputError
from audit.stats import (
    Bonferroni,
    FixedGuesses,
    GuessSearch,
    Split,
    epsilon_from_scores,
    epsilon_one_run,
    epsilon_one_run_from_scores,
)
from tests.hull_reference import hull_bonferroni_eps


def quantile_scores(m: int, shift: float):
    """Deterministic scores: normal quantiles, members (every other canary) shifted up."""
    members = np.arange(m) % 2 == 0
    z = np.empty(m)
    for flag in (True, False):
        idx = np.flatnonzero(members == flag)
        z[idx] = stats.norm.ppf((np.arange(idx.size) + 0.5) / idx.size)[np.random.default_rng(0).permutation(idx.size)]
    return z + shift * members, members


@pytest.mark.parametrize("order", ["members-first", "members-last", "interleaved"])
def test_ties_never_help(order):
    m = 1000
    members = np.zeros(m, bool)
    if order == "members-first":
        members[:500] = True
    elif order == "members-last":
        members[500:] = True
    else:
        members[::2] = True
    scores = np.zeros(m)
    assert epsilon_one_run_from_scores(scores, members, delta=1e-5).value == 0.0
    assert epsilon_one_run_from_scores(scores, members, delta=0, strategy=FixedGuesses(10, 10)).value == 0.0
    assert epsilon_from_scores(scores, members, delta=1e-5).value == 0.0


def test_ties_are_one_group_at_the_cut():
    # 20 members strictly on top, then a tie of 10 members and 10 non-members: a cut at 30
    # must fall back to 20 correct guesses, never count the tied members first.
    scores = np.r_[np.full(20, 5.0), np.full(20, 3.0), np.zeros(60)]
    members = np.r_[np.ones(20, bool), np.ones(10, bool), np.zeros(10, bool), np.arange(60) % 2 == 0]
    res = epsilon_one_run_from_scores(scores, members, delta=0.0, strategy=FixedGuesses(30))
    assert res.details["guesses_made"] == 20 and res.details["correct"] == 20
    assert res.value == pytest.approx(epsilon_one_run(100, 30, 20, delta=0).value)


def test_fixed_guesses_equals_counts_bound():
    scores, members = quantile_scores(1000, 2.0)
    res = epsilon_one_run_from_scores(scores, members, delta=1e-5, strategy=FixedGuesses(100, 100))
    order = np.argsort(-scores)
    v = members[order[:100]].sum() + (~members[order[-100:]]).sum()
    assert res.value == pytest.approx(epsilon_one_run(1000, 200, int(v), delta=1e-5).value)


def test_search_pays_for_itself_with_bonferroni():
    # The search reports the best family member at significance alpha * weight: equal to
    # the best fixed-guesses bound computed at that level.
    scores, members = quantile_scores(2000, 1.5)
    search = GuessSearch()
    res = epsilon_one_run_from_scores(scores, members, delta=1e-5, strategy=search)
    family, weights = search.family(2000), search.weights(2000)
    assert sum(weights) == pytest.approx(1.0)
    best = 0.0
    for (kp, km), w in zip(family, weights):
        fixed = epsilon_one_run_from_scores(
            scores, members, delta=1e-5, confidence=1 - 0.05 * w, strategy=FixedGuesses(kp, km)
        )
        best = max(best, fixed.value)
    assert res.value == pytest.approx(best, rel=1e-6)
    assert res.value < res.details["power"]


@pytest.mark.parametrize("m, shift", [(1000, 1.0), (1000, 2.0), (1000, 4.0), (20000, 0.5), (20000, 1.0), (20000, 2.0)])
def test_at_least_85_percent_of_hull_bonferroni(m, shift):
    # The reference corrects over the thresholds on the ROC hull (jax_privacy's default).
    # Random draws: on perfectly smooth quantile scores the hull has so many vertices that
    # the reference collapses to 0, which would make this comparison vacuous.
    rng = np.random.default_rng(int(shift * 10) + m)
    members = rng.random(m) < 0.5
    scores = rng.normal(size=m) + shift * members
    ours = epsilon_one_run_from_scores(scores, members, delta=1e-5).value
    reference = hull_bonferroni_eps(scores, members, 1e-5)
    assert reference > 0
    assert ours >= 0.85 * reference


def test_power_of_1000_canaries():
    # Perfect attack, same design: the power reported beside the bound.
    members = np.arange(1000) % 2 == 0
    res = epsilon_one_run_from_scores(members.astype(float), members, delta=1e-5)
    assert res.value == pytest.approx(res.details["power"], rel=1e-9)
    assert 4.5 < res.value < 5.7823  # below the uncorrected 5.78: the search is paid for


def test_split_chooses_on_one_part_and_bounds_on_the_other():
    rng = np.random.default_rng(5)
    members = rng.random(4000) < 0.5
    scores = rng.normal(size=4000) + 2 * members
    res = epsilon_from_scores(scores, members, delta=1e-5, strategy=Split(seed=1))
    d = res.details
    assert d["chosen_on"] + d["bounded_on"] == 4000
    assert d["tp"] + d["fn"] + d["fp"] + d["tn"] == d["bounded_on"]
    from audit.stats import epsilon_from_counts

    assert res.value == pytest.approx(epsilon_from_counts(d["tp"], d["fn"], d["fp"], d["tn"], delta=1e-5).value)
    assert res.value > 0.5


def test_bonferroni_over_fixed_thresholds():
    rng = np.random.default_rng(6)
    members = rng.random(4000) < 0.5
    scores = rng.normal(size=4000) + 2 * members
    one = epsilon_from_scores(scores, members, delta=0, strategy=Bonferroni([1.0]))
    many = epsilon_from_scores(scores, members, delta=0, strategy=Bonferroni([0.0, 0.5, 1.0, 1.5, 2.0]))
    # The same threshold tested among five costs confidence.
    assert many.details["tests"] == 5
    single_at_corrected = epsilon_from_scores(scores, members, delta=0, confidence=0.99, strategy=Bonferroni([1.0]))
    assert single_at_corrected.value <= one.value
    if many.details["threshold"] == 1.0:
        assert many.value == pytest.approx(single_at_corrected.value)


@pytest.mark.parametrize(
    "scores, members",
    [
        ([1.0, np.nan], [True, False]),
        ([1.0, 2.0, 3.0], [True, False]),
        ([], []),
        ([1.0, 2.0], [2, 0]),
        (["a", "b"], [True, False]),
    ],
)
def test_bad_scores(scores, members):
    with pytest.raises(InputError):
        epsilon_one_run_from_scores(scores, members, delta=1e-5)


def test_search_family_depends_on_m_only():
    family = GuessSearch().family(1000)
    assert family == GuessSearch().family(1000)
    assert (500, 500) in family  # guess everything, two-sided
    assert all(kp + km <= 1000 for kp, km in family)
    assert all(2 * kp <= 1000 for kp, km in family if km == 0)  # no hopeless top-only guesses
    weights = GuessSearch(full_share=0.4).weights(1000)
    assert weights[family.index((500, 500))] == pytest.approx(0.4) and sum(weights) == pytest.approx(1.0)
