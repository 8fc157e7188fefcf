"""Output paths of the subcommands, checked before any work."""

from __future__ import annotations

from pathlib import Path

from audit.errors import InputError


def output_file(option: str, path: str, kind: str) -> Path:
    """``path`` as a file to write: refused when it is a directory or its directory is missing."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option}: {path!r} is a directory; expected the path of a {kind} file")
    if not p.parent.is_dir():
        raise InputError(f"{option}: directory {str(p.parent)!r} does not exist")
    return p
