"""The noise a DP-SGD implementation behaves as if it added, from one run's canary scores.

Assume the implementation is DP-SGD with the claimed sampling rate q and step count T and
an unknown noise multiplier sigma'. More noise gives a higher trade-off curve, so a test
that rejects the curve of sigma' also rejects every curve below it. The one-run f-DP test
(:mod:`audit.stats.claim_test`, Mahloujifar, Melis & Chaudhuri 2024) is run against the
DP-SGD curves of a range of sigma'; **sigma_eff** is the smallest noise multiplier found
rejected, so at the stated confidence the implementation behaves as if it added less noise
than sigma_eff, and its epsilon at delta is above the **effective epsilon**, the epsilon of
DP-SGD(sigma_eff, q, T) (computed with dp_accounting's optimistic estimate, a lower bound).

This is a lower bound on epsilon *within the DP-SGD family* (it assumes the mechanism is
DP-SGD with the claimed q and T); it is labelled so and shown beside the assumption-free
(epsilon, delta) bound, which stays.

Validity of the search: every sigma' is tested with one guess family fixed before the run
(the plan for the claimed curve), so each test holds at the stated confidence. The
statement "sigma* < sigma_eff" needs every sigma' >= sigma_eff rejected as well: rejection
grows with sigma' (a higher curve is a stronger hypothesis; checked by a scan in the
tests), and the search reports the upper end of its final bracket, a sigma' it saw
rejected, never an interpolated value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from audit.stats import _validate
from audit.stats.claim_test import claim_plan, family_p_value, guess_outcomes
from audit.stats.guesses import GuessSearch, GuessStrategy
from audit.stats.privacy_curve import dpsgd_curve, dpsgd_epsilon_lower

FAMILY_ASSUMPTION = ("assumes the implementation is DP-SGD with the claimed sampling rate and steps and some noise "
                     "multiplier: a lower bound on epsilon within that family, not an assumption-free bound")
# The range of noise multipliers searched (below SIGMA_MIN dp_accounting's distributions grow
# slow to build, and the epsilon there is in the hundreds anyway: the search stops and
# reports the last sigma it saw rejected) and the search's relative precision.
SIGMA_MIN, SIGMA_MAX = 0.1, 100.0
RELATIVE_TOLERANCE = 0.02
# The search uses a coarser (still pessimistic) privacy-loss discretisation: faster, and a
# lower curve only makes each rejection harder.
SEARCH_DISCRETIZATION = 1e-3


@dataclasses.dataclass(frozen=True)
class EffectiveNoise:
    """The effective noise multiplier and epsilon (scipy-style result).

    Attributes:
      noise_multiplier: sigma_eff; None when no noise level in the searched range was
        rejected (the observations say nothing against any DP-SGD noise level).
      epsilon: the effective epsilon at ``delta`` (0.0 when nothing was rejected).
      claimed_noise_multiplier: the claim's sigma.
      delta, confidence: of the statement.
      assumption: what the number assumes (:data:`FAMILY_ASSUMPTION`).
      details: the search's bracket and the deciding p-value.
    """

    noise_multiplier: float | None
    epsilon: float
    claimed_noise_multiplier: float
    delta: float
    confidence: float
    assumption: str
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _search(rejects, sigma0: float) -> tuple[float | None, float | None, bool]:
    """(sigma_eff, the largest sigma' seen not rejected, whether the floor stopped the search).

    Brackets from the claim outwards (doubling), then bisects on a log scale: a correct
    implementation is searched upwards (cheap curves), a leaky one downwards. sigma_eff is
    None when nothing up to SIGMA_MAX is rejected."""
    if rejects(sigma0):
        hi, lo = sigma0, sigma0 / 2
        while True:
            if lo < SIGMA_MIN:  # never build the (slow, huge-epsilon) curves below the floor
                return hi, None, True
            if not rejects(lo):
                break
            hi, lo = lo, lo / 2
    else:
        lo, hi = sigma0, 2 * sigma0
        while not rejects(hi):
            lo, hi = hi, 2 * hi
            if hi > SIGMA_MAX:  # not even near-perfect privacy is rejected
                return None, lo, False
    while hi / lo > 1 + RELATIVE_TOLERANCE:
        mid = math.sqrt(lo * hi)
        if rejects(mid):
            hi = mid
        else:
            lo = mid
    return hi, lo, False


def _result(rejects, *, noise_multiplier, sample_rate, steps, delta, confidence, p_value) -> EffectiveNoise:
    sigma0 = float(noise_multiplier)
    sigma_eff, not_rejected, floor_reached = _search(rejects, sigma0)
    if sigma_eff is None:
        return EffectiveNoise(None, 0.0, sigma0, delta, confidence, FAMILY_ASSUMPTION,
                              {"rejected": None, "not_rejected": not_rejected, "searched_up_to": SIGMA_MAX})
    epsilon = dpsgd_epsilon_lower(sigma_eff, sample_rate, steps, delta)
    return EffectiveNoise(sigma_eff, max(0.0, epsilon), sigma0, delta, confidence, FAMILY_ASSUMPTION,
                          {"rejected": sigma_eff, "p_value": p_value(sigma_eff), "not_rejected": not_rejected,
                           "floor": SIGMA_MIN if floor_reached else None, "relative_tolerance": RELATIVE_TOLERANCE})


def _cached(decide):
    seen: dict[float, bool] = {}

    def rejects(sigma: float) -> bool:
        if sigma not in seen:
            seen[sigma] = decide(sigma)
        return seen[sigma]

    return rejects


def _search_curve(sigma: float, sample_rate: float, steps: int):
    return dpsgd_curve(sigma, sample_rate, steps, discretization=SEARCH_DISCRETIZATION)


def effective_noise_one_run(
    scores,
    members,
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    confidence: float = 0.95,
    strategy: GuessStrategy | None = None,
) -> EffectiveNoise:
    """sigma_eff and the effective epsilon from one run's ``scores: float[m]`` and ``members:
    bool[m]``, for a claim of DP-SGD(``noise_multiplier``, ``sample_rate``, ``steps``)."""
    scores, members = _validate.check_scores(scores, members)
    _validate.check_one_run_design(int(members.sum()), members.size)
    confidence = _validate.check_confidence(confidence)
    delta = _validate.check_delta(delta)
    strategy = GuessSearch() if strategy is None else strategy
    m, alpha = scores.size, 1.0 - confidence
    claimed = dpsgd_curve(noise_multiplier, sample_rate, steps)
    outcomes = guess_outcomes(scores, members, claim_plan(strategy, m, claimed, alpha))

    def p_value(sigma: float) -> float:
        return family_p_value(outcomes, m, _search_curve(sigma, sample_rate, steps), alpha)[0]

    return _result(_cached(lambda sigma: p_value(sigma) <= alpha), noise_multiplier=noise_multiplier,
                   sample_rate=sample_rate, steps=steps, delta=delta, confidence=confidence, p_value=p_value)


def effective_noise_counts(
    tp: int, fn: int, fp: int, tn: int, *, noise_multiplier: float, sample_rate: float, steps: int, delta: float,
    confidence: float = 0.95,
) -> EffectiveNoise:
    """sigma_eff and the effective epsilon from the confusion counts of a multi-run audit
    (each entry its own independent run; :func:`audit.stats.claim_test.claim_test_counts`).
    Here rejection is exactly monotone in sigma': the rate limits do not depend on it."""
    from audit.stats.claim_test import claim_test_counts
    from audit.stats.counts import check_counts

    tp, fn, fp, tn = check_counts(tp, fn, fp, tn)
    confidence = _validate.check_confidence(confidence)
    delta = _validate.check_delta(delta)
    dpsgd_curve(noise_multiplier, sample_rate, steps)  # the claim's inputs, checked

    def p_value(sigma: float) -> float:
        return claim_test_counts(tp, fn, fp, tn, _search_curve(sigma, sample_rate, steps), confidence=confidence).p_value

    def decide(sigma: float) -> bool:
        return claim_test_counts(tp, fn, fp, tn, _search_curve(sigma, sample_rate, steps), confidence=confidence).rejected

    return _result(_cached(decide), noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps,
                   delta=delta, confidence=confidence, p_value=p_value)
