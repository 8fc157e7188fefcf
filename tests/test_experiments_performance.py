"""Smoke test of experiments/performance.py on a tiny setting: every part runs in its
own process and reports its peak RSS; --quick prints and writes nothing; the full path
writes the Markdown and JSON (the figures themselves are in
experiments/results/performance.md, not asserted here)."""

from __future__ import annotations

import json

from experiments import performance as perf

TINY = perf.Setting(
    ks=(1,), widths=(20, 8, 5), n_records=400, batch=16, bench_rounds=1, bench_examples_per_round=64,
    hooks_models=1, rss_steps=1, rss_methods=("data", "fast"),
    lira_data="fair", lira_n=None, lira_population=50, lira_test=50, lira_widths=(4,), lira_models=5,
    lira_canaries=20, lira_epochs=1.0, lira_batch=64,
    wb_data="fair", wb_n=600, wb_test=50, wb_model="logreg", wb_widths=(), wb_canaries=20, wb_epochs=1.0,
    wb_batch=64, wb_repeats=1, threads=1,
)


def test_quick_prints_every_section_and_full_run_writes_files(monkeypatch, capsys, tmp_path):
    results = []
    real_run = perf.run
    monkeypatch.setattr(perf, "run", lambda s: results.append(real_run(s)) or results[-1])
    monkeypatch.setattr(perf, "QUICK", TINY)
    monkeypatch.setattr(perf, "RESULTS", tmp_path)
    assert perf.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for heading in ("## 1. Fast trainer", "## 2. LiRA", "## 3. Overhead", "## 4. Peak memory", "2 shared CPU cores"):
        assert heading in out
    assert list(tmp_path.iterdir()) == []  # --quick writes nothing

    res = results[0]
    row = res["trainers"][1]
    assert row["fast_examples_per_s"] > 0 and row["speedup_vs_documented_ghost"] > 0
    assert set(row["peak_rss_mib"]) == {"data", "fast"}
    assert all(v > 50 for v in row["peak_rss_mib"].values())  # MiB: an interpreter with torch
    assert set(res["lira"]["timings"]) >= {"data_s", "train_s", "attacks_s", "stats_s"}
    summary = res["overhead"]["summary"]
    assert summary["ratio_wall"] == summary["audit_wall_s"] / summary["plain_wall_s"]
    assert res["overhead"]["runs"]["plain_dp"][0]["steps"] > 0

    monkeypatch.setattr(perf, "run", lambda s: res)
    assert perf.main([]) == 0
    md = (tmp_path / "performance.md").read_text()
    assert "python -m experiments.performance" in md and "2 shared CPU cores" in md
    assert json.loads((tmp_path / "performance.json").read_text())["setting"]["ks"] == [1]
