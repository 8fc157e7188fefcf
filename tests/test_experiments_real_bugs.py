"""``experiments.real_bugs``: the quick run end to end, and the soundness of its test on identical worlds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import real_bugs as rb


def test_quick_run_writes_the_table(tmp_path):
    assert rb.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "real_bugs.json").read_text())
    text = (tmp_path / "real_bugs.md").read_text()
    rows = result["rows"]
    assert {r["bug"] for r in rows} == set(rb.QUICK.cases)
    for r in rows:
        assert r["decision"] in ("VIOLATION", "NO VIOLATION DETECTED", "INCONCLUSIVE")
        assert 0.0 <= r["bound"] <= r["ceiling"] + 1e-9
        assert r["tp"] + r["fn"] == r["fp"] + r["tn"] == r["runs"]
        if r["correct"]:
            assert r["decision"] != "VIOLATION", r
    caught = {r["bug"] for r in rows if not r["correct"] and r["decision"] == "VIOLATION"}
    # bugs whose leak is far above the claim even with the quick run's few runs
    assert {"opacus-813", "shuffle-as-poisson"} <= caught
    assert any(r["bug"] == "opacus-571" and "installed Opacus" in r["implementation"] for r in rows)
    assert "data-pipeline canaries" in text and "pending" not in text and "not applicable" in text
    assert "python -m experiments.real_bugs --quick" in text


def test_the_data_pipeline_column_counts_the_saved_runs(tmp_path):
    """The column is read from pipeline_canaries' saved runs, one flag count per claimed epsilon."""
    runs = [{"variant": "weighted", "claimed_epsilon": 1.0, "verdict": v} for v in ("VIOLATION", "NO VIOLATION DETECTED")]
    runs += [{"variant": "shuffled", "claimed_epsilon": 2.0, "verdict": "NO VIOLATION DETECTED"}]
    (tmp_path / "pipeline_canaries.json").write_text(json.dumps({"design": {"canaries": 50}, "rows": runs}))
    cells = rb.pipeline_canary_cells(tmp_path)
    assert cells["opacus-813"].startswith("**caught** in one run") and "m = 50: ε 1: 1/2" in cells["opacus-813"]
    assert cells["shuffle-as-poisson"].startswith("not caught in one run") and "ε 2: 0/1" in cells["shuffle-as-poisson"]
    assert cells["opacus-571"].startswith("not run")
    assert rb.pipeline_canary_cells(tmp_path / "empty")["opacus-813"].startswith("not run yet")


def test_choose_test_is_sound_on_identical_worlds():
    """With no difference between the worlds, the bound at the pilot's threshold stays near 0."""
    rng = np.random.default_rng(0)
    pilot = [{"a": rng.standard_normal(5000), "b": rng.random(5000)} for _ in range(2)]
    test = rb.choose_test(*pilot)
    final = [{"a": rng.standard_normal(20000), "b": rng.random(20000)} for _ in range(2)]
    row = rb.count_row(test, final[0], final[1], claimed=1.0)
    assert row["bound"] < 0.3
    assert row["decision"] == "NO VIOLATION DETECTED"


def test_choose_test_finds_a_shift():
    rng = np.random.default_rng(1)
    w0 = {"x": rng.standard_normal(20000)}
    w1 = {"x": rng.standard_normal(20000) - 4.0}  # lower in world 1
    test = rb.choose_test(w0, w1)
    assert test.statistic == "x" and test.sign == -1.0
    row = rb.count_row(test, {"x": rng.standard_normal(50000)}, {"x": rng.standard_normal(50000) - 4.0}, claimed=1.0)
    assert row["decision"] == "VIOLATION" and row["bound"] > 4.0


@pytest.mark.parametrize("bound,ceiling,claimed,expected", [
    (2.0, 8.0, 1.0, "VIOLATION"), (0.5, 8.0, 1.0, "NO VIOLATION DETECTED"), (0.5, 0.9, 1.0, "INCONCLUSIVE"),
    (1.0, 8.0, 1.0, "NO VIOLATION DETECTED")])
def test_decide(bound, ceiling, claimed, expected):
    assert rb.decide(bound, ceiling, claimed) == expected
