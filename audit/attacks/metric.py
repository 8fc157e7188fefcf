"""Metric attacks that threshold one statistic of the target model's outputs.

- ``loss``: Yeom et al. (2018), "Privacy risk in machine learning: analyzing
  the connection to overfitting":
  members have lower loss; score = -mean over queries of the cross-entropy loss.
- ``confidence``, ``entropy``, ``modified-entropy``: Song & Mittal (2021), "Systematic
  evaluation of privacy risks of machine learning models" (metric-based attacks):
  score = mean over queries of p_y; of -H(p); of -Mentr(p, y) with
  ``Mentr = -(1 - p_y) log p_y - sum_{y' != y} p_y' log(1 - p_y')``.

These need no shadows. The paper's class-dependent thresholds are not applied: a score
is returned and the ROC sweeps one global threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.attacks._common import check_target, log_probs, require_logits, true_class
from audit.attacks.registry import register
from audit.observations import Observations


def _target_log_probs(observations: Observations, target: int, method: str) -> np.ndarray:
    check_target(observations, target, method=method, min_shadows=0)
    return log_probs(require_logits(observations, method)[target])


@register("loss")
@dataclass(frozen=True)
class LossAttack:
    """Yeom et al. (2018): score = -mean_t CE(logits_t, y)."""

    name: str = "loss"

    def score(self, observations: Observations, target: int) -> np.ndarray:
        lp = _target_log_probs(observations, target, self.name)
        return true_class(lp, observations.labels).mean(axis=-1)


@register("confidence")
@dataclass(frozen=True)
class ConfidenceAttack:
    """Song & Mittal (2021), prediction confidence: score = mean_t p_y."""

    name: str = "confidence"

    def score(self, observations: Observations, target: int) -> np.ndarray:
        lp = _target_log_probs(observations, target, self.name)
        return np.exp(true_class(lp, observations.labels)).mean(axis=-1)


@register("entropy")
@dataclass(frozen=True)
class EntropyAttack:
    """Song & Mittal (2021), prediction entropy: score = -mean_t H(p_t)."""

    name: str = "entropy"

    def score(self, observations: Observations, target: int) -> np.ndarray:
        lp = _target_log_probs(observations, target, self.name)
        entropy = -(np.exp(lp) * lp).sum(axis=-1)
        return -entropy.mean(axis=-1)


@register("modified-entropy")
@dataclass(frozen=True)
class ModifiedEntropyAttack:
    """Song & Mittal (2021), modified prediction entropy: score = -mean_t Mentr(p_t, y).

    ``log(1 - p)`` is computed as ``log1p(-p)`` clipped at ``log(1e-300)`` so a
    probability of exactly 1 stays finite.
    """

    name: str = "modified-entropy"

    def score(self, observations: Observations, target: int) -> np.ndarray:
        lp = _target_log_probs(observations, target, self.name)
        p = np.exp(lp)
        log1m = np.log(np.clip(-np.expm1(lp), 1e-300, None))  # log(1 - p), stable
        onehot = np.arange(p.shape[-1]) == observations.labels[:, None, None]
        p_y = true_class(p, observations.labels)
        lp_y = true_class(lp, observations.labels)
        mentr = -(1.0 - p_y) * lp_y - np.where(onehot, 0.0, p * log1m).sum(axis=-1)
        return -mentr.mean(axis=-1)
