"""``dpaudit gate CONFIG.toml --model-name NAME``: audit, then tag the registry's model version."""

from __future__ import annotations

import click

from audit.cli._audit import execute


@click.command(name="gate")
@click.argument("config_path", metavar="CONFIG.toml")
@click.option("--model-name", default=None, help="Registered model to gate (default: [gate] model_name).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--resume", is_flag=True, help="Continue a killed run in the same output_dir.")
@click.option("--no-progress", is_flag=True)
def command(config_path: str, model_name: str | None, overrides: tuple[str, ...], resume: bool, no_progress: bool) -> int:
    """Audit, then set dp_audit.* tags on the model version and the alias only on a pass.

    Exit 0 when the gate passes, 1 when it fails (CI blocks the release), 2 bad input, 3 failure.
    """
    from audit.config import load_config

    if not (model_name or load_config(config_path, overrides).gate.model_name):
        raise click.UsageError("no model to gate: pass --model-name or set [gate] model_name")
    return execute(config_path, overrides, resume=resume, progress=not no_progress, gate_model=model_name)
