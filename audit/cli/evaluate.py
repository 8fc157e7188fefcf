"""``dpaudit evaluate``: leave-one-out evaluation of attacks on observations.

Prints a table (AUC, TPR at FPR 10%, 1%, 0.1%, 0.01% with Clopper-Pearson intervals)
or, with ``--json``, exactly one JSON object keyed by method. On a ``dpaudit run``
directory the attacks are scored as its analysis scored them, at its FPRs and
confidence, so the figures are those of its ``report.json``
(:class:`audit.cli._observations.Source`).
"""

from __future__ import annotations

import json

import click

from audit.cli._observations import OBSERVATIONS_HELP
from audit.cli.attack import METHODS_HELP
from audit.errors import InputError


def _fmt_pct(f: float) -> str:
    return f"{100 * f:g}%"


def _table(results: dict, skipped: dict, n_models: int) -> str:
    from audit.stats.roc import fpr_measurable

    rows = []
    first = next(iter(results.values()), None)
    header = ["method", "AUC"] + ([f"TPR@{_fmt_pct(p.target_fpr)}" for p in first.tpr_at_fpr] if first else [])
    unmeasurable = set()
    for method, ev in results.items():
        cells = [method, f"{ev.auc:.4f}"]
        for p in ev.tpr_at_fpr:
            if not fpr_measurable(ev.non_members, p.target_fpr):
                unmeasurable.add(p.target_fpr)
                cells.append("-")
            else:
                cells.append(f"{p.tpr:.4f} [{p.tpr_interval[0]:.4f}, {p.tpr_interval[1]:.4f}]")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    if first is not None:
        lines.append(
            f"leave-one-out over {n_models} models: {first.members} member and {first.non_members} "
            f"non-member scores pooled; TPR with {first.confidence:.0%} Clopper-Pearson intervals"
        )
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    if unmeasurable:
        n = min(ev.non_members for ev in results.values())
        lines.append(f"- : an FPR below 1/{n} = {1 / n:.2g} cannot be measured with {n} non-member scores "
                     "(--json has the TPR at zero false positives)")
    lines += [f"{m}: skipped ({reason})" for m, reason in skipped.items()]
    return "\n".join(lines)


@click.command("evaluate")
@click.option("--observations", "observations_path", required=True,
              help=f"{OBSERVATIONS_HELP}. On a dpaudit run directory the attacks are scored as its "
                   "analysis scored them, at its FPRs, so the figures equal its report.json.")
@click.option("--methods", default=None,
              help=f"Comma-separated attack names ({METHODS_HELP}); on a white-box dpaudit run also its "
                   "canary statistics; default: every attack the observations support (those that cannot "
                   "run are listed as skipped), on a white-box run its canary statistics.")
@click.option("--confidence", default=None, type=float,
              help="Confidence level of the TPR intervals [default: 0.95, on a dpaudit run its confidence].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object keyed by method.")
@click.option("--plot", default=None, help="Also write a log-log ROC figure (PNG) to this path.")
def command(observations_path: str, methods: str | None, confidence: float | None, as_json: bool,
            plot: str | None) -> int:
    """Evaluate attacks leave-one-out: each model is the target, the others its shadows."""
    from audit.cli._observations import describe_layout, layout_names, load_source, warnings_on_stderr
    from audit.cli._paths import output_file
    from audit.evaluation import plot_roc

    if confidence is not None and not 0.0 < confidence < 1.0:
        raise InputError(f"--confidence: expected a value in (0, 1), got {confidence}")
    if plot:
        output_file("--plot", plot, "PNG")
    source = load_source(observations_path)
    observations = source.observations
    explicit = methods is not None
    if explicit:
        names = tuple(m.strip() for m in methods.split(",") if m.strip())
        known = source.known_methods()
        unknown = [m for m in names if m not in known]
        if not names or unknown:
            raise InputError(f"--methods: unknown attack method(s) {unknown or [methods]}; "
                             f"expected names from {', '.join(known)}")
    else:
        names = source.default_methods()
    confidence = source.confidence if confidence is None else confidence

    results, skipped = {}, {}
    with warnings_on_stderr():
        for name in names:
            try:
                results[name] = source.evaluate(name, confidence=confidence)
            except InputError as err:
                if explicit:
                    raise
                skipped[name] = str(err)
    if not results:
        raise InputError(f"{observations_path}: no attack could run ({'; '.join(skipped.values())})")
    if plot:
        plot_roc(results, plot, title=f"leave-one-out, {observations.n_models} models")
    if as_json:
        payload = {name: ev.to_dict() for name, ev in results.items()}
        payload.update({name: {"method": name, "skipped": reason} for name, reason in skipped.items()})
        click.echo(json.dumps(payload))
    else:
        click.echo(_table(results, skipped, observations.n_models))
        if source.protocol() is not None:
            click.echo(source.protocol())
        names = layout_names(observations)
        if names is not None:
            click.echo(f"each model in turn is the target; LiRA layout {observations_path}: {describe_layout(names)}")
    return 0
