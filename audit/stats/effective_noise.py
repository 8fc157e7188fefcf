"""The noise a DP-SGD implementation behaves as if it added, from one run's canary observations.

Assume the implementation is DP-SGD with the claimed sampling rate q, step count T and
clipping norm C and an unknown noise multiplier sigma'. Two tests of each sigma' look at
two different things, and **sigma_eff** is the smallest sigma' either rejects:

* the *signal* test: the one-run f-DP test (:mod:`audit.stats.claim_test`, Mahloujifar,
  Melis & Chaudhuri 2024) of the canary scores against the DP-SGD curve of sigma'. More
  noise gives a higher trade-off curve, so a test that rejects the curve of sigma' also
  rejects every curve below it. It sees what inflates a member's contribution (missing
  clipping, a sampling rate above the accountant's) as well as missing noise.
* the *noise* test (white-box readings only): the noise measured on the coordinates of the
  canaries never inserted (:func:`audit.stats.noise_level.noise_level_test`); it rejects
  exactly the levels ``[sigma_upper, inf)``. It sees missing noise, noise reused over
  steps and noise on the wrong scale, with the precision of n (T - 1) readings.

When both run, each is at half the level (Bonferroni), so at the stated confidence the
implementation behaves as if it added less noise than sigma_eff, and its epsilon at delta
is above the **effective epsilon**, the epsilon of DP-SGD(sigma_eff, q, T) (computed with
dp_accounting's optimistic estimate, a lower bound).

This is a lower bound on epsilon *within the DP-SGD family* (it assumes the mechanism is
DP-SGD with the claimed q, T and C); it is labelled so, never decides a verdict, and is
shown beside the assumption-free (epsilon, delta) bound, which stays.

Validity of the search: every sigma' is tested with one guess family fixed before the run
(the plan for the claimed curve), so each test holds at its level. The statement
"sigma* < sigma_eff" needs every sigma' >= sigma_eff rejected as well: the noise test's
rejections are exactly an upper range, the signal test's grow with sigma' (a higher curve
is a stronger hypothesis; checked by a scan in the tests), and the search reports the
upper end of its final bracket, a sigma' it saw rejected, never an interpolated value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from audit.errors import InputError
from audit.stats import _validate
from audit.stats.claim_test import claim_plan, family_p_value, guess_outcomes
from audit.stats.guesses import GuessSearch, GuessStrategy
from audit.stats.noise_level import NoiseLevel, noise_level_test
from audit.stats.privacy_curve import dpsgd_curve, dpsgd_epsilon_lower

FAMILY_ASSUMPTION = ("assumes the implementation is DP-SGD with the claimed sampling rate, steps and clipping norm "
                     "and some noise multiplier: a lower bound on epsilon within that family, not an "
                     "assumption-free bound")
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
      details: which test decided (``decided_by``: "signal" or "noise"), the deciding
        p-value at sigma_eff, the signal test's p-value there, the search's bracket and
        the noise test's result (``noise_test``, None without readings).
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


def _result(rejects, *, noise_multiplier, sample_rate, steps, delta, confidence, p_value,
            noise: NoiseLevel | None = None) -> EffectiveNoise:
    """Search the signal test ``rejects`` (with ``p_value``) and, when the noise test ran,
    take the smaller of the two rejected ranges' starts."""
    sigma0 = float(noise_multiplier)
    details: dict[str, Any] = {"noise_test": None if noise is None else noise.to_dict()}
    if noise is None or noise.upper > SIGMA_MAX:  # no noise test, or one that rejects nothing in range
        sigma_eff, not_rejected, floor_reached = _search(rejects, sigma0)
        decided_by = "signal"
    elif noise.upper <= SIGMA_MIN:  # rejected down to the floor: no signal test could report less
        sigma_eff, not_rejected, floor_reached = SIGMA_MIN, None, True
        decided_by = "noise"
    elif rejects(noise.upper):  # the signal test reaches further down: search below
        sigma_eff, not_rejected, floor_reached = _search(rejects, noise.upper)
        decided_by = "signal"
    else:  # the signal test rejects nothing at or below sigma_upper (its rejections form an upper range)
        sigma_eff, not_rejected, floor_reached = noise.upper, None, False
        decided_by = "noise"
    if sigma_eff is None:
        return EffectiveNoise(None, 0.0, sigma0, delta, confidence, FAMILY_ASSUMPTION,
                              details | {"decided_by": None, "rejected": None, "not_rejected": not_rejected,
                                         "searched_up_to": SIGMA_MAX})
    epsilon = dpsgd_epsilon_lower(sigma_eff, sample_rate, steps, delta)
    # The signal test's p-value where it was evaluated (not built anew at the floor: slow curves).
    signal_p = None if decided_by == "noise" and floor_reached else p_value(sigma_eff)
    deciding_p = signal_p if decided_by == "signal" else noise.p_value(sigma_eff)
    return EffectiveNoise(sigma_eff, max(0.0, epsilon), sigma0, delta, confidence, FAMILY_ASSUMPTION,
                          details | {"decided_by": decided_by, "rejected": sigma_eff, "p_value": deciding_p,
                                     "signal_p_value": signal_p, "not_rejected": not_rejected,
                                     "floor": SIGMA_MIN if floor_reached else None,
                                     "relative_tolerance": RELATIVE_TOLERANCE})


