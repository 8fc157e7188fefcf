"""Likelihood Ratio Attack (LiRA): Carlini et al. (2022), "Membership inference attacks
from first principles" (online and offline LiRA, fixed variance); as in tensorflow/privacy
``research/mi_lira_2021`` (``score.py``, ``plot.py``).

Per query ``t``, the logit-scaled confidence ``phi_t`` (:func:`audit.attacks._common.lira_phi`).
For each record and query, from the shadows (all models but the target):

- ``mu_in`` / ``mu_out``: ``np.median`` of phi over all shadows that include / exclude
  the record (no truncation to a common count);
- ``sigma_in`` / ``sigma_out``: their standard deviation (ddof 0), or, with a fixed
  variance, one std of all IN (OUT) phi values pooled over records and queries.

Online:  score = mean_t [log N(phi_t; mu_in, sigma_in + 1e-30) - log N(phi_t; mu_out, sigma_out + 1e-30)].
Offline: score = mean_t log Phi((phi_t - mu_out) / (sigma_out + 1e-30))  (one-sided test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from audit.attacks._common import check_target, lira_phi, require_in_out, require_logits
from audit.attacks.registry import register
from audit.observations import Observations


def _masked_median_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and std (ddof 0) over axis 0 of ``values[s, r, q]`` where ``mask[s, r]``.

    Returns float64[records, queries] each; NaN where a record has no selected shadow.
    """
    masked = np.where(mask[:, :, None], values, np.nan)
    empty = ~mask.any(axis=0)
    masked[:, empty, :] = 0.0  # avoid all-NaN warnings; overwritten below
    median = np.nanmedian(masked, axis=0)
    std = np.nanstd(masked, axis=0)
    median[empty] = np.nan
    std[empty] = np.nan
    return median, std


def _pooled_std(values: np.ndarray, mask: np.ndarray) -> float:
    """One std (ddof 0) of all ``values[s, r, q]`` with ``mask[s, r]``, around their mean."""
    return float(np.std(values[mask]))


@dataclass(frozen=True)
class LiRA:
    """LiRA; ``online`` uses IN and OUT shadows, ``fixed_variance`` pools the sigmas."""

    online: bool = True
    fixed_variance: bool = False

    @property
    def name(self) -> str:
        return "lira-" + ("online" if self.online else "offline") + ("-fixed" if self.fixed_variance else "")

    def score(self, observations: Observations, target: int) -> np.ndarray:
        shadows = check_target(observations, target, method=self.name)
        logits = require_logits(observations, self.name)
        keep = require_in_out(observations, shadows, method=self.name, need_in=self.online, need_out=True)
        phi = lira_phi(logits, observations.labels)  # [models, records, queries]
        shadow_phi, target_phi = phi[shadows], phi[target]

        mu_out, sigma_out = _masked_median_std(shadow_phi, ~keep)
        if self.fixed_variance:
            sigma_out = np.full_like(mu_out, _pooled_std(shadow_phi, ~keep))
        if not self.online:
            with np.errstate(invalid="ignore"):
                return norm.logcdf((target_phi - mu_out) / (sigma_out + 1e-30)).mean(axis=-1)

        mu_in, sigma_in = _masked_median_std(shadow_phi, keep)
        if self.fixed_variance:
            sigma_in = np.full_like(mu_in, _pooled_std(shadow_phi, keep))
        with np.errstate(invalid="ignore"):
            log_in = norm.logpdf(target_phi, mu_in, sigma_in + 1e-30)
            log_out = norm.logpdf(target_phi, mu_out, sigma_out + 1e-30)
        return (log_in - log_out).mean(axis=-1)


register("lira-online")(lambda: LiRA(online=True, fixed_variance=False))
register("lira-online-fixed")(lambda: LiRA(online=True, fixed_variance=True))
register("lira-offline")(lambda: LiRA(online=False, fixed_variance=False))
register("lira-offline-fixed")(lambda: LiRA(online=False, fixed_variance=True))
