"""The benchmark script's plumbing on a tiny configuration (the figures themselves are
in experiments/results/bench_trainers.md, not asserted here)."""

from __future__ import annotations

import json

import pytest
import torch

from experiments import bench_trainers as bench

TINY = bench.BenchConfig(
    n_models=2, widths=(20, 8, 5), n_records=200, expected_batch_size=16, rounds=2,
    fast_steps=2, hooks_steps=1, hooks_models=1, ghost_steps=1, threads=1,
)


def test_synthetic_purchase():
    x, y = bench.synthetic_purchase(3000, 600, 100, torch.Generator().manual_seed(0))
    assert x.shape == (3000, 600) and set(x.unique().tolist()) == {0.0, 1.0}
    assert y.min() >= 0 and y.max() < 100
    # two records of one class differ in a bit with probability 2 * 0.1 * 0.9
    fracs = []
    for c in range(100):
        s = x[y == c]
        fracs.append((torch.cdist(s, s, p=1) / 600).sum() / (len(s) * (len(s) - 1)))
    assert abs(torch.stack(fracs).mean() - 0.18) < 0.005
    # records of different classes differ in about half the bits
    assert abs((x[y == 0][0] != x[y == 1][0]).float().mean() - 0.5) < 0.1


def test_quick_json_prints_one_object(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "QUICK", TINY)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    assert bench.main(["--quick", "--json"]) == 0
    out = capsys.readouterr().out
    payload = json.loads(out)
    for key in ("speedup_vs_opacus_hooks_loop", "speedup_vs_opacus_ghost_loop", "fraction_of_matmul_peak",
                "fast_examples_per_s", "opacus_hooks_loop_examples_per_s", "opacus_ghost_loop_examples_per_s"):
        assert payload[key] > 0
    assert payload["speedup_vs_opacus_ghost_loop"] == pytest.approx(
        payload["fast_examples_per_s"] / payload["opacus_ghost_loop_examples_per_s"]
    )
    assert list(tmp_path.iterdir()) == []  # --quick writes nothing


def test_full_run_writes_markdown_and_json(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "FULL", TINY)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    assert bench.main([]) == 0
    md = (tmp_path / "bench_trainers.md").read_text()
    assert "2 CPU cores" in md and "python -m experiments.bench_trainers" in md
    assert json.loads((tmp_path / "bench_trainers.json").read_text())["config"]["n_models"] == 2
