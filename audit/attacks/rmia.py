"""Robust membership inference (RMIA): Zarifzadeh et al. (2024), "Low-cost high-power
membership inference attacks" (the pairwise likelihood-ratio test against population
records, and its offline variant with the linear approximation parameter ``a``).

For a record ``x`` with probability of its label ``p(x|theta)`` (softmax, mean over
queries), offline RMIA approximates ``Pr(x) = ((1 + a) * mean_OUT p(x|theta') + (1 - a)) / 2``
over the shadows ``theta'`` that excluded ``x``, and ``LR(x) = p(x|theta_target) / Pr(x)``.
The score is the fraction of population records ``z`` (OUT for every model) with
``LR(x) / LR(z) > gamma``.

Ties: that fraction takes at most ``|Z| + 1`` values, so many records share a score
(with a strong attack, many at 1.0) and TPR at a low FPR becomes meaningless. Ties are broken lexicographically by ``log LR(x)``: the score is
``fraction + (0.5 + arctan(log LR(x)) / pi) / (2 |Z|)``; the added term lies in
``(0, 1 / (2 |Z|))``, below the fraction's step ``1 / |Z|``, so the order by fraction
is kept and records with equal fractions are ordered by their likelihood ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from audit.attacks._common import check_target, log_probs, require_in_out, require_logits, true_class
from audit.attacks.registry import register
from audit.errors import InputError
from audit.observations import Observations


@register("rmia")
@dataclass(frozen=True)
class RMIA:
    """Offline RMIA. ``a``: offline correction of Pr(x); ``gamma``: LR threshold."""

    a: float = 0.3
    gamma: float = 2.0
    name: str = "rmia"

    def __post_init__(self) -> None:
        if not 0.0 <= self.a <= 1.0:
            raise InputError(f"rmia: a must be in [0, 1], got {self.a}")
        if not self.gamma > 0.0:
            raise InputError(f"rmia: gamma must be positive, got {self.gamma}")

    def log_likelihood_ratio(self, observations: Observations, target: int) -> np.ndarray:
        """log LR(x) for every record, float64[records] (NaN if x has no OUT shadow)."""
        shadows = check_target(observations, target, method=self.name)
        logits = require_logits(observations, self.name)
        keep = require_in_out(observations, shadows, method=self.name, need_in=False, need_out=True)
        lp_y = true_class(log_probs(logits), observations.labels)  # [models, records, queries]
        log_p = logsumexp(lp_y, axis=-1) - np.log(lp_y.shape[-1])  # log mean_t p, no underflow
        out = ~keep
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_out = np.where(out, np.exp(log_p[shadows]), 0.0).sum(0) / out.sum(0)
            pr_x = ((1.0 + self.a) * mean_out + (1.0 - self.a)) / 2.0
            return log_p[target] - np.log(pr_x)

    def score(self, observations: Observations, target: int) -> np.ndarray:
        population = observations.population_mask
        n_z = int(population.sum())
        if n_z == 0:
            raise InputError(
                f"{self.name}: needs population records (OUT for every model, or a population "
                "mask in the observations); found none"
            )
        log_lr = self.log_likelihood_ratio(observations, target)
        log_lr_z = np.sort(log_lr[population])
        # LR(x)/LR(z) > gamma  <=>  log LR(z) < log LR(x) - log gamma
        count = np.searchsorted(log_lr_z, log_lr - np.log(self.gamma), side="left")
        fraction = count / n_z
        tie_break = (0.5 + np.arctan(log_lr) / np.pi) / (2.0 * n_z)
        return fraction + tie_break
