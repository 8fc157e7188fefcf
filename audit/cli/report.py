"""``dpaudit report RUN_DIR...``: render one run, or compare several side by side."""

from __future__ import annotations

from pathlib import Path

import click

from audit.errors import InputError


def _check_out_dir(out: str) -> None:
    """The comparison is a directory: refuse a file there, or a file where a parent would be."""
    path = Path(out)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise InputError(f"--out: {str(existing)!r} is a file; expected a directory for the comparison")
            return


@click.command(name="report")
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--out", default=None, help="Where a comparison of several runs is written (default: ./comparison).")
@click.option("--log-to-mlflow", is_flag=True, help="Upload the run(s) to MLflow (e.g. after the server was down).")
@click.option("--tracking-uri", default=None, help="Upload here instead of the run's configured tracking URI.")
def command(run_dirs: tuple[str, ...], out: str | None, log_to_mlflow: bool, tracking_uri: str | None) -> int:
    """Render the human report of each RUN_DIR and print a summary table."""
    from audit.report import compare_reports, load_report, render_report, summary_table

    if out is not None or len(run_dirs) > 1:
        _check_out_dir(out or "comparison")
    reports = [load_report(d) for d in run_dirs]
    for d, report in zip(run_dirs, reports):
        render_report(report, Path(d))
    if len(reports) > 1:
        out_dir = Path(out or "comparison")
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in compare_reports(reports, out_dir):
            click.echo(f"wrote {path}")
    click.echo(summary_table(reports))
    if log_to_mlflow:
        from audit.tracking import upload_report

        for d, report in zip(run_dirs, reports):
            cfg = report["config"]["mlflow"]
            uri = tracking_uri or cfg["tracking_uri"] or None
            result = upload_report(Path(d), tracking_uri=uri, experiment=cfg["experiment"])
            if not result.ok:
                click.echo(f"dpaudit: failure: {d}: not logged: {result.warning}", err=True)
                return 3
            click.echo(f"{d}: logged to MLflow run {result.run_id} at {result.tracking_uri}")
    return 0
