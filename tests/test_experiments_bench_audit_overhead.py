"""Smoke test of ``python -m experiments.bench_audit_overhead --quick --json``.

Timing goals (audited / plain <= 1.1) are checked by the benchmark, not here: a test on a
shared machine would flake.
"""

import json
import math

from experiments import bench_audit_overhead


def test_quick_json_reports_a_ratio_per_model(capsys):
    assert bench_audit_overhead.main(["--quick", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    payload = json.loads(lines[-1])
    overhead = payload["overhead"]
    assert set(overhead) == {"mlp", "cnn", "transformer"}
    for ratio in overhead.values():
        assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
    rows = {m["model"]: m for m in payload["models"]}
    for name, m in rows.items():
        assert m["params"] > 0 and m["plain_s"] > 0 and m["audited_s"] > 0 and m["finish_s"] > 0
        assert math.isclose(m["ratio"], m["audited_s"] / m["plain_s"])
        assert m["padded_s"] > 0 and math.isfinite(m["padded_ratio"]) and m["padded_ratio"] > 0
        assert math.isfinite(m["cpu_ratio"]) and m["cpu_ratio"] > 0
        assert len(m["padded_rounds"]) == len(m["plain_rounds"]) == payload["config"]["rounds"]
        assert m["ratio"] == overhead[name]
    assert "| mlp |" in "\n".join(lines[:-1])  # the markdown table precedes the JSON line


def test_the_full_preset_has_the_issues_scale():
    cfg = bench_audit_overhead.FULL
    assert cfg.canaries == 1000 and 64 <= cfg.batch_size <= 256 and cfg.rounds >= 3
