"""Figures of the report, as ``matplotlib.figure.Figure`` objects (no file I/O here).

matplotlib is imported inside each function so that ``import audit.report`` stays light,
and figures are bare ``Figure`` objects (Agg canvas), so pyplot's global state is untouched.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RocSteps:
    """An attack's ROC as the step function a deterministic threshold attains, ready for
    log axes (matplotlib ``drawstyle="steps-post"``).

    ``(xs[i], ys[i])`` are the vertices where the TPR rises: from ``xs[i]`` up to
    ``xs[i + 1]`` the TPR is ``ys[i]``, the TPR of the largest threshold whose FPR does not
    exceed that FPR, which is what the markers (``tpr_at_fpr``) report. Every ``ys`` is
    positive: where the TPR is 0 (FPR below ``zero_below``) nothing is drawn, since 0 has
    no place on a log axis. ``xs[0]`` is the left edge when the TPR is already positive there.
    """

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    zero_below: float | None  # TPR = 0 for every FPR below this; None when positive from the left edge

    def tpr_at(self, fpr: float) -> float:
        """The drawn TPR at ``fpr`` (0 left of the first vertex)."""
        i = bisect.bisect_right(self.xs, fpr) - 1
        return self.ys[i] if i >= 0 else 0.0


def roc_steps(attack: F.Attack, left: float) -> RocSteps:
    """The step function of ``attack``'s ROC vertices from ``left`` to FPR 1.

    The vertices are the report's (possibly thinned) ROC points and the operating points
    behind the markers (each a vertex: the rates of one threshold), so the drawn curve
    passes through every marker even when thinning dropped its vertex.
    """
    vertices = sorted({*zip(attack.roc_fpr, attack.roc_tpr),
                       *((p.fpr, p.tpr) for p in attack.points if F.finite(p.fpr) and F.finite(p.tpr))})
    xs: list[float] = []
    ys: list[float] = []
    best = 0.0  # the TPR so far: the step function is non-decreasing
    for fpr, tpr in vertices:
        if tpr <= best:
            continue
        best = tpr
        if fpr <= left:  # already reached at the left edge
            xs, ys = [left], [tpr]
        else:
            xs.append(fpr)
            ys.append(tpr)
    if not xs:
        return RocSteps((), (), 1.0)
    if xs[-1] < 1.0:
        xs.append(1.0)  # carry the last level to the right edge
        ys.append(ys[-1])
    zero_below = None if xs[0] <= left else xs[0]
    return RocSteps(tuple(xs), tuple(ys), zero_below)


def plot_roc(attacks: Sequence[F.Attack], *, title: str | None = None) -> "Figure | None":
    """Log-log ROC of every attack with its TPR-at-FPR points and intervals; ``None`` if no curve.

    Both axes are logarithmic from :func:`roc_floor` to 1, as argued by Carlini et al.
    (2022): leakage of a few records shows only at low FPR. Each curve is the step function
    of its ROC vertices (:func:`roc_steps`): a threshold attains only the vertices, and a
    block of tied scores is a horizontal run then a jump, never a chord, so every marker
    lies on its curve. A TPR of 0 cannot be drawn on a log axis: the curve starts at its
    first positive TPR and the legend says below which FPR the TPR is 0; a marker of TPR 0
    is a triangle on the lower edge, its interval rising from there.
    """
    from matplotlib.figure import Figure

    drawable = [a for a in attacks if a.roc_fpr or a.points]
    if not drawable:
        return None
    floor = roc_floor(drawable)
    targets = [p.target_fpr for a in drawable for p in a.points if F.finite(p.tpr) and p.target_fpr > 0]
    left = min([floor, *targets])
    fig = Figure(figsize=(5.5, 6.8), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    nonmembers = [a.n_nonmembers for a in drawable if a.n_nonmembers]
    if nonmembers and 1.0 / min(nonmembers) > left:
        ax.axvspan(left, 1.0 / min(nonmembers), color="0.92", zorder=0,
                   label="FPR < 1/non-members: read at zero false positives")
    ax.plot([left, 1.0], [left, 1.0], color="0.4", linestyle=":", linewidth=1, label="chance (TPR = FPR)")
    interval_labelled = zero_labelled = False
    for i, attack in enumerate(drawable):
        color = f"C{i % 10}"
        label = f"{attack.name} (AUC {fmt.num(attack.auc)}"
        steps = roc_steps(attack, left) if attack.roc_fpr else None
        if steps is not None and steps.zero_below is not None:
            label += f"; TPR = 0 below FPR {fmt.pct(steps.zero_below)}"
        label += ")"
        if steps is not None and steps.xs:
            ax.plot(steps.xs, steps.ys, drawstyle="steps-post", color=color, linewidth=1.6, label=label,
                    gid=f"roc:{attack.name}")
        else:
            ax.plot([], [], color=color, label=label)
        for p in attack.points:
            if not F.finite(p.tpr) or p.target_fpr <= 0:
                continue
            zero = p.tpr <= 0
            y = floor if zero else p.tpr
            yerr = None
            if p.interval is not None:
                lo, hi = max(p.interval[0], floor), max(p.interval[1], floor)
                yerr = [[max(y - lo, 0.0)], [max(hi - y, 0.0)]]
            if zero:
                label = None if zero_labelled else "TPR = 0 at that FPR (on the lower edge), with interval"
                zero_labelled = True
            else:
                label = None if interval_labelled else "TPR at fixed FPR, with interval"
                interval_labelled = True
            ax.errorbar([p.target_fpr], [y], yerr=yerr, fmt="v" if zero else "o", markersize=4.5 if zero else 3.5,
                        color=color, capsize=2, linewidth=1, label=label, clip_on=False, zorder=3,
                        gid=f"{'zero' if zero else 'point'}:{attack.name}:{p.target_fpr!r}")
    ax.set_xlim(left, 1.0)
    ax.set_ylim(floor, 1.0)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC (log-log)")
    ax.grid(True, which="major", color="0.85", linewidth=0.6)
    fig.legend(loc="outside lower center", ncol=1, fontsize="small", frameon=False)
    return fig


def plot_epsilon(bounds: Sequence[F.Bound], estimates: Sequence[F.Bound], *,
                 claimed: float | None, power: float | None, title: str | None = None,
                 effective: Sequence[F.Effective] = ()) -> "Figure | None":
    """Each guaranteed lower bound (solid), estimate (hatched, "estimate") and effective
    epsilon (dotted green: a lower bound within the DP-SGD family, with sigma_eff against
    the claimed sigma) against the claim.

    A grey bar behind each bound reaches its power, the largest epsilon that audit could
    have shown; without per-bound powers the audit's ``power`` is a dotted line.
    ``None`` when there is nothing to draw.
    """
    from matplotlib.figure import Figure

    rows = [b for b in (*bounds, *estimates) if b.value is not None and not math.isnan(b.value)]
    effective = [e for e in effective if F.finite(e.epsilon)]
    if not rows and not effective:
        return None
    finite_values = [v for b in rows for v in (b.value, b.power) if F.finite(v)] + [e.epsilon for e in effective]
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
    for y, e in enumerate(effective, start=len(rows)):
        ax.barh(y, e.epsilon, height=0.4, facecolor="none", edgecolor="C2", hatch="..",
                label=once("effective epsilon (assumes DP-SGD with the claimed q, T)"))
        sigma = "no noise level rejected" if e.sigma is None else f"sigma_eff {fmt.num(e.sigma)} vs claimed {fmt.num(e.claimed_sigma)}"
        labels.append(f"effective: {e.name}\n({sigma})")
        ax.text(e.epsilon, y, f" {fmt.num(e.epsilon)}", va="center", fontsize="small")
    rows = [*rows, *effective]
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


def _percent_ticks(axis) -> None:
    """Evenly spaced percent ticks on a rate axis (values in [0, 1]): steps of 1, 2 or 5
    times a power of ten, every label with the decimals its step needs and no more, so
    labels never round unevenly ("66%, 68%, 70%"; "0.05%, 0.10%, 0.15%")."""
    from matplotlib.ticker import Formatter, MaxNLocator

    class Percent(Formatter):
        decimals = 0

        def set_locs(self, locs):
            super().set_locs(locs)
            gaps = [b - a for a, b in zip(locs[:-1], locs[1:]) if b > a]
            step = 100 * min(gaps) if gaps else 1.0
            self.decimals = max(0, -math.floor(math.log10(step) + 1e-6))

        def __call__(self, x, pos=None):
            return f"{round(100 * x, self.decimals) + 0.0:.{self.decimals}f}%"  # + 0.0: no "-0%"

    axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]))
    axis.set_major_formatter(Percent())


# Where a point's label may go, in points from the point, nearest first: (dx, dy, ha, va).
_LABEL_OFFSETS = tuple((dx * r, dy * r, ha, va) for r in (1.0, 2.5, 4.0) for dx, dy, ha, va in (
    (5, 5, "left", "bottom"), (5, -5, "left", "top"), (-5, 5, "right", "bottom"), (-5, -5, "right", "top"),
    (0, 8, "center", "bottom"), (0, -8, "center", "top"), (9, 0, "left", "center"), (-9, 0, "right", "center")))


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _place_labels(ax, points: Sequence[tuple[float, float]], texts: Sequence[str], taken: list) -> list | None:
    """Annotate each point (data coordinates) with its text where the text stays inside the
    axes and overlaps no marker and no box in ``taken`` (display boxes, extended as labels
    are placed). Greedy, nearest place first, tried in a few orders of the points. Returns
    the annotations, or ``None``, with none left drawn, when some label finds no free place.
    Call once the figure's layout is final."""
    orders = [list(range(len(points))),
              sorted(range(len(points)), key=lambda k: points[k]),
              sorted(range(len(points)), key=lambda k: points[k], reverse=True)]
    for order in orders:
        placed = _place_in_order(ax, points, texts, taken, order)
        if placed is not None:
            return placed
    return None


