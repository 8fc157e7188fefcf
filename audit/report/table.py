"""A short plain-text table of runs for the terminal."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from audit.report import fields as F
from audit.report import formatting as fmt

COLUMNS = ("run", "claimed eps", "eps lower bound", "TPR@0.1%FPR", "test acc", "verdict")


def summary_table(reports: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """One line per report (a single report dict is accepted too); missing values print "-".

    TPR@0.1%FPR is that of the run's strongest attack at 0.1% FPR. The attacks' warnings
    follow the table, one line each: ``warning: <run>: <message>``.
    """
    if isinstance(reports, Mapping):
        reports = [reports]
    reports = list(reports)
    rows = [COLUMNS]
    summaries = F.summarize_all(reports)
    for s in summaries:
        rows.append((s.name, fmt.num(s.claimed_epsilon), fmt.num(s.epsilon_lower_bound), fmt.pct(s.tpr),
                     fmt.pct(s.test_accuracy), s.decision or fmt.MISSING))
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"warning: {s.name}: {message}" for s, report in zip(summaries, reports)
              for message in F.attack_warnings(report)]
    return "\n".join(lines)
