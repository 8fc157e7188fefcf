"""atomic_open: the file appears whole, and with the permissions a plain open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from audit.atomic import atomic_open


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_new_files_get_the_mode_open_gives(tmp_path):
    with atomic_open(tmp_path / "a.txt") as fh:
        fh.write("x")
    with open(tmp_path / "b.txt", "w") as fh:  # the reference: a plain open under this umask
        fh.write("x")
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.txt")  # 0o644 under umask 022, not 0o600


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("old")
    path.chmod(0o640)
    with atomic_open(path) as fh:
        fh.write("new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_a_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["d.txt"]
