"""Calibrated loss attack: Watson et al. (2022), "On the importance of difficulty
calibration in membership inference attacks" (difficulty-calibrated
loss score).

score(x) = mean over OUT shadows of loss(x) - target loss(x); losses are the mean
cross-entropy over queries. A record with no OUT shadow -> InputError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.attacks._common import check_target, cross_entropy, require_in_out, require_logits
from audit.attacks.registry import register
from audit.observations import Observations


@register("calibrated")
@dataclass(frozen=True)
class CalibratedLossAttack:
    name: str = "calibrated"

    def score(self, observations: Observations, target: int) -> np.ndarray:
        shadows = check_target(observations, target, method=self.name)
        logits = require_logits(observations, self.name)
        keep = require_in_out(observations, shadows, method=self.name, need_in=False, need_out=True)
        loss = cross_entropy(logits, observations.labels).mean(axis=-1)  # [models, records]
        out = ~keep
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_out = np.where(out, loss[shadows], 0.0).sum(0) / out.sum(0)
        return mean_out - loss[target]
