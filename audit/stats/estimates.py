"""Estimates that assume a Gaussian trade-off curve. They never decide a verdict.

* Gaussian DP (Dong, Roth & Su 2019): a mechanism is mu-GDP when its trade-off curve is
  ``f_mu(a) = Phi(Phi^-1(1 - a) - mu)``; one test with rates (FPR, FNR) implies
  ``mu >= Phi^-1(1 - FPR) - Phi^-1(FNR)`` if the curve is Gaussian. mu converts to
  (epsilon, delta) by Corollary 2.13:
  ``delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)``.
* f-DP one-run estimate (Mahloujifar, Melis & Chaudhuri 2024, "Auditing f-differential
  privacy in one run", Algorithm for the "reconstruction with abstention" game): tests
  the hypothesis "the mechanism is mu-GDP" from (m canaries, r guesses, v correct), and
  reports the largest epsilon whose Gaussian mechanism at ``delta`` is rejected.

Each result is labelled ``kind="estimate"`` with the assumption it rests on.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special, stats

from audit.stats import _validate
from audit.stats.fdp import fdp_rejects
from audit.stats.intervals import upper_limit
from audit.stats.result import ESTIMATE, EpsilonResult

GAUSSIAN_ASSUMPTION = "assumes the mechanism's trade-off curve is Gaussian (mu-GDP); an estimate, not a guaranteed bound"
_norm = stats.norm
# The standard normal's cdf, quantile and log-cdf on scalars: the functions stats.norm
# calls (bit-identical, tested), without its per-call argument handling (about 30x the
# time; the one-run estimate makes some 15,000 such calls).
_cdf, _ppf, _logcdf = special.ndtr, special.ndtri, special.log_ndtr


def delta_for_gdp(mu: float, eps: float) -> float:
    """delta(eps) of a mu-GDP mechanism (Dong, Roth & Su 2019, Corollary 2.13)."""
    if mu <= 0:
        return 0.0
    log_a = float(_logcdf(-eps / mu + mu / 2))
    log_b = eps + float(_logcdf(-eps / mu - mu / 2))
    if log_b >= log_a:
        return 0.0
    return float(math.exp(log_a) * -math.expm1(log_b - log_a))


def epsilon_for_gdp(mu: float, delta: float) -> float:
    """Smallest eps with delta(eps) <= delta for a mu-GDP mechanism (0 if mu <= 0)."""
    if mu <= 0 or delta_for_gdp(mu, 0.0) <= delta:
        return 0.0
    if delta <= 0:
        return math.inf
    hi = 1.0
    while delta_for_gdp(mu, hi) > delta:
        hi *= 2
    return float(optimize.brentq(lambda e: delta_for_gdp(mu, e) - delta, 0.0, hi, xtol=1e-12))


def gdp_mu_for_epsilon(eps: float, delta: float) -> float:
    """The mu of the Gaussian mechanism that is exactly (eps, delta)-DP (inverse of the above)."""
    if delta >= 1:
        return math.inf
    hi = 1.0
    while delta_for_gdp(hi, eps) < delta:
        hi *= 2
        if hi > 1e6:
            return math.inf
    return float(optimize.brentq(lambda mu: delta_for_gdp(mu, eps) - delta, 0.0, hi, xtol=1e-12))


def gdp_mu_from_rates(fpr: float, fnr: float) -> float:
    """mu implied by one test on a Gaussian trade-off curve: Phi^-1(1 - FPR) - Phi^-1(FNR)."""
    return float(_norm.isf(fpr) - _norm.ppf(fnr))


def gdp_from_counts(tp: int, fn: int, fp: int, tn: int, *, delta: float, confidence: float = 0.95) -> EpsilonResult:
    """Gaussian-DP estimate: mu from Clopper-Pearson upper limits on FPR and FNR, then eps at delta."""
    tp, fn, fp, tn = (_validate.check_count(n, v) for n, v in (("tp", tp), ("fn", fn), ("fp", fp), ("tn", tn)))
    delta = _validate.check_delta(delta)
    confidence = _validate.check_confidence(confidence)
    if tp + fn == 0 or fp + tn == 0:
        raise _validate.InputError("counts need at least one member and one non-member")
    level = (1 - confidence) / 2
    fpr_u = upper_limit(fp, fp + tn, level)
    fnr_u = upper_limit(fn, tp + fn, level)
    # Both directions of the test, as for the counts bound.
    mu = max(0.0, gdp_mu_from_rates(fpr_u, fnr_u), gdp_mu_from_rates(fnr_u, fpr_u))
    return EpsilonResult(
        value=epsilon_for_gdp(mu, delta),
        kind=ESTIMATE,
        method="gdp",
        confidence=confidence,
        delta=delta,
        inputs={"tp": tp, "fn": fn, "fp": fp, "tn": tn},
        details={"mu": mu, "fpr_upper": fpr_u, "fnr_upper": fnr_u},
        assumption=GAUSSIAN_ASSUMPTION,
    )


def _fdp_rejects(mu: float, m: int, r: int, v: int, significance: float) -> bool:
    """Whether v correct out of r guesses among m canaries rejects "mu-GDP" at ``significance``
    (:func:`audit.stats.fdp.fdp_rejects` with the Gaussian curve: f(1 - x) = Phi(Phi^-1(x) - mu))."""

    def blow_up_inverse(x: float) -> float:
        return float(_cdf(_ppf(x) - mu)) if x > 0 else 0.0

    return fdp_rejects(blow_up_inverse, m, r, v, significance)


def fdp_one_run_estimate(m: int, r: int, v: int, *, delta: float, confidence: float = 0.95) -> EpsilonResult:
    """f-DP one-run estimate of epsilon (Mahloujifar et al. 2024), labelled as an estimate."""
    from audit.stats.one_run import _check_guess_counts

    m, r, v = _check_guess_counts(m, r, v)
    delta = _validate.check_delta(delta)
    confidence = _validate.check_confidence(confidence)
    significance = 1 - confidence
    if delta == 0:
        raise _validate.InputError("delta=0: the Gaussian-curve estimate needs delta > 0")

    def rejects(eps: float) -> bool:
        return _fdp_rejects(gdp_mu_for_epsilon(eps, delta), m, r, v, significance)

    value = 0.0
    if rejects(0.0):
        lo, hi = 0.0, 1.0
        while rejects(hi) and hi < 200:
            lo, hi = hi, 2 * hi
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if rejects(mid) else (lo, mid)
        value = lo
    return EpsilonResult(
        value=value,
        kind=ESTIMATE,
        method="fdp-one-run",
        confidence=confidence,
        delta=delta,
        inputs={"canaries": m, "guesses": r, "correct": v},
        details={"mu": gdp_mu_for_epsilon(value, delta) if value > 0 else 0.0},
        assumption=GAUSSIAN_ASSUMPTION,
    )
