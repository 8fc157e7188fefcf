"""ROC curves, AUC and TPR at a fixed low FPR, with Clopper-Pearson intervals.

Convention (Carlini et al. 2022, "Membership inference attacks from first principles"):
a record is predicted "member" when its score is >= the threshold; thresholds run over
the distinct scores, so tied scores are always on the same side. ``tpr_at_fpr`` reports
the largest TPR among thresholds whose empirical FPR does not exceed the target (no
interpolation between thresholds).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from audit.stats import _validate
from audit.stats.intervals import two_sided


@dataclasses.dataclass(frozen=True)
class RocCurve:
    """Empirical ROC: one point per distinct threshold, from (0, 0) to (1, 1).

    Attributes:
      fpr, tpr: float[points]; rates at each threshold, non-decreasing.
      thresholds: float[points]; ``inf`` first (nothing predicted member).
      tp, fp: int[points]; the counts behind the rates.
      n_members, n_nonmembers: the denominators.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_members: int
    n_nonmembers: int


def _require_both_classes(members: np.ndarray) -> None:
    if members.all() or not members.any():
        kind = "members" if not members.any() else "non-members"
        raise _validate.InputError(f"no {kind} among the {members.size} records: an ROC needs both")


def roc_curve(scores, members) -> RocCurve:
    """ROC of the rule "member if score >= t" over every distinct t.

    Args:
      scores: float[n]; higher means more likely a member.
      members: bool[n]; ground truth.
    """
    scores, members = _validate.check_scores(scores, members)
    _require_both_classes(members)
    order = np.argsort(-scores, kind="stable")
    s, mem = scores[order], members[order]
    last_of_group = np.r_[s[1:] != s[:-1], True]
    tp = np.r_[0, np.cumsum(mem)[last_of_group]]
    fp = np.r_[0, np.cumsum(~mem)[last_of_group]]
    n_pos, n_neg = int(mem.sum()), int((~mem).sum())
    return RocCurve(
        fpr=fp / n_neg,
        tpr=tp / n_pos,
        thresholds=np.r_[np.inf, s[last_of_group]],
        tp=tp,
        fp=fp,
        n_members=n_pos,
        n_nonmembers=n_neg,
    )


def auc(scores, members) -> float:
    """Area under the ROC: P[score(member) > score(non-member)] + P[tie] / 2 (trapezoids)."""
    curve = roc_curve(scores, members)
    return float(np.trapezoid(curve.tpr, curve.fpr))


@dataclasses.dataclass(frozen=True)
class TprAtFpr:
    """TPR at the best threshold whose FPR does not exceed ``target_fpr``.

    ``tpr_interval`` and ``fpr_interval`` are two-sided Clopper-Pearson intervals at
    ``confidence`` on the true rates of the chosen threshold.
    """

    target_fpr: float
    tpr: float
    fpr: float
    threshold: float
    tp: int
    fp: int
    n_members: int
    n_nonmembers: int
    confidence: float
    tpr_interval: tuple[float, float]
    fpr_interval: tuple[float, float]

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()} | {
            "threshold": float(self.threshold) if np.isfinite(self.threshold) else "inf"
        }


def fpr_measurable(n_nonmembers: int, target_fpr: float) -> bool:
    """Whether ``n_nonmembers`` scores can measure an FPR of ``target_fpr`` at all: at least
    1/target_fpr of them. Below that, the TPR "at target_fpr" is the TPR at zero false
    positives, which no table, headline or gate should quote as a TPR at that FPR."""
    return n_nonmembers * target_fpr >= 1


def tpr_at_fpr_from_curve(curve: RocCurve, target_fpr: float, *, confidence: float = 0.95) -> TprAtFpr:
    """:func:`tpr_at_fpr` on an already computed curve (for several targets)."""
    target_fpr = float(target_fpr)
    if not 0.0 <= target_fpr <= 1.0:
        raise _validate.InputError(f"fpr={target_fpr!r}: expected a number in [0, 1]")
    confidence = _validate.check_confidence(confidence)
    ok = np.flatnonzero(curve.fpr <= target_fpr)
    i = int(ok[np.argmax(curve.tpr[ok])])  # ok is never empty: fpr[0] = 0
    tp, fp = int(curve.tp[i]), int(curve.fp[i])
    tpr_lo, tpr_hi = two_sided(tp, curve.n_members, confidence)
    fpr_lo, fpr_hi = two_sided(fp, curve.n_nonmembers, confidence)
    return TprAtFpr(
        target_fpr=target_fpr,
        tpr=float(curve.tpr[i]),
        fpr=float(curve.fpr[i]),
        threshold=float(curve.thresholds[i]),
        tp=tp,
        fp=fp,
        n_members=curve.n_members,
        n_nonmembers=curve.n_nonmembers,
        confidence=confidence,
        tpr_interval=(float(tpr_lo), float(tpr_hi)),
        fpr_interval=(float(fpr_lo), float(fpr_hi)),
    )


def tpr_at_fpr(scores, members, fpr: float, *, confidence: float = 0.95) -> TprAtFpr:
    """The largest TPR whose FPR does not exceed ``fpr``, with Clopper-Pearson intervals."""
    return tpr_at_fpr_from_curve(roc_curve(scores, members), fpr, confidence=confidence)


def log_log_roc(curve: RocCurve, floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) ready for a log-log plot: zeros raised to ``floor`` (default 1 / (2 n)).

    Plot only; the figures in reports use this so that the low-FPR regime is visible.
    """
    floor_fpr = floor if floor is not None else 0.5 / curve.n_nonmembers
    floor_tpr = floor if floor is not None else 0.5 / curve.n_members
    return np.maximum(curve.fpr, floor_fpr), np.maximum(curve.tpr, floor_tpr)
