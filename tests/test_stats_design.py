"""The one-run design check: each canary included independently with probability 1/2.

Steinke, Nasr & Jagielski 2023 (Theorem 5.2) bound epsilon only for that design; a member
count it could not plausibly produce (or all members, or none) is refused as bad input.
"""

import numpy as np
import pytest
from scipy import stats

from audit.errors import InputError
from audit.stats import epsilon_one_run_from_scores
from audit.stats._validate import DESIGN_TEST_LEVEL, check_one_run_design


def normal_scores(m: int) -> np.ndarray:
    return stats.norm.ppf((np.arange(m) + 0.5) / m)


@pytest.mark.parametrize("n_members", [0, 1000])
def test_all_or_no_members_refused(n_members):
    # Before the check, all members on pure-noise scores gave a "bound" of 3.90.
    members = np.zeros(1000, bool)
    members[:n_members] = True
    with pytest.raises(InputError, match=f"{n_members} of 1000 canaries are members"):
        epsilon_one_run_from_scores(normal_scores(1000), members, delta=1e-5)


def test_implausible_member_count_refused_with_the_p_value():
    members = np.arange(1000) < 700  # 700 of 1000: p ~ 1e-36 under Binomial(1000, 1/2)
    with pytest.raises(InputError) as err:
        epsilon_one_run_from_scores(normal_scores(1000), members, delta=1e-5)
    message = str(err.value)
    assert "700 of 1000" in message and "Binomial(1000, 1/2)" in message and "1e-06" in message
    assert "\n" not in message


@pytest.mark.parametrize("m, n_members", [(1000, 500), (1000, 570), (2, 1), (21, 10), (100_000, 50_500)])
def test_plausible_counts_pass(m, n_members):
    check_one_run_design(n_members, m)


def test_refusal_rate_of_a_correct_design_is_below_the_level():
    # The acceptance region, found independently from the binomial cdf, has probability at
    # least 1 - 1e-6 under the correct design whenever m >= 21 (below that, the always-refused
    # counts 0 and m alone have probability 2^(1-m) > 1e-6).
    for m in (21, 50, 1000, 20_000):
        accepted = []
        for k in range(m + 1):
            try:
                check_one_run_design(k, m)
                accepted.append(k)
            except InputError:
                pass
        lo, hi = min(accepted), max(accepted)
        assert accepted == list(range(lo, hi + 1))  # an interval around m/2
        refused_mass = stats.binom.cdf(lo - 1, m, 0.5) + stats.binom.sf(hi, m, 0.5)
        assert refused_mass < DESIGN_TEST_LEVEL
        # ... and the interval is not wider than the level allows: one more count on each
        # side would have been rejected by the test at that level.
        assert stats.binomtest(lo - 1, m, 0.5).pvalue < DESIGN_TEST_LEVEL
        assert stats.binomtest(hi + 1, m, 0.5).pvalue < DESIGN_TEST_LEVEL
    for m in (1, 2, 10, 20):  # small m: only 0 and m are refused
        with pytest.raises(InputError):
            check_one_run_design(m, m)
        if m > 1:
            check_one_run_design(1, m)


def test_a_subset_chosen_independently_of_membership_still_passes():
    # The pipeline bounds a subset (canaries its shadows include and exclude): chosen without
    # looking at the target's bits, the subset's members are still Binomial(m', 1/2).
    rng = np.random.default_rng(11)
    members = rng.random(5000) < 0.5
    subset = rng.random(5000) < 0.3
    res = epsilon_one_run_from_scores(normal_scores(int(subset.sum())), members[subset], delta=1e-5)
    assert res.value == 0.0


def test_random_designs_pass():
    rng = np.random.default_rng(0)
    for m in (30, 1000, 20_000):
        for _ in range(20):
            check_one_run_design(int((rng.random(m) < 0.5).sum()), m)
