"""Shared by ``dpaudit run`` and ``dpaudit gate``: run, report, log, gate, exit code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from audit.errors import InputError

EXIT_RUNTIME = 3


class RuntimeFailure(click.ClickException):
    """A failure that is not the user's input (a plugin raising, a crash): exit code 3."""

    exit_code = EXIT_RUNTIME


def _warn(message: str) -> None:
    print(f"dpaudit: warning: {' '.join(str(message).split())}", file=sys.stderr)


def render(report: dict, run_dir: Path) -> list[Path]:
    try:
        from audit.report import render_report
    except ImportError:  # the renderer is optional for the JSON report
        return []
    return list(render_report(report, run_dir))


def log_to_mlflow(report: dict, run_dir: Path, files: list[Path]):
    cfg = report["config"]["mlflow"]
    if not cfg["enabled"]:
        return None
    from audit.tracking import log_audit

    result = log_audit(
        report,
        run_dir,
        tracking_uri=cfg["tracking_uri"] or None,
        experiment=cfg["experiment"],
        artifacts=[run_dir / "report.json", *files],
    )
    if not result.ok:
        _warn(f"MLflow logging failed, the local report is kept in {run_dir} (upload later with "
              f"`dpaudit report {run_dir} --log-to-mlflow`): {result.warning}")
    return result


def attack_lines(report: dict) -> list[str]:
    """The attacks of a black-box audit as an aligned table (AUC, TPR at each FPR).

    A TPR at an FPR below 1/(non-members scored) reads "-": such an FPR cannot be measured
    (it is the TPR at zero false positives), and a footnote says how many are needed."""
    from audit.stats.roc import fpr_measurable

    attacks = report.get("attacks") or {}
    fprs = sorted({r["target_fpr"] for a in attacks.values() for r in a.get("tpr_at_fpr", [])}, reverse=True)
    if not attacks or not fprs:
        return []
    header = ["attack", "AUC", *(f"TPR@{f * 100:g}%" for f in fprs)]
    rows, unmeasurable = [header], []
    for name, a in attacks.items():
        by_fpr = {r["target_fpr"]: r for r in a.get("tpr_at_fpr", [])}
        cells = [name, f"{a['auc']:.3f}"]
        for f in fprs:
            r = by_fpr.get(f)
            measurable = r is not None and fpr_measurable(r["n_nonmembers"], f)
            if r is not None and not measurable:
                unmeasurable.append(r["n_nonmembers"])
            cells.append(f"{r['tpr']:.1%}" if measurable else "-")
        rows.append(cells)
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if c else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    if unmeasurable:
        n = min(unmeasurable)
        lines.append(f"- : an FPR below 1/{n} = {1 / n:.2g} cannot be measured with {n} non-member scores")
    return lines


def _gate_line(result) -> str:
    alias = (f"alias {result.alias!r} now points at it" if result.alias_set
             else f"alias {result.alias!r} removed from it" if result.alias_removed
             else f"alias {result.alias!r} not set")
    return (f"gate: {result.model_name} version {result.version}: {'passed' if result.passed else 'failed'} "
            f"({result.decision}); {alias}; dp_audit.* tags set at {result.tracking_uri}")


def _check_gate(config) -> None:
    """Before any work: a gate needs something to test, and a model version to tag."""
    from audit.tracking import TrackingError, check_gate_target

    g = config.gate
    if config.mode == "non-dp" and g.max_tpr is None:
        raise InputError("gate: a non-DP audit tests no privacy claim; set [gate] max_tpr (the highest TPR of "
                         "gate.attack allowed at gate.at_fpr) or audit a DP-SGD trainer / a plugin's claim")
    try:
        check_gate_target(tracking_uri=config.mlflow.tracking_uri or None, model_name=g.model_name,
                          version=g.version or None, alias=g.alias)
    except TrackingError as err:
        raise RuntimeFailure(str(err)) from None


def execute(config_path: str, overrides, *, resume: bool, progress: bool, gate_model: str | None = None) -> int:
    from audit.config import load_config
    from audit.pipeline import preflight, run_audit

    config = load_config(config_path, overrides)
    if gate_model:
        config = config.model_copy(update={"gate": config.gate.model_copy(update={"model_name": gate_model})})
    try:
        checked = preflight.check(config)  # bad input: exit 2 before any work, nothing written
        config = checked.config
        if config.gate.model_name:
            _check_gate(config)
        report = run_audit(config, resume=resume, progress=progress, checked=checked)
    except (InputError, click.ClickException):
        raise
    except Exception as err:  # plugin code, numerical failure: not bad input (Ctrl-C is no Exception)
        raise RuntimeFailure(f"audit failed: {type(err).__name__}: {err}") from err
    run_dir = Path(report["run_dir"])
    files = render(report, run_dir)
    logged = log_to_mlflow(report, run_dir, files)
    exit_code = report["verdict"]["exit_code"]
    v = report["verdict"]
    click.echo(f"{report['name']}: {v['decision']}")
    click.echo(v["message"])
    for line in attack_lines(report):
        click.echo(f"  {line}")
    from audit.report.fields import attack_warnings

    for message in attack_warnings(report):
        _warn(message)
    if config.gate.model_name:
        from audit.tracking import gate_model as gate

        try:
            result = gate(
                report,
                tracking_uri=config.mlflow.tracking_uri or None,
                model_name=config.gate.model_name,
                version=config.gate.version or None,
                alias=config.gate.alias,
                run_id=getattr(logged, "run_id", None),
            )
        except InputError:
            raise
        except Exception as err:
            raise RuntimeFailure(f"gate failed: {type(err).__name__}: {err}") from err
        click.echo(_gate_line(result))
    click.echo(f"report: {run_dir / 'report.json'}")
    return exit_code