def _noise(readings, members_absent, max_grad_norm, alpha: float) -> NoiseLevel | None:
    """The noise test on the never-inserted canaries' readings at level ``alpha``, or None
    without readings."""
    if readings is None:
        return None
    x = np.asarray(readings, dtype=np.float64)
    absent = np.asarray(members_absent, dtype=bool)
    if x.ndim != 2 or x.shape[1] != absent.size:
        raise InputError(f"readings with shape {x.shape}: expected float[steps, {absent.size}], one column per canary")
    return noise_level_test(x[:, absent], max_grad_norm=max_grad_norm, confidence=1.0 - alpha)


def _cached(function):
    seen: dict[float, float] = {}

    def cached(sigma: float) -> float:
        if sigma not in seen:
            seen[sigma] = function(sigma)
        return seen[sigma]

    return cached


def _search_curve(sigma: float, sample_rate: float, steps: int):
    return dpsgd_curve(sigma, sample_rate, steps, discretization=SEARCH_DISCRETIZATION)


def _rejects(sigma: float, p_value, alpha: float, noise: NoiseLevel | None) -> bool:
    """Whether the noise test (when it ran) or the signal test at ``alpha`` rejects ``sigma``."""
    return bool((noise is not None and noise.upper <= sigma) or p_value(float(sigma)) <= alpha)


def _levels(confidence: float, readings) -> tuple[float, float]:
    """(alpha of the signal test, alpha of the noise test): the level, halved when both run."""
    alpha = 1.0 - confidence
    return (alpha, 0.0) if readings is None else (alpha / 2, alpha / 2)


def _one_run_tests(scores, members, noise_multiplier, sample_rate, steps, confidence, strategy, readings,
                   max_grad_norm):
    """(signal p-value as a function of sigma', its level, the noise test or None) of one run."""
    scores, members = _validate.check_scores(scores, members)
    _validate.check_one_run_design(int(members.sum()), members.size)
    confidence = _validate.check_confidence(confidence)
    strategy = GuessSearch() if strategy is None else strategy
    alpha, noise_alpha = _levels(confidence, readings)
    noise = _noise(readings, ~members, max_grad_norm, noise_alpha)
    m = scores.size
    claimed = dpsgd_curve(noise_multiplier, sample_rate, steps)
    outcomes = guess_outcomes(scores, members, claim_plan(strategy, m, claimed, alpha))
    p_value = _cached(lambda sigma: family_p_value(outcomes, m, _search_curve(sigma, sample_rate, steps), alpha)[0])
    return p_value, alpha, noise


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
    readings=None,
    max_grad_norm: float = 1.0,
) -> EffectiveNoise:
    """sigma_eff and the effective epsilon from one run's ``scores: float[m]`` and ``members:
    bool[m]``, for a claim of DP-SGD(``noise_multiplier``, ``sample_rate``, ``steps``).

    ``readings: float[steps, m]``, the canaries' per-step readings on the unnormalised scale
    (white-box audits), adds the noise test on the non-members' columns, with clipping norm
    ``max_grad_norm``; the two tests then share the level."""
    delta = _validate.check_delta(delta)
    p_value, alpha, noise = _one_run_tests(scores, members, noise_multiplier, sample_rate, steps, confidence,
                                           strategy, readings, max_grad_norm)
    return _result(lambda sigma: p_value(sigma) <= alpha, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                   steps=steps, delta=delta, confidence=float(confidence), p_value=p_value, noise=noise)


