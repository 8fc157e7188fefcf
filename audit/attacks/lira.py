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

:meth:`LiRA.score_targets` scores many targets at once: phi once for all models, each
record's IN / OUT values sorted once, and every target's leave-one-out median read from
that order; its standard deviations sum the shadows in model order as ``np.nanstd`` does.
The numbers equal those of :meth:`LiRA.score` target by target exactly (same operations on
the same values in the same order), at a cost linear in the targets instead of quadratic.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from audit.attacks._common import (
    AttackWarning,
    audited_mask,
    by_model_blocks,
    check_targets,
    lira_phi,
    records_seen,
    require_in_out_targets,
    require_logits,
    shadow_masks,
    target_blocks,
)
from audit.attacks.registry import register
from audit.observations import Observations

# About 64 shadow models (Carlini et al. 2022) at inclusion probability 1/2: each record
# has about 32 IN and 32 OUT values to estimate its variance from.
MIN_VALUES_PER_RECORD = 32


class FewShadowsWarning(AttackWarning):
    """A per-record LiRA variance rests on fewer than ``MIN_VALUES_PER_RECORD`` shadow values."""


def _loo_median(values: np.ndarray, mask: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each of ``targets``, ``np.nanmedian`` over its shadows (every model but the target)
    of ``values`` where ``mask``: float64[targets, records, queries], NaN where none is selected.

    ``values[models, records, queries]``, ``mask[models, records]``. Each record's selected
    values are sorted once; a target's median is read from that order without its own
    value (the same middle values, averaged as ``np.ma.median`` does: ``(low + high) / 2``).
    NaN values count as unselected, as ``np.nanmedian`` ignores them.
    """
    k = values.shape[0]
    selected = mask[:, :, None] & ~np.isnan(values)
    order = np.argsort(np.where(selected, values, np.nan), axis=0, kind="stable")  # unselected last
    ordered = np.take_along_axis(values, order, axis=0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k)[:, None, None], axis=0)
    own = selected[targets]  # [targets, records, queries]
    left = selected.sum(axis=0)[None] - own  # values without the target's own
    skip = np.where(own, rank[targets], k)  # position of the target's own value in the order
    low, high = (left - 1) // 2, left // 2
    low = np.clip(low + (low >= skip), 0, k - 1)
    high = np.clip(high + (high >= skip), 0, k - 1)
    median = (np.take_along_axis(ordered, low, axis=0) + np.take_along_axis(ordered, high, axis=0)) / 2
    median[left == 0] = np.nan
    return median


def _loo_std(values: np.ndarray, mask: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each of ``targets``, ``np.nanstd`` (ddof 0) over its shadows of ``values`` where
    ``mask``: float64[targets, records, queries], NaN where the target's shadows select none.

    ``np.nanstd``'s steps on a block ``[targets, models, records, queries]`` whose target
    rows (and unselected values) are zeros: the sums run over the models in order, and
    adding a zero changes no sum, so each equals the sum over the shadows alone.
    """
    k, r, q = values.shape
    std = np.empty((targets.size, r, q))
    present = ~np.isnan(values)
    for block in target_blocks(targets.size, k * r * q):
        sel = shadow_masks(mask, targets[block])[..., None] & present[None]
        arr = np.where(sel, values[None], 0.0)
        count = sel.sum(axis=1, keepdims=True, dtype=np.intp)
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.true_divide(arr.sum(axis=1, keepdims=True), count)
            np.subtract(arr, avg, out=arr)
            arr[~sel] = 0.0
            np.multiply(arr, arr, out=arr)
            std[block] = np.sqrt(np.true_divide(arr.sum(axis=1), count[:, 0]))
    empty = (mask.sum(axis=0)[None, :] - mask[targets]) == 0  # [targets, records]
    std[np.broadcast_to(empty[:, :, None], std.shape)] = np.nan
    return std


def _loo_pooled_std(values: np.ndarray, mask: np.ndarray, target: int, seen: np.ndarray) -> float:
    """One std (ddof 0) of all ``values[s, r, q]`` with ``mask[s, r]`` over ``target``'s shadows
    ``s`` and the records ``r`` it sees (``seen: bool[records]``), taken in the order shadows,
    records, queries."""
    sel = mask & seen[None, :]
    sel[target] = False
    return float(np.std(values[sel]))


def _few_values(counts: dict[str, np.ndarray], audited: np.ndarray) -> dict[str, float] | None:
    """The median audited record's number of values of each kind, if any is below
    ``MIN_VALUES_PER_RECORD``; else None."""
    if not audited.any():
        return None
    medians = {kind: float(np.median(c[audited])) for kind, c in counts.items()}
    return medians if min(medians.values()) < MIN_VALUES_PER_RECORD else None


def _warn_few_values(name: str, counts: dict[str, np.ndarray], audited: np.ndarray) -> bool:
    """:class:`FewShadowsWarning` when the median audited record has fewer than
    ``MIN_VALUES_PER_RECORD`` values of a kind (``counts[kind]: int[records]``); True if it warned."""
    medians = _few_values(counts, audited)
    if medians is None:
        return False
    values = " and ".join(f"{m:g} {kind}" for kind, m in medians.items())
    base = name.removesuffix("-fixed")
    warnings.warn(
        f"{name}: the median record's variance is estimated from only {values} shadow values "
        f"(fewer than {MIN_VALUES_PER_RECORD}; Carlini et al. 2022 find per-record variances "
        f"pay off only from about 64 shadow models), so its top scores are unstable and may tie; "
        f"prefer {base}-fixed, which pools one variance over all records.",
        FewShadowsWarning,
        stacklevel=4,
    )
    return True


@dataclass(frozen=True)
class LiRA:
    """LiRA; ``online`` uses IN and OUT shadows, ``fixed_variance`` pools the sigmas."""

    online: bool = True
    fixed_variance: bool = False

    @property
    def name(self) -> str:
        return "lira-" + ("online" if self.online else "offline") + ("-fixed" if self.fixed_variance else "")

    def score(self, observations: Observations, target: int) -> np.ndarray:
        return self.score_targets(observations, [target])[0]

    def score_targets(self, observations: Observations, targets, records=None) -> np.ndarray:
        """float64[targets, records]: :meth:`score` of each of ``targets``, every target from
        the same arrays. ``records: bool[targets, records]`` (default: all) are the records
        each target's attack sees, as if the observations held only those: they bound the
        pooled variances, the checks and the warning; the other scores are NaN."""
        targets = check_targets(observations, targets, method=self.name)
        logits = require_logits(observations, self.name)
        seen = records_seen(observations, targets, records, method=self.name)
        require_in_out_targets(observations, targets, seen, method=self.name, need_in=self.online, need_out=True)
        keep = observations.keep
        if not self.fixed_variance:
            self._warn_first(keep, targets, seen, audited_mask(observations))
        phi = by_model_blocks(lira_phi, logits, observations.labels)  # [models, records, queries]
        target_phi = phi[targets]
        mu_out, sigma_out = self._estimates(phi, ~keep, targets, seen)
        if not self.online:
            with np.errstate(invalid="ignore"):
                scores = norm.logcdf((target_phi - mu_out) / (sigma_out + 1e-30)).mean(axis=-1)
            return np.where(seen, scores, np.nan)
        mu_in, sigma_in = self._estimates(phi, keep, targets, seen)
        with np.errstate(invalid="ignore"):
            log_in = norm.logpdf(target_phi, mu_in, sigma_in + 1e-30)
            log_out = norm.logpdf(target_phi, mu_out, sigma_out + 1e-30)
        return np.where(seen, (log_in - log_out).mean(axis=-1), np.nan)

    def _estimates(self, phi: np.ndarray, mask: np.ndarray, targets: np.ndarray,
                   seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma): float64[targets, records, queries] each, from the shadows' ``phi``
        where ``mask`` (IN or OUT). A per-record sigma from fewer than two values, or zero,
        takes the pooled sigma of the target's shadows on the records it sees (computed
        only for the targets that need it, as the pooled std of no values warns): a zero
        std is no estimate, with it any other value is infinitely unlikely and the score
        saturates (log Phi = 0 exactly), tying every such record at the top."""
        mu = _loo_median(phi, mask, targets)
        count = (mask.sum(axis=0)[None, :] - mask[targets])[:, :, None]
        std = None if self.fixed_variance else _loo_std(phi, mask, targets)
        undefined = None if std is None else (count < 2) | (std == 0)
        pooled = np.full(targets.size, np.nan)
        for row, t in enumerate(targets):
            if undefined is None or undefined[row][seen[row]].any():
                pooled[row] = _loo_pooled_std(phi, mask, int(t), seen[row])
        if std is None:
            return mu, np.broadcast_to(pooled[:, None, None], mu.shape).copy()
        return mu, np.where(undefined, pooled[:, None, None], std)

    def _warn_first(self, keep: np.ndarray, targets: np.ndarray, seen: np.ndarray, audited: np.ndarray) -> None:
        """:class:`FewShadowsWarning` with the first target's figures that call for it (once)."""
        in_all = keep.sum(axis=0)
        out_all = keep.shape[0] - in_all
        for row, t in enumerate(targets):
            own = keep[t].astype(np.int64)
            counts = {"IN": in_all - own} if self.online else {}
            if _warn_few_values(self.name, counts | {"OUT": out_all - (1 - own)}, audited & seen[row]):
                return


register("lira-online")(lambda: LiRA(online=True, fixed_variance=False))
register("lira-online-fixed")(lambda: LiRA(online=True, fixed_variance=True))
register("lira-offline")(lambda: LiRA(online=False, fixed_variance=False))
register("lira-offline-fixed")(lambda: LiRA(online=False, fixed_variance=True))