def _place_in_order(ax, points, texts, taken: list, order: Sequence[int]) -> list | None:
    from matplotlib.transforms import Bbox

    frame = ax.get_window_extent()
    radius = 6 * ax.figure.dpi / 72  # a marker's half-width in display units
    markers = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius)
               for x, y in (ax.transData.transform(p) for p in points)]
    placed = []
    for k in order:
        point, text = points[k], texts[k]
        others = [m for j, m in enumerate(markers) if j != k]
        for dx, dy, ha, va in _LABEL_OFFSETS:
            note = ax.annotate(text, point, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               fontsize="small")
            box = note.get_window_extent().padded(2)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(_overlap(box, b) for b in (*taken, *others)):
                placed.append(note)
                taken.append(box)
                break
            note.remove()
        else:
            for note in placed:
                note.remove()
            del taken[len(taken) - len(placed):]
            return None
    return placed


def _panel(ax, xs, ys, front: Sequence[bool], ylabel: str) -> list[int]:
    """One privacy-utility scatter, unlabelled; returns the indices of the runs placed."""
    placed = [i for i in range(len(xs)) if F.finite(xs[i]) and F.finite(ys[i])]
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
    ax.set_xlabel("test accuracy (higher is better)")
    ax.set_ylabel(ylabel)
    ax.grid(True, color="0.9", linewidth=0.6)
    if placed:
        lo, hi = min(xs[i] for i in placed), max(xs[i] for i in placed)
        pad = max((hi - lo) * 0.2, 0.01)
        ax.set_xlim(lo - pad, hi + pad)
        top = max(ys[i] for i in placed)
        ax.set_ylim(0, top * 1.25 if top > 0 else 1.0)  # room above the highest point for its label
    _percent_ticks(ax.xaxis)
    return placed


