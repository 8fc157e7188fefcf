"""Test of a DP-SGD claim's whole privacy curve from one run's canary scores.

A DP-SGD implementation that claims (sigma, q, T) claims the trade-off curve f_claim of
that mechanism (:func:`audit.stats.privacy_curve.dpsgd_curve`), not only one (epsilon,
delta) point. :func:`claim_test_one_run` tests "the mechanism is f_claim-DP with respect
to each canary" with the one-run f-DP test of Mahloujifar, Melis & Chaudhuri 2024
(:mod:`audit.stats.fdp`), which holds for any mechanism satisfying the curve, canaries
interacting or not. A rejection refutes the claim at the stated confidence: it may decide
a verdict.

Guesses follow today's discipline (:mod:`audit.stats.guesses`): a family of guess counts
fixed by m alone (the default :class:`~audit.stats.guesses.GuessSearch`), each member
tested at its Bonferroni share of 1 - confidence; which canaries are guessed comes from
the scores (top r as members, or the label-free split of every canary), never from the
labels. Members that could not reject the claim even with every guess right are dropped
before the run (this depends on m, the curve and the level only), which leaves their
share to the others. The family's p-value is ``min_i p_i / w_i`` (capped at 1), so the
claim is rejected exactly when it is at most 1 - confidence.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from audit.stats import _validate
from audit.stats.fdp import fdp_p_value, fdp_rejects
from audit.stats.guesses import Guess, GuessOutcome, GuessSearch, GuessStrategy, describe, guess_outcomes, plan
from audit.stats.privacy_curve import PrivacyCurve


@dataclasses.dataclass(frozen=True)
class ClaimTestResult:
    """The outcome of a test of a claimed privacy curve (scipy-style: fields, ``to_dict``).

    Attributes:
      rejected: the claim is refuted at ``confidence``.
      p_value: the family's Bonferroni-adjusted p-value (``rejected`` iff <= 1 - confidence).
      confidence: probability that a true claim is not rejected.
      claim: what was tested (the curve's label).
      testable: whether any outcome of this design could reject the claim (every guess
        right for some member of the family); False means the test is blind to the claim.
      details: the deciding guess (k_plus, k_minus, guesses, correct), family size.
    """

    rejected: bool
    p_value: float
    confidence: float
    claim: str
    testable: bool
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _blow_up_inverse(curve: PrivacyCurve):
    return lambda x: curve.tradeoff_lower(1.0 - x)


def claim_plan(strategy: GuessStrategy, m: int, curve: PrivacyCurve, alpha: float) -> tuple[tuple[Guess, float], ...]:
    """The strategy's family for m canaries with each member's level, less the members that
    could not reject ``curve`` even with every guess right (:func:`audit.stats.guesses.plan`).
    Depends on (m, curve, alpha) only."""
    f = _blow_up_inverse(curve)
    return plan(strategy, m, alpha, lambda g, level: fdp_rejects(f, m, g.r, g.r, level))


def family_p_value(outcomes: list[GuessOutcome], m: int, curve: PrivacyCurve, alpha: float) -> tuple[float, GuessOutcome | None]:
    """The Bonferroni-adjusted p-value ``min_i p_i / w_i`` of "f-DP for ``curve``" over the
    outcomes (capped at 1), and the outcome that attains it (None if none rejects at 1)."""
    f = _blow_up_inverse(curve)
    best_p, best = 1.0, None
    for o in outcomes:
        weight = o.level / alpha
        # most members do not reject at the level that would beat the best: skip them cheaply
        if not fdp_rejects(f, m, o.r, o.correct, min(1.0, best_p * weight)):
            continue
        p = min(1.0, fdp_p_value(f, m, o.r, o.correct) / weight)
        if p < best_p:
            best_p, best = p, o
    return best_p, best


def claim_test_one_run(
    scores,
    members,
    curve: PrivacyCurve,
    *,
    confidence: float = 0.95,
    strategy: GuessStrategy | None = None,
) -> ClaimTestResult:
    """Test the claimed curve from one run: ``scores: float[m]`` (higher = more likely a
    member) and ``members: bool[m]`` (each canary included independently with probability
    1/2; an implausible member count is refused as for the one-run bound)."""
    scores, members = _validate.check_scores(scores, members)
    _validate.check_one_run_design(int(members.sum()), members.size)
    confidence = _validate.check_confidence(confidence)
    strategy = GuessSearch() if strategy is None else strategy
    m = scores.size
    alpha = 1.0 - confidence
    plan_ = claim_plan(strategy, m, curve, alpha)
    f = _blow_up_inverse(curve)
    testable = any(fdp_rejects(f, m, g.r, g.r, level) for g, level in plan_)
    best_p, best = family_p_value(guess_outcomes(scores, members, plan_), m, curve, alpha)
    details: dict[str, Any] = {"canaries": m, "members": int(members.sum()), "family_size": len(plan_),
                               "strategy": describe(strategy)}
    if best is not None:
        details.update(k_plus=best.k_plus, k_minus=best.k_minus, guesses=best.r, guesses_made=best.made,
                       correct=best.correct)
    return ClaimTestResult(
        rejected=bool(best_p <= alpha),
        p_value=float(best_p),
        confidence=confidence,
        claim=curve.label,
        testable=bool(testable),
        details=details,
    )


# p-values of the counts test below this are reported as this: Clopper-Pearson limits at
# smaller levels leave the range where scipy's beta quantiles converge.
COUNTS_P_FLOOR = 1e-15


def _counts_reject(fp: int, tn: int, fn: int, tp: int, curve: PrivacyCurve, level: float) -> bool:
    from audit.stats.intervals import upper_limit

    fpr_u = float(upper_limit(fp, fp + tn, level / 2))
    fnr_u = float(upper_limit(fn, tp + fn, level / 2))
    f = curve.tradeoff(np.array([fpr_u, fnr_u]))
    # Under the claim every test has FNR >= f(FPR) (and, the curve being symmetric,
    # FPR >= f(FNR)); with probability >= 1 - level both true rates are below their upper
    # limits, and f is decreasing, so an upper limit below f of the other limit refutes it.
    return bool(fnr_u < f[0] or fpr_u < f[1])


def claim_test_counts(tp: int, fn: int, fp: int, tn: int, curve: PrivacyCurve, *,
                      confidence: float = 0.95) -> ClaimTestResult:
    """Test the claimed curve from the confusion counts of a test fixed in advance, each
    (score, membership) pair from its own independent run of the mechanism (a multi-run
    audit): rejected when the one-sided Clopper-Pearson upper limits on FPR and FNR, each
    at level (1 - confidence) / 2, lie below the curve (Nasr et al. 2023, "Tight auditing of
    differentially private machine learning", the trade-off view of the counts bound).
    Entries that share a training run are not independent runs: use the one-run test."""
    from audit.stats.counts import check_counts

    tp, fn, fp, tn = check_counts(tp, fn, fp, tn)
    confidence = _validate.check_confidence(confidence)
    alpha = 1.0 - confidence
    testable = _counts_reject(0, fp + tn, 0, tp + fn, curve, alpha)  # a perfect test at these sizes
    p = 1.0
    if _counts_reject(fp, tn, fn, tp, curve, COUNTS_P_FLOOR):
        p = COUNTS_P_FLOOR
    elif _counts_reject(fp, tn, fn, tp, curve, 1.0):
        lo, hi = math.log(COUNTS_P_FLOOR), 0.0  # hi rejects
        while hi - lo > math.log1p(1e-3):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if _counts_reject(fp, tn, fn, tp, curve, math.exp(mid)) else (mid, hi)
        p = math.exp(hi)
    return ClaimTestResult(
        rejected=bool(p <= alpha),  # p is a level seen rejecting, so this implies rejection at alpha
        p_value=float(p),
        confidence=confidence,
        claim=curve.label,
        testable=bool(testable),
        details={"tp": tp, "fn": fn, "fp": fp, "tn": tn, "test": "counts (independent runs)"},
    )


def claim_test_scores_multi_run(scores, members, curve: PrivacyCurve, *, confidence: float = 0.95,
                                split=None) -> ClaimTestResult:
    """The counts test of the claimed curve from raw scores, each (score, membership) pair
    from its own independent run: the threshold is chosen on a random part of the records
    (:class:`audit.stats.thresholds.Split`, label-free draw) as the one whose rate limits lie
    furthest below the curve, and the test is run on the rest (:func:`claim_test_counts`).
    Entries that share a training run are not independent runs: use the one-run test."""
    from audit.stats.intervals import upper_limit
    from audit.stats.thresholds import Split, candidate_thresholds, split_parts

    scores, members = _validate.check_scores(scores, members)
    confidence = _validate.check_confidence(confidence)
    split = Split() if split is None else split
    level = (1.0 - confidence) / 2.0
    choose, (s_choose, m_choose), (s_test, m_test) = split_parts(scores, members, split)
    candidates = candidate_thresholds(s_choose)
    pos, neg = s_choose[m_choose], s_choose[~m_choose]
    fnr_u = np.atleast_1d(upper_limit(np.sum(pos[None, :] < candidates[:, None], axis=1), pos.size, level))
    fpr_u = np.atleast_1d(upper_limit(np.sum(neg[None, :] >= candidates[:, None], axis=1), neg.size, level))
    margin = np.maximum(curve.tradeoff(fpr_u) - fnr_u, curve.tradeoff(fnr_u) - fpr_u)
    threshold = float(candidates[int(np.argmax(margin))])
    tp = int(np.sum(s_test[m_test] >= threshold))
    fp = int(np.sum(s_test[~m_test] >= threshold))
    result = claim_test_counts(tp, int(m_test.sum()) - tp, fp, int((~m_test).sum()) - fp, curve, confidence=confidence)
    details = {**result.details, "threshold": threshold, "chosen_on": int(choose.sum()),
               "tested_on": int((~choose).sum()), "requires": "each entry comes from an independent training run"}
    return dataclasses.replace(result, details=details)