def rejects_noise_level(
    sigma: float,
    scores,
    members,
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    confidence: float = 0.95,
    strategy: GuessSearch | None = None,
    readings=None,
    max_grad_norm: float = 1.0,
) -> bool:
    """Whether the tests of :func:`effective_noise_one_run` (same arguments) reject the noise
    level ``sigma``, i.e. whether that run's sigma_eff is at or below ``sigma`` (up to the
    search's floor and tolerance, which only lower sigma_eff's claim). Without the search,
    so a soundness experiment can count, over many runs of true noise ``sigma``, how often
    the statement "less noise than sigma_eff" is false."""
    p_value, alpha, noise = _one_run_tests(scores, members, noise_multiplier, sample_rate, steps, confidence,
                                           strategy, readings, max_grad_norm)
    return _rejects(sigma, p_value, alpha, noise)


def _counts_tests(tp, fn, fp, tn, noise_multiplier, sample_rate, steps, confidence, readings, max_grad_norm):
    """(signal p-value as a function of sigma', its level, the noise test or None) of counts."""
    from audit.stats.claim_test import claim_test_counts
    from audit.stats.counts import check_counts

    tp, fn, fp, tn = check_counts(tp, fn, fp, tn)
    confidence = _validate.check_confidence(confidence)
    dpsgd_curve(noise_multiplier, sample_rate, steps)  # the claim's inputs, checked
    alpha, noise_alpha = _levels(confidence, readings)
    noise = None if readings is None else _noise(readings, np.ones(np.shape(readings)[-1], bool), max_grad_norm,
                                                 noise_alpha)
    p_value = _cached(lambda sigma: claim_test_counts(tp, fn, fp, tn, _search_curve(sigma, sample_rate, steps),
                                                      confidence=1.0 - alpha).p_value)
    return p_value, alpha, noise


def effective_noise_counts(
    tp: int, fn: int, fp: int, tn: int, *, noise_multiplier: float, sample_rate: float, steps: int, delta: float,
    confidence: float = 0.95, readings=None, max_grad_norm: float = 1.0,
) -> EffectiveNoise:
    """sigma_eff and the effective epsilon from the confusion counts of a multi-run audit
    (each entry its own independent run; :func:`audit.stats.claim_test.claim_test_counts`).
    Here the signal test's rejection is exactly monotone in sigma': the rate limits do not
    depend on it.

    ``readings: float[steps, runs]``, the canary coordinate's per-step readings in runs
    without the canary (white-box), adds the noise test; the two tests then share the level."""
    delta = _validate.check_delta(delta)
    p_value, alpha, noise = _counts_tests(tp, fn, fp, tn, noise_multiplier, sample_rate, steps, confidence, readings,
                                          max_grad_norm)
    return _result(lambda sigma: p_value(sigma) <= alpha, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                   steps=steps, delta=delta, confidence=float(confidence), p_value=p_value, noise=noise)


def counts_reject_noise_level(
    sigma: float, tp: int, fn: int, fp: int, tn: int, *, noise_multiplier: float, sample_rate: float, steps: int,
    confidence: float = 0.95, readings=None, max_grad_norm: float = 1.0,
) -> bool:
    """Whether the tests of :func:`effective_noise_counts` (same arguments) reject the noise
    level ``sigma`` (its sigma_eff is then at or below it): :func:`rejects_noise_level` for
    multi-run counts."""
    p_value, alpha, noise = _counts_tests(tp, fn, fp, tn, noise_multiplier, sample_rate, steps, confidence, readings,
                                          max_grad_norm)
    return _rejects(sigma, p_value, alpha, noise)
