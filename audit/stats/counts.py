"""Epsilon lower bounds from the confusion counts at one decision threshold.

Jagielski, Ullman & Oprea 2020 ("Auditing differentially private machine learning"),
Nasr et al. 2021 ("Adversary instantiation"): an (epsilon, delta)-DP mechanism obeys
``FPR + e^eps * FNR >= 1 - delta`` and ``FNR + e^eps * FPR >= 1 - delta`` for every test,
so with one-sided upper confidence limits ``FPR_u``, ``FNR_u``, each at level
``(1 - confidence) / 2``,

    eps_lb = max(0, log((1 - delta - FPR_u) / FNR_u), log((1 - delta - FNR_u) / FPR_u))

holds with probability at least ``confidence`` when each (score, membership) pair comes
from an independent run of the mechanism (a multi-run audit).
"""

from __future__ import annotations

import math

from audit.stats import _validate
from audit.stats.intervals import IntervalMethod, upper_limit
from audit.stats.result import ESTIMATE, GUARANTEED, EpsilonResult

_JEFFREYS_ASSUMPTION = (
    "Jeffreys intervals are Bayesian (approximate coverage), so this is an estimate, not a guaranteed bound"
)


def epsilon_from_rate_limits(fpr_upper: float, fnr_upper: float, delta: float) -> float:
    """The epsilon implied by upper limits on FPR and FNR (both directions of the test)."""
    best = 0.0
    for a, b in ((fpr_upper, fnr_upper), (fnr_upper, fpr_upper)):
        numerator = 1.0 - delta - a
        if numerator > 0 and b > 0:
            best = max(best, math.log(numerator) - math.log(b))
    return best


MAX_COUNT = 2**53


def check_counts(tp, fn, fp, tn) -> tuple[int, int, int, int]:
    """Non-negative integer counts up to 2**53, with at least one member and one non-member."""
    tp, fn, fp, tn = (_validate.check_count(n, v) for n, v in (("tp", tp), ("fn", fn), ("fp", fp), ("tn", tn)))
    for name, n in (("tp", tp), ("fn", fn), ("fp", fp), ("tn", tn)):
        if n > MAX_COUNT:  # beta quantiles work in floats: counts must be exact there
            raise _validate.InputError(f"{name}={n}: expected at most 2**53 (counts are computed in float64)")
    if tp + fn == 0:
        raise _validate.InputError("tp + fn = 0: expected at least one member")
    if fp + tn == 0:
        raise _validate.InputError("fp + tn = 0: expected at least one non-member")
    return tp, fn, fp, tn


def epsilon_from_counts(
    tp: int,
    fn: int,
    fp: int,
    tn: int,
    *,
    delta: float,
    confidence: float = 0.95,
    method: IntervalMethod = "clopper-pearson",
) -> EpsilonResult:
    """Epsilon lower bound from TP, FN, FP, TN at one threshold fixed before the data.

    Args:
      tp, fn: members classified as member / non-member.
      fp, tn: non-members classified as member / non-member.
      delta: the delta of the claim under test, in [0, 1).
      confidence: probability that the bound holds, in (0, 1).
      method: ``"clopper-pearson"`` (exact; a guaranteed bound) or ``"jeffreys"``
        (Bayesian interval; reported as an estimate).
    """
    tp, fn, fp, tn = check_counts(tp, fn, fp, tn)
    delta = _validate.check_delta(delta)
    confidence = _validate.check_confidence(confidence)
    if method not in ("clopper-pearson", "jeffreys"):
        raise _validate.InputError(f"method={method!r}: expected 'clopper-pearson' or 'jeffreys'")
    level = (1.0 - confidence) / 2.0
    fpr_u = upper_limit(fp, fp + tn, level, method)
    fnr_u = upper_limit(fn, tp + fn, level, method)
    guaranteed = method == "clopper-pearson"
    return EpsilonResult(
        value=epsilon_from_rate_limits(fpr_u, fnr_u, delta),
        kind=GUARANTEED if guaranteed else ESTIMATE,
        method=method,
        confidence=confidence,
        delta=delta,
        inputs={"tp": tp, "fn": fn, "fp": fp, "tn": tn},
        details={"fpr_upper": fpr_u, "fnr_upper": fnr_u, "level_per_rate": level},
        assumption=None if guaranteed else _JEFFREYS_ASSUMPTION,
    )
