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
from audit.stats.guesses import Guess, split_from_scores
from audit.stats.one_run import guess_plan, one_run_p_value
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
    # the best fixed-guesses bound computed at that level (the full guess at the split
    # the scores give).
    scores, members = quantile_scores(2000, 1.5)
    search = GuessSearch(two_sided=True)
    res = epsilon_one_run_from_scores(scores, members, delta=1e-5, strategy=search)
    plan = guess_plan(search, 2000, 1e-5, 0.05)
    assert sum(sig for _, sig in plan) == pytest.approx(0.05)
    best = 0.0
    for guess, sig in plan:
        kp, km = guess.k_plus, guess.k_minus
        if guess.split_from_scores:
            kp = split_from_scores(scores)
            km = 2000 - kp
        fixed = epsilon_one_run_from_scores(scores, members, delta=1e-5, confidence=1 - sig, strategy=FixedGuesses(kp, km))
        best = max(best, fixed.value)
    assert res.value == pytest.approx(best, rel=1e-6)
    assert res.value < res.details["power"]


def test_pruning_drops_only_members_that_cannot_reject():
    # At m = 20000 and delta = 1e-5 the 2 m delta term (0.4) rules out small guess counts:
    # even all-correct, their p-value at eps = 0 exceeds any level they could get.
    search = GuessSearch()
    m, delta, alpha = 20000, 1e-5, 0.05
    unpruned = search.family(m)
    plan = guess_plan(search, m, delta, alpha)
    kept = [g for g, _ in plan]
    assert set(kept) < set(unpruned)
    for guess in unpruned:  # dropped: hopeless even all-correct, at the unpruned level
        hopeless = one_run_p_value(m, guess.r, guess.r, 0.0, delta) > alpha / len(unpruned)
        assert hopeless == (guess not in kept)
    for guess, sig in plan:
        assert one_run_p_value(m, guess.r, guess.r, 0.0, delta) <= sig
    assert guess_plan(GuessSearch(prune=False), m, delta, alpha)[0][0] == unpruned[0]


def test_split_from_scores_ignores_labels_and_finds_the_gap():
    rng = np.random.default_rng(3)
    members = rng.random(5000) < 0.5
    scores = members + 0.01 * rng.normal(size=5000)
    k = split_from_scores(scores)
    assert k == members.sum() != 2500  # the gap, not the half
    assert split_from_scores(scores[rng.permutation(5000)]) == k  # order and labels play no part
    res = epsilon_one_run_from_scores(scores, members, delta=1e-5)
    assert res.details["correct"] == res.details["guesses"] == 5000  # every guess right
    assert res.value == pytest.approx(res.details["power"])
    # A planted bug's readings: members far out and widely spread (a two-means cut would
    # split the members); the widest gap still finds the valley.
    spread = np.where(members, 1e6 * rng.lognormal(sigma=1.0, size=5000), rng.normal(size=5000))
    assert split_from_scores(spread) == members.sum()
    # No tie-free cut in range: fall back to the half split, shrunk by the tie rule.
    assert split_from_scores(np.zeros(100)) == 50


def test_at_least_85_percent_of_hull_bonferroni_on_every_case():
    # jax_privacy's epsilon_one_run (hull-Bonferroni; tests/hull_reference.py agrees with
    # it to 3 decimals on these cases) against ours: Gaussian, mixture (a few members far
    # out), Laplace and near-perfect scores at m = 1000 and 20000.
    from experiments.one_run_vs_hull import cases

    for name, (scores, members) in cases().items():
        ours = epsilon_one_run_from_scores(scores, members, delta=1e-5).value
        assert ours >= 0.85 * hull_bonferroni_eps(scores, members, 1e-5), name


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
    assert family[-1] == Guess(500, 500, split_from_scores=True)  # guess everything, split by scores
    assert all(g.r <= 1000 for g in family)
    assert all(2 * g.k_plus <= 1000 for g in family if g.k_minus == 0)  # no hopeless top-only guesses
    assert Guess(256, 256) in GuessSearch(two_sided=True).family(1000)
    weights = GuessSearch(full_share=0.4).weights(family, 1000)
    assert weights[-1] == pytest.approx(0.4) and sum(weights) == pytest.approx(1.0)
