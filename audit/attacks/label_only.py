"""Label-only attack: Choquette-Choo et al. (2021), "Label-only membership inference
attacks" (data-augmentation / noise robustness attacks).

The queries are perturbed copies of each record (augmentations or noise); a member's
label is robust to them. score = fraction of queries whose argmax equals the label,
plus a tie-breaker ``(0.5 + arctan(mean margin) / pi) / (2 Q)`` in ``(0, 1 / (2 Q))``,
below the fraction's step ``1 / Q``: the fraction decides, the mean logit margin
``z_y - max_{y' != y} z_y'`` orders records with equal fractions.

Strictly label-only access would give only the fraction; the margin is used only to
order ties, so TPR at low FPR is not an artefact of ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.attacks._common import check_target, require_logits, true_class
from audit.attacks.registry import register
from audit.observations import Observations


@register("label-only")
@dataclass(frozen=True)
class LabelOnlyAttack:
    name: str = "label-only"

    def score(self, observations: Observations, target: int) -> np.ndarray:
        check_target(observations, target, method=self.name, min_shadows=0)
        z = require_logits(observations, self.name)[target].astype(np.float64)  # [records, queries, classes]
        labels = observations.labels
        correct = (z.argmax(axis=-1) == labels[:, None]).mean(axis=-1)
        z_y = true_class(z, labels)
        others = np.where(np.arange(z.shape[-1]) == labels[:, None, None], -np.inf, z).max(axis=-1)
        margin = (z_y - others).mean(axis=-1)
        n_queries = z.shape[1]
        return correct + (0.5 + np.arctan(margin) / np.pi) / (2.0 * n_queries)
