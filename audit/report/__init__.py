"""The human audit report: Markdown, HTML and figures from a ``report.json`` dict.

- :func:`render_report` writes ``report.md``, ``report.html``, ``roc.png``, ``epsilon.png``.
- :func:`compare_reports` writes ``comparison.md`` and ``comparison.png`` for several runs.
- :func:`load_report` reads a ``report.json`` (file or run directory) and checks its schema.
- :func:`summary_table` is a plain-text table for the terminal (the attacks' warnings below it).
- :func:`audit.report.settings.setting_labels` names compared runs by the config keys that differ.

A pass is reported as "no violation detected" with the audit's power, never as a claim
that the model is private; estimates are shown apart and never decide the verdict.
Importing this package does not import matplotlib (the figures import it when drawn).
"""

from audit.report.load import load_report
from audit.report.pareto import pareto_front
from audit.report.render import compare_reports, render_report
from audit.report.table import summary_table

__all__ = ["compare_reports", "load_report", "pareto_front", "render_report", "summary_table"]
