"""The ``dpaudit`` command line. Thin: parse, call, print, exit code.

Exit codes (ARCHITECTURE.md): 0 no violation / gate passed, 1 violation / gate failed,
2 bad input, 3 runtime failure. Bad input prints exactly one line on stderr.

Each subcommand lives in its own module under ``audit.cli`` and exposes a click
command or group named ``command``; add the module name to ``_SUBCOMMANDS``.
Modules import heavy packages (torch, mlflow) inside their functions, so that
``dpaudit bound`` starts fast.
"""

from __future__ import annotations

import importlib
import sys

import click

from audit.errors import InputError

EXIT_OK, EXIT_VIOLATION, EXIT_BAD_INPUT, EXIT_RUNTIME = 0, 1, 2, 3

_SUBCOMMANDS = ("bound", "attack", "evaluate", "run", "gate", "report", "export", "simulate")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dpaudit")
def cli() -> None:
    """dpaudit: audit differential privacy with membership-inference attacks."""


for _name in _SUBCOMMANDS:
    cli.add_command(importlib.import_module(f"audit.cli.{_name}").command)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dpaudit`` console script; returns the exit code."""
    try:
        result = cli.main(args=argv, prog_name="dpaudit", standalone_mode=False)
    except (InputError, click.ClickException) as err:  # click's usage errors included
        text = err.format_message() if isinstance(err, click.ClickException) else str(err)
        kind = "failure" if getattr(err, "exit_code", None) == EXIT_RUNTIME else "error"
        print(f"dpaudit: {kind}: {_one_line(text)}", file=sys.stderr)
        return EXIT_RUNTIME if getattr(err, "exit_code", None) == EXIT_RUNTIME else EXIT_BAD_INPUT
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("dpaudit: interrupted; finished work is kept (rerun with --resume)", file=sys.stderr)
        return 130
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
