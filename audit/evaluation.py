"""Leave-one-out evaluation of membership-inference attacks.

With K models, each model in turn is the target and the other K-1 are its shadows,
the protocol of Carlini et al. (2022) and of the reference code. The target's scores on its audited records (all records except the
population / reference records) are pooled over targets into one ROC, as in the
reference ``plot.py``. Reported: AUC and TPR at FPR 10%, 1%, 0.1%, 0.01% with
Clopper-Pearson intervals (``audit.stats.roc``; convention: the largest TPR whose FPR
does not exceed the target), and the ROC points for a log-log figure (:func:`plot_roc`).

Shapes: ``scores: float64[targets, records]``, ``members: bool[targets, records]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from audit.attacks import get_attack, score_targets
from audit.errors import InputError
from audit.observations import Observations
from audit.stats.roc import TprAtFpr, roc_curve, tpr_at_fpr_from_curve

DEFAULT_FPRS = (0.1, 0.01, 0.001, 0.0001)


# --- leave-one-out -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LeaveOneOutScores:
    """Scores of one attack with each model in turn as the target.

    Attributes:
        method: attack name.
        targets: int[targets], the model indices used as targets.
        scores: float64[targets, records] (NaN allowed only where not audited).
        members: bool[targets, records], ``keep[targets]``.
        audited: bool[records] (the same records for every target: those that are not
            population records) or bool[targets, records] (per target, as the pipeline's
            analysis chooses them, :func:`audit.pipeline.analysis.leave_one_out`): the
            scores that enter the ROC.
    """

    method: str
    targets: np.ndarray
    scores: np.ndarray
    members: np.ndarray
    audited: np.ndarray

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores float64[audited], members bool[audited]), target by target in row order."""
        audited = np.broadcast_to(self.audited, self.scores.shape)
        return self.scores[audited], self.members[audited]


def check_targets(observations: Observations, targets: Iterable[int] | None) -> np.ndarray:
    """int[targets]: the model indices ``targets`` (default: every model), validated."""
    k = observations.n_models
    if targets is None:
        return np.arange(k)
    arr = np.asarray(list(targets))
    if arr.size == 0 or arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= k:
        raise InputError(f"targets: expected model indices in 0..{k - 1}, got {arr.tolist()}")
    return arr


def leave_one_out_scores(
    observations: Observations,
    method: str,
    *,
    targets: Iterable[int] | None = None,
    params: Mapping[str, Any] | None = None,
) -> LeaveOneOutScores:
    """Score every record with each model of ``targets`` (default: all) as the target."""
    attack = get_attack(method, **dict(params or {}))
    targets_arr = check_targets(observations, targets)
    scores = score_targets(attack, observations, targets_arr)
    audited = ~observations.population_mask
    bad = ~np.isfinite(scores[:, audited])
    if bad.any():
        raise InputError(f"{method}: {int(bad.sum())} non-finite scores on audited records")
    return LeaveOneOutScores(method, targets_arr, scores, observations.keep[targets_arr], audited)


@dataclass(frozen=True, eq=False)
class AttackEvaluation:
    """Pooled leave-one-out ROC summary of one attack.

    ``tpr_at_fpr``: one :class:`audit.stats.roc.TprAtFpr` per requested FPR (TPR and
    achieved FPR with two-sided Clopper-Pearson intervals at ``confidence``).
    ``roc_fpr``, ``roc_tpr``: float64[points], the pooled ROC (for a log-log figure).
    """

    method: str
    targets: tuple[int, ...]
    members: int
    non_members: int
    auc: float
    tpr_at_fpr: tuple[TprAtFpr, ...]
    confidence: float
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray

    def to_dict(self, *, include_roc: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "targets": list(self.targets),
            "members": self.members,
            "non_members": self.non_members,
            "auc": self.auc,
            "confidence": self.confidence,
            "tpr_at_fpr": [p.to_dict() for p in self.tpr_at_fpr],
        }
        if include_roc:
            out["roc"] = {"fpr": self.roc_fpr.tolist(), "tpr": self.roc_tpr.tolist()}
        return out


def summarize_scores(
    loo: LeaveOneOutScores,
    *,
    fprs: Sequence[float] = DEFAULT_FPRS,
    confidence: float = 0.95,
) -> AttackEvaluation:
    """Pool the leave-one-out scores into one ROC; AUC and TPR at each of ``fprs``."""
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence: expected a value in (0, 1), got {confidence}")
    for f in fprs:
        if not 0.0 < f < 1.0:
            raise InputError(f"fprs: expected values in (0, 1), got {f}")
    scores, members = loo.pooled()
    n_pos, n_neg = int(members.sum()), int((~members).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"{loo.method}: need both members and non-members, got {n_pos} and {n_neg}")
    curve = roc_curve(scores, members)
    points = tuple(tpr_at_fpr_from_curve(curve, f, confidence=confidence) for f in fprs)
    return AttackEvaluation(
        method=loo.method,
        targets=tuple(int(t) for t in loo.targets),
        members=n_pos,
        non_members=n_neg,
        auc=float(np.trapezoid(curve.tpr, curve.fpr)),
        tpr_at_fpr=points,
        confidence=confidence,
        roc_fpr=curve.fpr,
        roc_tpr=curve.tpr,
    )


def evaluate_attack(
    observations: Observations,
    method: str,
    *,
    targets: Iterable[int] | None = None,
    params: Mapping[str, Any] | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    confidence: float = 0.95,
) -> AttackEvaluation:
    """Leave-one-out evaluation of ``method`` (see module docstring)."""
    loo = leave_one_out_scores(observations, method, targets=targets, params=params)
    return summarize_scores(loo, fprs=fprs, confidence=confidence)


def evaluate_attacks(
    observations: Observations,
    methods: Sequence[str],
    **kwargs: Any,
) -> dict[str, AttackEvaluation]:
    """:func:`evaluate_attack` for each of ``methods``, keyed by method name."""
    return {m: evaluate_attack(observations, m, **kwargs) for m in methods}


def log_log_roc_points(evaluation: AttackEvaluation) -> tuple[np.ndarray, np.ndarray]:
    """The ROC points with FPR > 0 and TPR > 0 (the ones a log-log plot can show)."""
    keep = (evaluation.roc_fpr > 0) & (evaluation.roc_tpr > 0)
    return evaluation.roc_fpr[keep], evaluation.roc_tpr[keep]


def plot_roc(evaluations: Mapping[str, AttackEvaluation] | Sequence[AttackEvaluation], path, *,
             title: str | None = None) -> None:
    """Write a log-log ROC figure (PNG, matplotlib Agg backend) of ``evaluations`` to ``path``.

    Carlini et al. (2022) argue low-FPR performance should be read off a log-log ROC.
    The file is written atomically.
    """
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; pyplot untouched

    from audit.atomic import atomic_open

    items = list(evaluations.values()) if isinstance(evaluations, Mapping) else list(evaluations)
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    floor = 1.0
    for ev in items:
        x, y = log_log_roc_points(ev)
        if x.size:
            floor = min(floor, float(x.min()), float(y.min()))
        ax.plot(x, y, label=f"{ev.method} (AUC {ev.auc:.3f})")
    grid = np.logspace(np.log10(max(floor, 1e-6)), 0, 50)
    ax.plot(grid, grid, "k:", linewidth=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
