"""``dpaudit run CONFIG.toml``: one config -> audit -> verdict, report, MLflow."""

from __future__ import annotations

import click

from audit.cli._audit import execute


@click.command(name="run")
@click.argument("config_path", metavar="CONFIG.toml")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field, e.g. audit.models=16.")
@click.option("--resume", is_flag=True, help="Continue a killed run in the same output_dir without redoing finished models.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Where black-box models are trained (default: [executor] kind); ray needs the ray extra.")
def command(config_path: str, overrides: tuple[str, ...], resume: bool, no_progress: bool, executor: str | None) -> int:
    """Audit as CONFIG.toml says; exit 0 no violation / gate passed, 1 violation / gate failed."""
    if executor is not None:  # the flag wins over any --set of the same field
        overrides = (*overrides, f"executor.kind={executor}")
    return execute(config_path, overrides, resume=resume, progress=not no_progress)
