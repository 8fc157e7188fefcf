"""Likelihood Ratio Attack (LiRA): Carlini et al. (2022), "Membership inference attacks
from first principles" (online and offline LiRA, fixed variance); as in tensorflow/privacy
``research/mi_lira_2021`` (``score.py``, ``plot.py``).

Per query ``t``, the logit-scaled confidence ``phi_t`` (:func:`audit.attacks._common.lira_phi`).
For each record and query, from the shadows (all models but the target):

- ``mu_in`` / ``mu_out``: ``np.median`` of phi over all shadows that include / exclude
  the record (no truncation to a common count);
- ``sigma_in`` / ``sigma_out``: their standard deviation (ddof 0), or, with a fixed
  variance, one std of all IN (OUT) phi values pooled over records and queries.
  A record whose per-record std is undefined (one value) or zero (all values equal)
  takes the pooled std instead: a zero std is no estimate of a spread, and it turned
  every such record's score into +-1e30 z-scores (a block of tied top scores).

Online:  score = mean_t [log N(phi_t; mu_in, sigma_in + 1e-30) - log N(phi_t; mu_out, sigma_out + 1e-30)].
Offline: score = mean_t log Phi((phi_t - mu_out) / (sigma_out + 1e-30))  (one-sided test).

Per-record variances need many shadows: Carlini et al. (2022) find that with fewer than
about 64 shadow models a global ("fixed") variance does better. The per-record variants
warn (:class:`FewShadowsWarning`) when the median audited record has fewer than
:data:`MIN_VALUES_PER_RECORD` = 32 OUT (offline), or IN or OUT (online), shadow values:
64 shadows at inclusion 1/2, the threshold LeakPro's LiRA uses to switch to a fixed variance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from audit.attacks._common import (
    AttackWarning,
    audited_mask,
    check_target,
    lira_phi,
    require_in_out,
    require_logits,
)
from audit.attacks.registry import register
from audit.observations import Observations

# About 64 shadow models (Carlini et al. 2022) at inclusion probability 1/2: each record
# has about 32 IN and 32 OUT values to estimate its variance from.
MIN_VALUES_PER_RECORD = 32


class FewShadowsWarning(AttackWarning):
    """A per-record LiRA variance rests on fewer than ``MIN_VALUES_PER_RECORD`` shadow values."""


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


def _per_record_std(values: np.ndarray, mask: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``std[r, q]``, or the pooled std where a record has one value or all values equal.

    A record's std of 0 is no estimate: with it, any other value is infinitely unlikely and
    the score saturates (log Phi = 0 exactly), tying every such record at the top.
    """
    count = mask.sum(axis=0)[:, None]
    undefined = (count < 2) | (std == 0)
    if not undefined.any():
        return std
    return np.where(undefined, _pooled_std(values, mask), std)


def _warn_few_values(name: str, counts: dict[str, np.ndarray], audited: np.ndarray) -> None:
    """:class:`FewShadowsWarning` when the median audited record has fewer than
    ``MIN_VALUES_PER_RECORD`` values of a kind (``counts[kind]: int[records]``)."""
    if not audited.any():
        return
    medians = {kind: float(np.median(c[audited])) for kind, c in counts.items()}
    if min(medians.values()) >= MIN_VALUES_PER_RECORD:
        return
    values = " and ".join(f"{m:g} {kind}" for kind, m in medians.items())
    base = name.removesuffix("-fixed")
    warnings.warn(
        f"{name}: the median record's variance is estimated from only {values} shadow values "
        f"(fewer than {MIN_VALUES_PER_RECORD}; Carlini et al. 2022 find per-record variances "
        f"pay off only from about 64 shadow models), so its top scores are unstable and may tie; "
        f"prefer {base}-fixed, which pools one variance over all records.",
        FewShadowsWarning,
        stacklevel=3,
    )


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
        if not self.fixed_variance:
            counts = {"IN": keep.sum(axis=0)} if self.online else {}
            _warn_few_values(self.name, counts | {"OUT": (~keep).sum(axis=0)}, audited_mask(observations))
        phi = lira_phi(logits, observations.labels)  # [models, records, queries]
        shadow_phi, target_phi = phi[shadows], phi[target]

        mu_out, sigma_out = _masked_median_std(shadow_phi, ~keep)
        if self.fixed_variance:
            sigma_out = np.full_like(mu_out, _pooled_std(shadow_phi, ~keep))
        else:
            sigma_out = _per_record_std(shadow_phi, ~keep, sigma_out)
        if not self.online:
            with np.errstate(invalid="ignore"):
                return norm.logcdf((target_phi - mu_out) / (sigma_out + 1e-30)).mean(axis=-1)

        mu_in, sigma_in = _masked_median_std(shadow_phi, keep)
        if self.fixed_variance:
            sigma_in = np.full_like(mu_in, _pooled_std(shadow_phi, keep))
        else:
            sigma_in = _per_record_std(shadow_phi, keep, sigma_in)
        with np.errstate(invalid="ignore"):
            log_in = norm.logpdf(target_phi, mu_in, sigma_in + 1e-30)
            log_out = norm.logpdf(target_phi, mu_out, sigma_out + 1e-30)
        return (log_in - log_out).mean(axis=-1)


register("lira-online")(lambda: LiRA(online=True, fixed_variance=False))
register("lira-online-fixed")(lambda: LiRA(online=True, fixed_variance=True))
register("lira-offline")(lambda: LiRA(online=False, fixed_variance=False))
register("lira-offline-fixed")(lambda: LiRA(online=False, fixed_variance=True))
