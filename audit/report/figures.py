"""Figures of the report, as ``matplotlib.figure.Figure`` objects (no file I/O here).

matplotlib is imported inside each function so that ``import audit.report`` stays light,
and figures are bare ``Figure`` objects (Agg canvas), so pyplot's global state is untouched.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from audit.report import fields as F
from audit.report import formatting as fmt

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

# The lowest FPR a report's ROC shows unless the audit resolves lower (Carlini et al. 2022).
ROC_FLOOR = 1e-4


def roc_floor(attacks: Sequence[F.Attack]) -> float:
    """The lower limit of both axes: 1e-4, or 1/n when the audit has more than 1e4 records."""
    sizes = [n for a in attacks for n in (a.n_members, a.n_nonmembers) if n]
    return min(ROC_FLOOR, 1.0 / max(sizes)) if sizes else ROC_FLOOR


def plot_roc(attacks: Sequence[F.Attack], *, title: str | None = None) -> "Figure | None":
    """Log-log ROC of every attack with its TPR-at-FPR points and intervals; ``None`` if no curve.

    Both axes are logarithmic from :func:`roc_floor` to 1, as argued by Carlini et al.
    (2022): leakage of a few records shows only at low FPR. Rates of 0 are drawn on the floor.
    """
    from matplotlib.figure import Figure

    drawable = [a for a in attacks if a.roc_fpr or a.points]
    if not drawable:
        return None
    floor = roc_floor(drawable)
    fig = Figure(figsize=(5.5, 6.8), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    nonmembers = [a.n_nonmembers for a in drawable if a.n_nonmembers]
    if nonmembers and 1.0 / min(nonmembers) > floor:
        ax.axvspan(floor, 1.0 / min(nonmembers), color="0.92", zorder=0,
                   label="FPR < 1/non-members: read at zero false positives")
    ax.plot([floor, 1.0], [floor, 1.0], color="0.4", linestyle=":", linewidth=1, label="chance (TPR = FPR)")
    interval_labelled = False
    for i, attack in enumerate(drawable):
        color = f"C{i % 10}"
        if attack.roc_fpr:
            xs = [max(x, floor) for x in attack.roc_fpr]
            ys = [max(y, floor) for y in attack.roc_tpr]
            ax.plot(xs, ys, color=color, linewidth=1.6, label=f"{attack.name} (AUC {fmt.num(attack.auc)})")
        else:
            ax.plot([], [], color=color, label=f"{attack.name} (AUC {fmt.num(attack.auc)})")
        for p in attack.points:
            if not F.finite(p.tpr) or p.target_fpr <= 0:
                continue
            y = max(p.tpr, floor)
            yerr = None
            if p.interval is not None:
                lo, hi = max(p.interval[0], floor), max(p.interval[1], floor)
                yerr = [[max(y - lo, 0.0)], [max(hi - y, 0.0)]]
            label = None if interval_labelled else "TPR at fixed FPR, with interval"
            interval_labelled = True
            ax.errorbar([max(p.target_fpr, floor)], [y], yerr=yerr, fmt="o", markersize=3.5,
                        color=color, capsize=2, linewidth=1, label=label, clip_on=False, zorder=3)
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.0)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC (log-log)")
    ax.grid(True, which="major", color="0.85", linewidth=0.6)
    fig.legend(loc="outside lower center", ncol=1, fontsize="small", frameon=False)
    return fig


def plot_epsilon(bounds: Sequence[F.Bound], estimates: Sequence[F.Bound], *,
                 claimed: float | None, power: float | None, title: str | None = None) -> "Figure | None":
    """Each guaranteed lower bound (solid) and estimate (hatched, "estimate") against the claim.

    A grey bar behind each bound reaches its power, the largest epsilon that audit could
    have shown; without per-bound powers the audit's ``power`` is a dotted line.
    ``None`` when there is nothing to draw.
    """
    from matplotlib.figure import Figure

    rows = [b for b in (*bounds, *estimates) if b.value is not None and not math.isnan(b.value)]
    if not rows:
        return None
    finite_values = [v for b in rows for v in (b.value, b.power) if F.finite(v)]
    finite_values += [v for v in (claimed, power) if F.finite(v)]
    right = max(finite_values + [1e-3]) * 1.25
    fig = Figure(figsize=(6.5, 2.2 + 0.55 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    labels, seen = [], set()

    def once(label: str) -> str | None:
        if label in seen:
            return None
        seen.add(label)
        return label

    any_bound_power = any(F.finite(b.power) for b in rows if b.guaranteed)
    for y, b in enumerate(rows):
        value = min(b.value, right) if math.isinf(b.value) else b.value
        if b.guaranteed:
            if F.finite(b.power):
                ax.barh(y, b.power, height=0.7, color="0.88", edgecolor="0.6",
                        label=once("power (could have shown at most)"))
            ax.barh(y, value, height=0.4, color="C0", label=once("guaranteed lower bound"))
            labels.append(f"{b.name}\n({b.method or 'bound'}, {fmt.confidence(b.confidence)})")
        else:
            ax.barh(y, value, height=0.4, facecolor="none", edgecolor="C1", hatch="//",
                    label=once("estimate (not guaranteed)"))
            labels.append(f"estimate: {b.name}")
        ax.text(value, y, f" {fmt.num(b.value)}", va="center", fontsize="small")
    if F.finite(claimed):
        ax.axvline(claimed, color="C3", linestyle="--", linewidth=1.5, label=f"claimed epsilon = {fmt.num(claimed)}")
    if F.finite(power) and not any_bound_power:
        ax.axvline(power, color="0.4", linestyle=":", linewidth=1.2, label=f"power of this audit = {fmt.num(power)}")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, right)
    ax.set_xlabel("epsilon")
    ax.set_title(title or "Epsilon: lower bounds against the claim")
    fig.legend(loc="outside lower center", ncol=2, fontsize="small", frameon=False)
    return fig


def _panel(ax, summaries: Sequence[F.RunSummary], xs, ys, front: Sequence[bool], ylabel: str) -> list[str]:
    """One privacy-utility scatter; returns the names that could not be placed."""
    placed = [i for i in range(len(summaries)) if F.finite(xs[i]) and F.finite(ys[i])]
    missing = [summaries[i].name for i in range(len(summaries)) if i not in placed]
    on = [i for i in placed if front[i]]
    off = [i for i in placed if not front[i]]
    if off:
        ax.scatter([xs[i] for i in off], [ys[i] for i in off], s=40, facecolors="none", edgecolors="0.35",
                   label="dominated run")
    if on:
        ax.scatter([xs[i] for i in on], [ys[i] for i in on], s=90, marker="*", color="C2", zorder=3,
                   label="Pareto front")
        ordered = sorted(on, key=lambda i: xs[i])
        ax.plot([xs[i] for i in ordered], [ys[i] for i in ordered], color="C2", linewidth=1, zorder=2)
    for i in placed:
        ax.annotate(summaries[i].name, (xs[i], ys[i]), textcoords="offset points", xytext=(5, 5),
                    fontsize="small")
    ax.set_xlabel("test accuracy (higher is better)")
    ax.set_ylabel(ylabel)
    ax.grid(True, color="0.9", linewidth=0.6)
    if placed:
        lo, hi = min(xs[i] for i in placed), max(xs[i] for i in placed)
        pad = max((hi - lo) * 0.15, 0.01)
        ax.set_xlim(lo - pad, hi + pad * 1.8)  # room on the right for labels
    return missing


def plot_comparison(summaries: Sequence[F.RunSummary], front_tpr: Sequence[bool],
                    front_eps: Sequence[bool]) -> "Figure":
    """Privacy against utility: TPR at 0.1% FPR, and epsilon lower bound, against test accuracy."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(11, 4.8))
    ax_tpr, ax_eps = fig.subplots(1, 2)
    acc = [s.test_accuracy for s in summaries]
    missing_tpr = _panel(ax_tpr, summaries, acc, [s.tpr for s in summaries], front_tpr,
                         "TPR at 0.1% FPR, strongest attack (lower is better)")
    ax_tpr.axhline(F.HEADLINE_FPR, color="0.4", linestyle=":", linewidth=1, label="chance (TPR = FPR)")
    ax_tpr.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax_tpr.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_tpr.set_ylim(bottom=0)
    ax_tpr.set_title("Attack success against utility")
    ax_tpr.legend(fontsize="small", loc="best")

    missing_eps = _panel(ax_eps, summaries, acc, [s.epsilon_lower_bound for s in summaries], front_eps,
                         "best epsilon lower bound (lower is better)")
    claimed = [(a, s.claimed_epsilon, s.epsilon_lower_bound) for a, s in zip(acc, summaries)
               if F.finite(a) and F.finite(s.claimed_epsilon)]
    if claimed:
        ax_eps.scatter([c[0] for c in claimed], [c[1] for c in claimed], marker="_", s=200, color="C3",
                       label="claimed epsilon")
        # The gap between a run's bound and its claim is what the audit could not rule out.
        for x, claim, bound in claimed:
            if F.finite(bound):
                ax_eps.plot([x, x], [bound, claim], color="C3", linestyle=":", linewidth=0.8)
    ax_eps.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax_eps.set_ylim(bottom=0)
    ax_eps.set_title("Epsilon lower bound against utility")
    ax_eps.legend(fontsize="small", loc="best")

    notes = []
    if missing_tpr:
        notes.append("not placed (left): " + ", ".join(missing_tpr))
    if missing_eps:
        notes.append("not placed (right): " + ", ".join(missing_eps))
    if notes:
        fig.text(0.01, 0.01, "; ".join(notes), fontsize="small", color="0.3")
    fig.tight_layout(rect=(0, 0.04 if notes else 0, 1, 1))
    return fig
