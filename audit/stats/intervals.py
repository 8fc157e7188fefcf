"""Binomial confidence limits, delegated to statsmodels.

``proportion_confint`` gives central two-sided intervals; the one-sided limit at level
``a`` is the matching end of the two-sided interval at ``alpha = 2a``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from statsmodels.stats.proportion import proportion_confint

IntervalMethod = Literal["clopper-pearson", "jeffreys"]

_STATSMODELS_NAME = {"clopper-pearson": "beta", "jeffreys": "jeffreys"}


def upper_limit(count, nobs, level: float, method: IntervalMethod = "clopper-pearson"):
    """One-sided upper confidence limit on a binomial proportion.

    ``P[p > upper] <= level`` for Clopper-Pearson (exact); Jeffreys is a Bayesian
    interval with approximately that coverage. Returns 1 where ``count == nobs``.
    """
    count = np.asarray(count)
    _, upper = proportion_confint(count, nobs, alpha=2 * level, method=_STATSMODELS_NAME[method])
    upper = np.where(count >= nobs, 1.0, upper)
    return upper if upper.ndim else float(upper)


def two_sided(count, nobs, confidence: float, method: IntervalMethod = "clopper-pearson"):
    """Central two-sided interval ``(low, high)`` at ``confidence``."""
    low, high = proportion_confint(count, nobs, alpha=1 - confidence, method=_STATSMODELS_NAME[method])
    return low, high