def _key_text(labels: Sequence[str], width: int = 150) -> str:
    """``"1: label; 2: label; ..."`` wrapped to ``width`` characters a line."""
    import textwrap

    entries = [f"{i + 1}: {label}".replace(" ", "\u00a0") for i, label in enumerate(labels)]  # kept whole
    return "\n".join(textwrap.wrap("; ".join(entries), width=width, break_long_words=False)).replace("\u00a0", " ")


def plot_comparison(summaries: Sequence[F.RunSummary], front_tpr: Sequence[bool],
                    front_eps: Sequence[bool], labels: Sequence[str] | None = None) -> "Figure":
    """Privacy against utility: TPR at 0.1% FPR, and epsilon lower bound, against test accuracy.

    Each point is labelled with ``labels[i]``, what sets run ``i`` apart (its setting of the
    config keys that differ, :func:`audit.report.settings.setting_labels`; default the run
    names), next to the point where no other label or marker is. When some label finds no
    free place, every point carries its number and a key below the panels names them.
    Rates are evenly spaced percent ticks (:func:`_percent_ticks`); legends sit below the
    panels, off the points.
    """
    from matplotlib.figure import Figure

    labels = [s.name for s in summaries] if labels is None else list(labels)
    fig = Figure(figsize=(11, 5.4))
    ax_tpr, ax_eps = fig.subplots(1, 2)
    acc = [s.test_accuracy for s in summaries]
    tpr = [s.tpr for s in summaries]
    eps = [s.epsilon_lower_bound for s in summaries]
    on_tpr = _panel(ax_tpr, acc, tpr, front_tpr, "TPR at 0.1% FPR, strongest attack (lower is better)")
    ax_tpr.axhline(F.HEADLINE_FPR, color="0.4", linestyle=":", linewidth=1, label="chance (TPR = FPR)")
    ax_tpr.set_ylim(bottom=0, top=max(ax_tpr.get_ylim()[1], F.HEADLINE_FPR * 1.25))
    _percent_ticks(ax_tpr.yaxis)
    ax_tpr.set_title("Attack success against utility")

    on_eps = _panel(ax_eps, acc, eps, front_eps, "best epsilon lower bound (lower is better)")
    claimed = [(a, s.claimed_epsilon, s.epsilon_lower_bound) for a, s in zip(acc, summaries)
               if F.finite(a) and F.finite(s.claimed_epsilon)]
    if claimed:
        ax_eps.scatter([c[0] for c in claimed], [c[1] for c in claimed], marker="_", s=200, color="C3",
                       label="claimed epsilon")
        # The gap between a run's bound and its claim is what the audit could not rule out.
        for x, claim, bound in claimed:
            if F.finite(bound):
                ax_eps.plot([x, x], [bound, claim], color="C3", linestyle=":", linewidth=0.8)
        top = max(c[1] for c in claimed)
        ax_eps.set_ylim(bottom=0, top=max(ax_eps.get_ylim()[1], top * 1.1))
    ax_eps.set_title("Epsilon lower bound against utility")
    for ax in (ax_tpr, ax_eps):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)

    notes = []
    for side, on in (("left", on_tpr), ("right", on_eps)):
        missing = [labels[i] for i in range(len(summaries)) if i not in on]
        if missing:
            notes.append(f"not placed ({side}): " + ", ".join(missing))
    footer = fig.text(0.01, 0.01, "; ".join(notes), fontsize="small", color="0.3", va="bottom")

    def layout() -> None:
        lines = footer.get_text().count("\n") + 1 if footer.get_text() else 0
        fig.tight_layout(rect=(0, 0.035 * lines, 1, 1))

    layout()
    panels = ((ax_tpr, on_tpr, tpr), (ax_eps, on_eps, eps))
    taken: list = []
    notes_drawn = [_place_labels(ax, [(acc[i], ys[i]) for i in on], [labels[i] for i in on], taken)
                   for ax, on, ys in panels]
    if all(n is not None for n in notes_drawn):
        return fig
    for drawn in notes_drawn:
        for note in drawn or ():
            note.remove()
    footer.set_text("\n".join(filter(None, [_key_text(labels), "; ".join(notes)])))
    layout()
    for ax, on, ys in panels:
        points, numbers = [(acc[i], ys[i]) for i in on], [str(i + 1) for i in on]
        if _place_labels(ax, points, numbers, []) is None:  # crowded beyond that: numbers beside each point
            for point, number in zip(points, numbers):
                ax.annotate(number, point, xytext=(4, 4), textcoords="offset points", fontsize="small")
    return fig
