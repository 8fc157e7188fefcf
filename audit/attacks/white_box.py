"""White-box attacks on precomputed statistics ``stats: float[models, records, stats]``.

- ``gradient-norm``: members have smaller per-example gradient norms after training
  (Nasr et al. 2019, "Comprehensive privacy analysis of deep learning", whose
  white-box attack uses the gradient norm among its features). score = -stats[target, :, column].
- ``canary-statistic``: pass-through of a precomputed gradient-canary statistic whose
  larger values mean IN, e.g. the dot product of the model update with a Dirac canary
  gradient (Nasr et al. 2023, "Tight auditing of differentially private machine
  learning", gradient canaries). score = stats[target, :, column].

Neither uses shadows. ``column`` is an index into the stats axis or a name listed in
``metadata["stat_names"]`` (e.g. ``"all_iterates"``, ``"likelihood_ratio"``,
``"last_iterate"`` from :class:`canaries.gradient.GradientCanaryObservations`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.attacks._common import check_target, require_stats
from audit.attacks.registry import register
from audit.observations import Observations


@register("gradient-norm")
@dataclass(frozen=True)
class GradientNormAttack:
    column: int | str = 0
    name: str = "gradient-norm"

    def score(self, observations: Observations, target: int) -> np.ndarray:
        check_target(observations, target, method=self.name, min_shadows=0)
        return -require_stats(observations, self.name, self.column)[target]


@register("canary-statistic")
@dataclass(frozen=True)
class CanaryStatisticAttack:
    column: int | str = 0
    name: str = "canary-statistic"

    def score(self, observations: Observations, target: int) -> np.ndarray:
        check_target(observations, target, method=self.name, min_shadows=0)
        return require_stats(observations, self.name, self.column)[target]
