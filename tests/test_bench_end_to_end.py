"""Smoke test of experiments/bench_end_to_end.py: ``--quick --json`` runs the tiny setting
in one process and prints one JSON object on its last stdout line with the ratios, stage
times and peak memory of each audit (the figures themselves are in
experiments/results/bench_end_to_end.md, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from experiments import bench_end_to_end as bench

ROOT = Path(__file__).resolve().parent.parent


def test_quick_json_reports_ratios_stages_and_memory(tmp_path):
    before = sorted(p.name for p in bench.RESULTS.iterdir())
    proc = subprocess.run([sys.executable, "-m", "experiments.bench_end_to_end", "--quick", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(res) >= {"setting", "matmul_peak_gflops", "matmul_peak_before_gflops", "matmul_peak_after_gflops",
                        "audits", "privacy_meter_s", "load_average_start", "load_average_end", "machine", "total_s",
                        "train_threads", "train_workers"}
    assert res["matmul_peak_gflops"] == max(res["matmul_peak_before_gflops"], res["matmul_peak_after_gflops"]) > 0
    assert [(a["models"], a["private"]) for a in res["audits"]] == (
        [(k, False) for k in bench.QUICK.models] + [(k, True) for k in bench.QUICK.dp_models])
    for a in res["audits"]:
        assert set(a["timings"]) == {"data_s", "train_s", "attacks_s", "stats_s"}
        assert set(a) >= {"wall_s", "matmul_bound_s", "ratio_wall_to_bound", "ratio_train_to_bound",
                          "train_fraction_of_peak", "analysis_share",
                          "goal_ratio_met", "goal_analysis_met",
                          "peak_rss_mib", "observations_mib", "work", "attacks", "peak_above_start_mib",
                          "matmul_bound_needed_s", "ratio_wall_to_needed_bound", "train_fraction_of_peak_needed",
                          "goal_ratio_needed_met", "goal_train_met", "goal_train_needed_met"}
        assert a["wall_s"] >= sum(a["timings"].values()) * 0.99
        assert a["ratio_wall_to_bound"] == a["wall_s"] / a["matmul_bound_s"]
        # the needed FLOPs (no input gradient at layer 1) against a naive count, and the goals
        d, h, c = 600, bench.QUICK.widths[0], 100
        assert a["work"]["flops_needed"] == a["work"]["examples"] * 2 * (2 * (d * h + h * c) + h * c)
        assert a["work"]["flops"] == a["work"]["examples"] * 6 * (d * h + h * c)
        assert a["ratio_wall_to_needed_bound"] > a["ratio_wall_to_bound"]
        assert a["goal_train_fraction"] == (0.45 if a["private"] else 0.60)
        assert a["goal_train_needed_met"] == (a["train_fraction_of_peak_needed"] >= a["goal_train_fraction"])
        assert a["work"]["examples"] == a["models"] * a["work"]["steps"] * bench.QUICK.batch
        assert a["train_threads"] == res["train_threads"] >= 1 and a["train_workers"] == res["train_workers"] >= 1
        assert a["peak_rss_mib"] > 50  # MiB: an interpreter with torch
        assert set(a["attacks"]) == set(bench.QUICK.attacks)
    assert sorted(p.name for p in bench.RESULTS.iterdir()) == before  # --quick writes nothing


def test_markdown_names_the_goals_and_the_load():
    res = bench.run(bench.QUICK)
    md = bench.markdown(res, quick=True)
    for text in ("wall / bound (goal 2.2x)", "attacks + stats share (goal 10%)", "load average", "peak RSS",
                 "--quick", "goal 60%, DP-SGD 45%", "| DP-SGD |", "needed FLOPs"):
        assert text in md


def test_threads_must_be_positive(capsys):
    import pytest

    from experiments import bench_end_to_end

    with pytest.raises(SystemExit) as exit_:
        bench_end_to_end.main(["--quick", "--threads", "0"])
    assert exit_.value.code == 2 and "--threads=0" in capsys.readouterr().err


def test_the_audits_train_on_the_threads_asked():
    from audit.config import parse_config
    from experiments import bench_end_to_end as b

    s = b.dataclasses.replace(b.QUICK, threads=2)
    assert parse_config(b.audit_tree(s, 5, b.Path("unused"))).executor.unit_threads == 2
