"""Write the human report and the comparison of runs (Markdown, HTML, PNG), atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from audit.atomic import atomic_open
from audit.errors import InputError
from audit.report import content
from audit.report import fields as F
from audit.report import figures
from audit.report.document import to_html, to_markdown
from audit.report.pareto import pareto_front
from audit.report.settings import setting_labels

DPI = 120


def _out_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"out_dir: {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _write(path: Path, data: str | bytes) -> Path:
    mode = "wb" if isinstance(data, bytes) else "w"
    kwargs = {} if isinstance(data, bytes) else {"encoding": "utf-8"}
    with atomic_open(path, mode, **kwargs) as handle:
        handle.write(data)
    return path


def render_report(report: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``roc.png`` and ``epsilon.png`` into ``out_dir``.

    A figure with nothing to draw (no ROC, or no bound or estimate) is not written and not
    referenced. ``report.html`` is standalone: the figures are embedded as base64 PNG.
    Returns the paths written, figures first.
    """
    report = F.check_report(report)
    out = _out_dir(out_dir)
    title = F.run_name(report)
    pngs: dict[str, bytes] = {}
    roc = figures.plot_roc(F.attacks(report), title=f"ROC (log-log): {title}")
    if roc is not None:
        pngs["roc.png"] = _png(roc)
    eps = figures.plot_epsilon(F.bounds(report), F.estimates(report), claimed=F.claimed_epsilon(report),
                               power=F.power(report), title=f"Epsilon: {title}", effective=F.effective(report))
    if eps is not None:
        pngs["epsilon.png"] = _png(eps)
    blocks = content.report_blocks(report, roc_figure="roc.png" if "roc.png" in pngs else None,
                                   epsilon_figure="epsilon.png" if "epsilon.png" in pngs else None)
    written = [_write(out / name, data) for name, data in pngs.items()]
    written.append(_write(out / "report.md", to_markdown(blocks)))
    written.append(_write(out / "report.html", to_html(blocks, f"Audit report: {title}", pngs)))
    return written


def compare_reports(reports: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``comparison.md`` (one row per run) and ``comparison.png`` (privacy against utility,
    Pareto front marked) into ``out_dir``; returns the paths written. Each run is labelled
    by its values of the config keys that differ among the runs (its defence setting)."""
    if isinstance(reports, Mapping) or not isinstance(reports, Sequence) or not reports:
        raise InputError("reports: expected a non-empty list of report dicts")
    summaries = F.summarize_all(list(reports))
    labels = setting_labels(list(reports))
    accuracy = [s.test_accuracy for s in summaries]
    front_tpr = pareto_front(accuracy, [s.tpr for s in summaries])
    front_eps = pareto_front(accuracy, [s.epsilon_lower_bound for s in summaries])
    out = _out_dir(out_dir)
    png = _png(figures.plot_comparison(summaries, front_tpr, front_eps, labels))
    blocks = content.comparison_blocks(summaries, front_tpr, front_eps, figure="comparison.png", settings=labels)
    return [_write(out / "comparison.png", png), _write(out / "comparison.md", to_markdown(blocks))]
