"""``dpaudit evaluate``: leave-one-out evaluation of attacks on an observations file.

Prints a table (AUC, TPR at FPR 10%, 1%, 0.1%, 0.01% with Clopper-Pearson intervals)
or, with ``--json``, exactly one JSON object keyed by method.
"""

from __future__ import annotations

import json

import click

from audit.cli.attack import METHODS_HELP
from audit.errors import InputError


def _default_methods(observations) -> tuple[str, ...]:
    from audit.attacks import LOGIT_METHODS, WHITE_BOX_METHODS

    methods: tuple[str, ...] = ()
    if observations.logits is not None:
        methods += LOGIT_METHODS
    if observations.stats is not None:
        methods += WHITE_BOX_METHODS
    return methods


def _fmt_pct(f: float) -> str:
    return f"{100 * f:g}%"


def _table(results: dict, skipped: dict, n_models: int) -> str:
    rows = []
    first = next(iter(results.values()), None)
    header = ["method", "AUC"] + ([f"TPR@{_fmt_pct(p.target_fpr)}" for p in first.tpr_at_fpr] if first else [])
    for method, ev in results.items():
        rows.append([method, f"{ev.auc:.4f}"] + [
            f"{p.tpr:.4f} [{p.tpr_interval[0]:.4f}, {p.tpr_interval[1]:.4f}]" for p in ev.tpr_at_fpr
        ])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    if first is not None:
        lines.append(
            f"leave-one-out over {n_models} models: {first.members} member and {first.non_members} "
            f"non-member scores pooled; TPR with {first.confidence:.0%} Clopper-Pearson intervals"
        )
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines += [f"{m}: skipped ({reason})" for m, reason in skipped.items()]
    return "\n".join(lines)


@click.command("evaluate")
@click.option("--observations", "observations_path", required=True,
              help="Observations .npz or run directory.")
@click.option("--methods", default=None,
              help=f"Comma-separated attack names ({METHODS_HELP}); default: every attack the "
                   "observations support (those that cannot run are listed as skipped).")
@click.option("--confidence", default=0.95, show_default=True, type=float,
              help="Confidence level of the TPR intervals.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object keyed by method.")
@click.option("--plot", default=None, help="Also write a log-log ROC figure (PNG) to this path.")
def command(observations_path: str, methods: str | None, confidence: float, as_json: bool,
            plot: str | None) -> int:
    """Evaluate attacks leave-one-out: each model is the target, the others its shadows."""
    from audit.attacks import available_attacks
    from audit.cli._observations import describe_layout, layout_names, load
    from audit.cli._paths import output_file
    from audit.evaluation import evaluate_attack, plot_roc

    explicit = methods is not None
    if explicit:
        names = tuple(m.strip() for m in methods.split(",") if m.strip())
        known = available_attacks()
        unknown = [m for m in names if m not in known]
        if not names or unknown:
            raise InputError(f"--methods: unknown attack method(s) {unknown or [methods]}; "
                             f"expected names from {', '.join(known)}")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"--confidence: expected a value in (0, 1), got {confidence}")
    if plot:
        output_file("--plot", plot, "PNG")
    observations = load(observations_path)
    if not explicit:
        names = _default_methods(observations)

    results, skipped = {}, {}
    for name in names:
        try:
            results[name] = evaluate_attack(observations, name, confidence=confidence)
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
        names = layout_names(observations)
        if names is not None:
            click.echo(f"each model in turn is the target; LiRA layout {observations_path}: {describe_layout(names)}")
    return 0
