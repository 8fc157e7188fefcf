"""Read a ``report.json`` written by an audit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from audit.errors import InputError
from audit.report.fields import SCHEMA

REPORT_FILE = "report.json"


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """The report dict in ``path``: a ``report.json`` file, or a run directory holding one.

    Raises:
      InputError: the file is missing or unreadable, is not JSON, is not a JSON object,
        or its ``schema`` is not ``"dpaudit.report/1"``.
    """
    path = Path(path)
    file = path / REPORT_FILE if path.is_dir() else path
    try:
        raw = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"report: no such file: {file}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"report: cannot read {file}: {err}") from None
    try:
        report = json.loads(raw)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}: {err.msg}"
        raise InputError(f"report: {file} is not valid JSON ({where})") from None
    if not isinstance(report, dict):
        raise InputError(f"report: {file} holds a JSON {type(report).__name__}, expected an object")
    schema = report.get("schema")
    if schema != SCHEMA:
        raise InputError(f"report: {file} has schema {schema!r}, expected {SCHEMA!r}")
    return report
