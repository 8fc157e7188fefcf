"""Smoke test of ``python -m experiments.bench_executors --quick``."""

import pytest

pytest.importorskip("ray")

from experiments import bench_executors  # noqa: E402


def test_quick_times_both_executors_and_states_the_caveat(tmp_path, capsys):
    assert bench_executors.main(["--quick", "--out", str(tmp_path)]) == 0  # 3 = observations differ
    # (times are printed to 3 significant digits, so none reads 0 on a fast machine)
    text = (tmp_path / "bench_executors.md").read_text()
    assert "python -m experiments.bench_executors --quick" in text
    assert "bit-identical to the in-process run in every Ray audit: yes" in text
    assert "Ray start-up" in text and "`executor.address` pointing at a cluster" in text
    for row in ("| in-process", "| Ray, cold workers", "| Ray, warm workers"):
        line = next(l for l in text.splitlines() if l.startswith(row))  # noqa: E741
        seconds = [float(x) for x in line.split("|")[2:5]]
        assert all(s > 0 for s in seconds)


def test_the_full_preset_is_the_issues_16_models():
    assert bench_executors.FULL.models == 16 and bench_executors.FULL.ray_cpus == 2
