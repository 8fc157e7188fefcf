"""The noise a DP-SGD implementation adds, measured on coordinates no record touches.

A white-box audit reads each Dirac gradient canary's coordinate of the privatised summed
gradient at every step (:mod:`canaries.gradient`). A canary that was never inserted (a
one-run non-member, or the canary of a multi-run "world 0" model) contributes nothing
there, so under DP-SGD with clipping norm C and noise multiplier sigma' its readings are
pure noise,

    x_{i,t} = sigma' C Z_{i,t},   Z_{i,t} i.i.d. N(0, 1) over canaries i and steps t.

Test of "the noise multiplier is at least sigma'" (one-sided; Cochran's theorem):

    Q = sum_i sum_t (x_{i,t} - mean_t x_{i,t})^2 / C^2  ~  sigma'^2 chi^2(n (T - 1)),

n canaries, T steps. The observations reject sigma' when
``chi2.cdf(Q / sigma'^2, n (T - 1)) <= alpha``; the rejected levels are exactly
``[sigma_upper, inf)`` with ``sigma_upper = sqrt(Q / chi2.ppf(alpha, n (T - 1)))``, so at
confidence 1 - alpha the implementation adds less noise than sigma_upper on these
coordinates. Centring each canary's readings over its steps makes Q blind to a noise
component that is constant over the steps: noise reused at every step (the zoo's
``reused_noise``) leaves almost nothing in Q and shows as a tiny noise level, as it should,
since differences between its steps are then noise-free.

What it assumes: that the readings are the DP-SGD noise on the stated scale (clipping norm
C, no division by the batch size). It is a statement *within* the DP-SGD family (a
mechanism that clips to C/2 and adds noise sigma C/2 is as private as claimed and still
fails it), so it is reported as such and never decides a verdict on its own: it is one of
the two tests behind the effective noise multiplier (:mod:`audit.stats.effective_noise`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np
from scipy import stats

from audit.errors import InputError
from audit.stats import _validate


@dataclasses.dataclass(frozen=True)
class NoiseLevel:
    """Result of :func:`noise_level_test` (scipy-style).

    Attributes:
      upper: sigma_upper; every noise multiplier at or above it is rejected at ``confidence``.
      estimate: ``sqrt(Q / df)``, the unbiased variance estimate's root (not a bound).
      statistic: Q, the centred sum of squares in units of C^2.
      df: n (T - 1).
      canaries, steps: n and T.
      confidence: of ``upper``.
    """

    upper: float
    estimate: float
    statistic: float
    df: int
    canaries: int
    steps: int
    confidence: float

    def p_value(self, noise_multiplier: float) -> float:
        """p-value of "the noise multiplier is at least ``noise_multiplier``"."""
        sigma = float(noise_multiplier)
        if not sigma > 0.0 or not math.isfinite(sigma):
            raise InputError(f"noise_multiplier={noise_multiplier!r}: expected a finite number > 0")
        return float(stats.chi2.cdf(self.statistic / sigma**2, self.df))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def noise_level_test(readings, *, max_grad_norm: float, confidence: float = 0.95) -> NoiseLevel:
    """Upper confidence limit of the noise multiplier from never-inserted canaries' readings.

    Args:
      readings: float[steps, canaries], the readings of canaries that were never inserted,
        on the unnormalised scale (summed clipped gradients plus noise, before any division
        by the batch size); at least 2 steps and 1 canary.
      max_grad_norm: C > 0, the clipping norm the noise is claimed to be a multiple of.
      confidence: 1 - alpha.
    """
    x = np.asarray(readings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise InputError(f"readings with shape {x.shape}: expected float[steps >= 2, canaries >= 1] "
                         "of canaries never inserted")
    if not np.isfinite(x).all():
        raise InputError("readings contain NaN or infinity: expected finite numbers")
    if isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, numbers.Real) \
            or not 0.0 < float(max_grad_norm) < math.inf:
        raise InputError(f"max_grad_norm={max_grad_norm!r}: expected a finite number > 0")
    c = float(max_grad_norm)
    confidence = _validate.check_confidence(confidence)
    steps, n = x.shape
    centred = (x - x.mean(axis=0, keepdims=True)) / c
    q = float(np.einsum("ij,ij->", centred, centred))
    df = n * (steps - 1)
    upper = math.sqrt(q / float(stats.chi2.ppf(1.0 - confidence, df)))
    return NoiseLevel(upper=upper, estimate=math.sqrt(q / df), statistic=q, df=df, canaries=n, steps=steps,
                      confidence=confidence)
