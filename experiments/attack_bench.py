"""Shared machinery of the membership-inference experiments (``attacks_purchase``,
``attacks_reproduced``): training many non-private MLPs at once, the two-column logits
trick, the pooled shadow-count curve, and the tables and figures.

Shadow-count curve (Carlini et al. 2022, the figure of TPR against the number of shadow
models): for each target and each count k, k shadows are drawn at random from the
other K-1 models (a fresh draw per target), the attack sees only the target and those k,
and the scores are pooled over targets into one ROC. A record enters for a target only
if the k shadows hold what the attack needs (an OUT model; online LiRA also an IN
model); the fraction of (target, record) pairs that enter is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from audit.atomic import atomic_open
from audit.evaluation import AttackEvaluation, DEFAULT_FPRS, plot_roc
from audit.observations import Observations
from audit.stats.roc import TprAtFpr, roc_curve, tpr_at_fpr_from_curve

ATTACKS = (
    "loss", "confidence", "entropy", "modified-entropy", "label-only", "calibrated", "shokri",
    "rmia", "lira-offline", "lira-offline-fixed", "lira-online", "lira-online-fixed",
)
"""Every registered black-box attack (the white-box ones need gradient statistics)."""

CURVE_ATTACKS = ("lira-online", "lira-online-fixed", "lira-offline", "lira-offline-fixed", "rmia")
TRUE_CLASS_ONLY = frozenset({"loss", "confidence", "calibrated", "rmia", *CURVE_ATTACKS})
"""Attacks that see a record only through the softmax of its true class and the sum of the
others (one query): they run on :func:`true_class_logits`, up to 50x smaller than the logits."""
NEEDS_IN = frozenset({"lira-online", "lira-online-fixed"})

PRIVACY_METER = {
    "rmia": {"tpr_at_0.1%": 0.000, "auc": 0.934, "source": "ML Privacy Meter's RMIA (figure quoted in the attacks issue)"},
    "lira-offline": {"tpr_at_0.1%": 0.262, "auc": None, "source": "post-hoc offline LiRA on Privacy Meter's signals, 8 references (figure quoted in the attacks issue)"},
}
"""The two published figures the attacks issue asks us to beat; their AUC where quoted."""


# --- training ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MLPTraining:
    """Non-private minibatch SGD of MLPs in the fast trainer (``NON_PRIVATE`` step)."""

    hidden: tuple[int, ...]
    epochs: float
    lr: float
    momentum: float
    batch_size: int


@dataclass(frozen=True)
class TrainSummary:
    train_accuracy: float
    test_accuracy: float
    final_loss: float
    seconds: float


def train_mlps(x: np.ndarray, y: np.ndarray, n_classes: int, keep: np.ndarray, training: MLPTraining, *,
               subset_size: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Train one MLP per row of ``keep: bool[models, records]`` on ``x: float32[records, d]``.

    ``subset_size``: the nominal training-set size that sets the number of steps
    (``epochs`` passes at the expected batch size). Returns ``logits: float32[models,
    records, 1, classes]`` on every record, the final mean batch losses ``float[models]``
    and the wall-clock seconds.
    """
    import torch

    from trainers.fast import DPSGDConfig, MLPShape
    from trainers.fast.spec import NON_PRIVATE
    from trainers.fast.trainer import steps_for_epochs, train

    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    config = DPSGDConfig(lr=training.lr, max_grad_norm=1.0, noise_multiplier=0.0,
                         expected_batch_size=training.batch_size, momentum=training.momentum, spec=NON_PRIVATE)
    steps = steps_for_epochs(training.epochs, training.batch_size, subset_size)
    start = time.perf_counter()
    result = train(xt, yt, torch.from_numpy(keep), MLPShape((x.shape[1], *training.hidden, n_classes)), config,
                   steps=steps, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = result.model.logits(xt).numpy()
    return logits[:, :, None, :], result.losses[-1].numpy(), seconds


def fit_summary(obs: Observations, final_losses: np.ndarray, seconds: float) -> TrainSummary:
    """Train accuracy (IN pairs) and test accuracy (OUT audited pairs) of ``obs``' models."""
    correct = obs.logits[:, :, 0].argmax(-1) == obs.labels[None, :]
    out_audited = ~obs.keep & ~obs.population_mask[None, :]
    return TrainSummary(train_accuracy=float(correct[obs.keep].mean()), test_accuracy=float(correct[out_audited].mean()),
                        final_loss=float(np.mean(final_losses)), seconds=seconds)


def true_class_logits(obs: Observations) -> Observations:
    """The same observations with two-column logits ``[z_y, logsumexp_{y' != y} z_y']``
    (float64) and label 0: the softmax gives the same ``p_y`` and the same sum of the other
    classes' probabilities (what :data:`TRUE_CLASS_ONLY` attacks use), up to rounding."""
    from scipy.special import logsumexp

    z = obs.logits.astype(np.float64)  # [models, records, queries, classes]
    labels = obs.labels
    onehot = np.arange(z.shape[-1]) == labels[:, None, None]
    z_y = np.take_along_axis(z, np.broadcast_to(labels[:, None, None], z.shape[:-1] + (1,)), axis=-1)
    z_rest = logsumexp(np.where(onehot, -np.inf, z), axis=-1, keepdims=True)
    return Observations(keep=obs.keep, labels=np.zeros_like(labels), logits=np.concatenate([z_y, z_rest], axis=-1),
                        population=obs.population, metadata=obs.metadata)


# --- pooled evaluation -------------------------------------------------------------------


def summarize_pairs(method: str, targets: Sequence[int], scores: np.ndarray, members: np.ndarray,
                    fprs: Sequence[float] = DEFAULT_FPRS, confidence: float = 0.95) -> AttackEvaluation:
    """Pooled ROC summary of already pooled ``scores, members: [pairs]`` (as
    :func:`audit.evaluation.summarize_scores`, for pairs that differ per target)."""
    curve = roc_curve(scores, members)
    return AttackEvaluation(
        method=method,
        targets=tuple(int(t) for t in targets),
        members=int(members.sum()),
        non_members=int((~members).sum()),
        auc=float(np.trapezoid(curve.tpr, curve.fpr)),
        tpr_at_fpr=tuple(tpr_at_fpr_from_curve(curve, f, confidence=confidence) for f in fprs),
        confidence=confidence,
        roc_fpr=curve.fpr,
        roc_tpr=curve.tpr,
    )


@dataclass(frozen=True)
class RMIAFractionOnly:
    """RMIA's score without the tie-break of :class:`audit.attacks.rmia.RMIA`: the bare
    fraction of population records ``z`` with ``LR(x) / LR(z) > gamma`` (Zarifzadeh et al.
    2024), as ML Privacy Meter reports it. Shown to explain a TPR of 0 at low FPR: with a
    strong signal many members and non-members tie at the top fraction."""

    name: str = "rmia-fraction-only"

    def score(self, observations: Observations, target: int) -> np.ndarray:
        from audit.attacks.rmia import RMIA

        rmia = RMIA()
        log_lr = rmia.log_likelihood_ratio(observations, target)
        population = observations.population_mask
        log_lr_z = np.sort(log_lr[population])
        return np.searchsorted(log_lr_z, log_lr - np.log(rmia.gamma), side="left") / population.sum()


@dataclass(frozen=True)
class CurvePoint:
    method: str
    shadows: int
    evaluation: AttackEvaluation
    coverage: float  # fraction of (target, audited record) pairs that entered


def shadow_count_curve(
    obs: Observations,
    counts: Sequence[int],
    methods: Sequence[str],
    *,
    seed: int,
    targets: Sequence[int] | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    confidence: float = 0.95,
) -> list[CurvePoint]:
    """Pooled results with k shadows drawn per target (module docstring).

    ``methods``: registered attack names, or attack objects (with ``name`` and
    ``score``). ``targets``: the target models (default: all). The same shadow draw per
    (target, k) is used for every method. Online LiRA needs an IN and an OUT shadow, so
    it is skipped at k = 1 (no pair could enter).
    """
    from audit.attacks import get_attack

    k_models = obs.n_models
    targets = list(range(k_models)) if targets is None else [int(t) for t in targets]
    audited = ~obs.population_mask
    draws = {}
    for k in counts:  # one generator per k: the draw for k does not depend on the other counts
        rng = np.random.default_rng([seed, k])
        draws[k] = {t: rng.choice(np.delete(np.arange(k_models), t), size=k, replace=False) for t in range(k_models)}
    points = []
    for method in methods:
        attack = get_attack(method) if isinstance(method, str) else method
        method = attack.name
        for k in counts:
            if method in NEEDS_IN and k < 2:
                continue
            pooled_scores, pooled_members, entered, total = [], [], 0, 0
            for t in targets:
                models = np.r_[t, np.sort(draws[k][t])]
                shadow_keep = obs.keep[models[1:]]
                ok = audited & (~shadow_keep).any(0)
                if method in NEEDS_IN:
                    ok &= shadow_keep.any(0)
                records = ok | obs.population_mask  # population kept for RMIA's references
                sub = Observations(keep=obs.keep[np.ix_(models, records)], labels=obs.labels[records],
                                   logits=obs.logits[np.ix_(models, records)], population=obs.population_mask[records])
                scores = attack.score(sub, 0)
                entered_here = ok[records]
                pooled_scores.append(scores[entered_here])
                pooled_members.append(obs.keep[t, records][entered_here])
                entered += int(ok.sum())
                total += int(audited.sum())
            ev = summarize_pairs(method, targets, np.concatenate(pooled_scores), np.concatenate(pooled_members),
                                 fprs, confidence)
            points.append(CurvePoint(method, k, ev, entered / total))
    return points


def tpr_ratio(num: TprAtFpr, den: TprAtFpr) -> tuple[float, float, float]:
    """``num.tpr / den.tpr`` and a conservative interval from the two Clopper-Pearson
    intervals (``num_lo / den_hi``, ``num_hi / den_lo``; each holds with its own
    confidence, so the pair holds with at least ``1 - 2 (1 - confidence)``). ``inf`` where
    a denominator is 0 (``nan`` for 0 / 0)."""
    if den.tpr > 0:
        ratio = num.tpr / den.tpr
    else:  # 0 / 0 says nothing either way
        ratio = float("inf") if num.tpr > 0 else float("nan")
    lo = num.tpr_interval[0] / den.tpr_interval[1] if den.tpr_interval[1] > 0 else float("inf")
    hi = num.tpr_interval[1] / den.tpr_interval[0] if den.tpr_interval[0] > 0 else float("inf")
    return ratio, lo, hi


# --- formatting --------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def tpr_cell(p: TprAtFpr) -> str:
    lo, hi = p.tpr_interval
    return f"{p.tpr:.4f} [{lo:.4f}, {hi:.4f}]"


def point(ev: AttackEvaluation, fpr: float) -> TprAtFpr:
    """The TPR-at-FPR entry of ``ev`` for ``fpr``."""
    return next(p for p in ev.tpr_at_fpr if p.target_fpr == fpr)


def attack_table(evaluations: dict[str, AttackEvaluation]) -> list[str]:
    fprs = [p.target_fpr for p in next(iter(evaluations.values())).tpr_at_fpr]
    head = "| attack | AUC | " + " | ".join(f"TPR @ {pct(f)} FPR" for f in fprs) + " |"
    lines = [head, "|" + "---|" * (2 + len(fprs))]
    n_targets = max(len(ev.targets) for ev in evaluations.values())
    for name, ev in evaluations.items():
        label = name if len(ev.targets) == n_targets else f"{name} ({len(ev.targets)} targets)"
        lines.append(f"| {label} | {ev.auc:.4f} | " + " | ".join(tpr_cell(p) for p in ev.tpr_at_fpr) + " |")
    return lines


def curve_table(points: list[CurvePoint], fpr: float = 0.001) -> list[str]:
    methods = list(dict.fromkeys(p.method for p in points))
    counts = sorted({p.shadows for p in points})
    cell = {(p.method, p.shadows): p for p in points}
    lines = ["| shadows | " + " | ".join(f"{m}: TPR @ {pct(fpr)} (AUC)" for m in methods) + " | records entered (online / offline) |",
             "|" + "---|" * (2 + len(methods))]
    for k in counts:
        row = []
        for m in methods:
            p = cell.get((m, k))
            row.append(f"{tpr_cell(point(p.evaluation, fpr))} ({p.evaluation.auc:.3f})" if p else "n/a")
        cov_on = cell.get(("lira-online", k))
        cov_off = cell.get(("lira-offline", k))
        cov = " / ".join(pct(c.coverage) if c else "-" for c in (cov_on, cov_off))
        lines.append(f"| {k} | " + " | ".join(row) + f" | {cov} |")
    return lines


def draw_shadow_curve(ax, points: list[CurvePoint], fpr: float = 0.001) -> None:
    """TPR at ``fpr`` (with its Clopper-Pearson interval) against the shadow count, on ``ax``."""
    for method in dict.fromkeys(p.method for p in points):
        pts = sorted((p for p in points if p.method == method), key=lambda p: p.shadows)
        ks = np.array([p.shadows for p in pts])
        tp = [point(p.evaluation, fpr) for p in pts]
        y = np.array([q.tpr for q in tp])
        err = np.array([[q.tpr - q.tpr_interval[0], q.tpr_interval[1] - q.tpr] for q in tp]).T
        ax.errorbar(ks, y, yerr=err, marker="o", capsize=2, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({p.shadows for p in points}))
    ax.get_xaxis().set_major_formatter("{x:.0f}")
    ax.set_xlabel("shadow models per target")
    ax.set_ylabel(f"TPR at {pct(fpr)} FPR")
    ax.legend(fontsize="small")


def plot_shadow_curve(points: list[CurvePoint], path, fpr: float = 0.001) -> None:
    """One-panel PNG of :func:`draw_shadow_curve`, written atomically."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4))
    draw_shadow_curve(fig.add_subplot(), points, fpr)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)


def plot_attack_roc(evaluations: dict[str, AttackEvaluation], path, *, title: str) -> None:
    """Log-log ROC of up to 12 attacks (6 colours x 2 line styles, no two curves alike)."""
    import matplotlib
    from cycler import cycler

    styles = cycler(linestyle=["-", "--"]) * cycler(color=matplotlib.colormaps["tab10"].colors[:6])
    with matplotlib.rc_context({"axes.prop_cycle": styles}):
        plot_roc(evaluations, path, title=title)
