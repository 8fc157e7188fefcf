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

:meth:`RMIA.score_targets` scores many targets at once: ``p(x|theta)`` once for all models,
each target's mean over its OUT shadows summed in model order (the numbers of
:meth:`RMIA.score`, target by target, exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from audit.attacks._common import (
    by_model_blocks,
    check_targets,
    records_seen,
    require_in_out_targets,
    require_logits,
    shadow_masks,
    target_blocks,
    true_class_log_probs,
)
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
        return self.log_likelihood_ratios(observations, [target])[0]

    def log_likelihood_ratios(self, observations: Observations, targets, records=None) -> np.ndarray:
        """log LR(x) of each of ``targets``, float64[targets, records]; ``records`` as in
        :meth:`score_targets` (the OUT check covers the audited records each target sees)."""
        targets = check_targets(observations, targets, method=self.name)
        logits = require_logits(observations, self.name)
        seen = records_seen(observations, targets, records, method=self.name)
        require_in_out_targets(observations, targets, seen, method=self.name, need_in=False, need_out=True)
        lp_y = by_model_blocks(true_class_log_probs, logits, observations.labels)  # [models, records, queries]
        log_p = logsumexp(lp_y, axis=-1) - np.log(lp_y.shape[-1])  # log mean_t p, no underflow
        p = np.exp(log_p)
        out = ~observations.keep
        mean_out = np.empty((targets.size, observations.n_records))
        for block in target_blocks(targets.size, out.size):
            shadows_out = shadow_masks(out, targets[block])  # [targets, models, records]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_out[block] = np.where(shadows_out, p[None], 0.0).sum(1) / shadows_out.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pr_x = ((1.0 + self.a) * mean_out + (1.0 - self.a)) / 2.0
            return log_p[targets] - np.log(pr_x)

    def score(self, observations: Observations, target: int) -> np.ndarray:
        return self.score_targets(observations, [target])[0]

    def score_targets(self, observations: Observations, targets, records=None) -> np.ndarray:
        """float64[targets, records]: :meth:`score` of each of ``targets``. ``records:
        bool[targets, records]`` (default: all) are the records each target's attack sees,
        its population among them; the other scores are NaN."""
        targets = check_targets(observations, targets, method=self.name)
        seen = records_seen(observations, targets, records, method=self.name)
        population = observations.population_mask[None, :] & seen
        n_z = population.sum(axis=1)
        if not n_z.all():
            raise InputError(
                f"{self.name}: needs population records (OUT for every model, or a population "
                "mask in the observations); found none"
            )
        log_lr = self.log_likelihood_ratios(observations, targets, seen)
        # LR(x)/LR(z) > gamma  <=>  log LR(z) < log LR(x) - log gamma
        count = np.empty(log_lr.shape, dtype=np.int64)
        for row in range(targets.size):  # one sorted population per target
            count[row] = np.searchsorted(np.sort(log_lr[row][population[row]]), log_lr[row] - np.log(self.gamma),
                                         side="left")
        fraction = count / n_z[:, None]
        tie_break = (0.5 + np.arctan(log_lr) / np.pi) / (2.0 * n_z[:, None])
        return np.where(seen, fraction + tie_break, np.nan)
