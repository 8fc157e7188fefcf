"""Smoke test of ``experiments.false_alarms --quick`` and its bad-input exit code."""

import json

import pytest

from experiments import false_alarms

pytestmark = [pytest.mark.filterwarnings("ignore")]


def test_quick_counts_false_alarms_with_an_interval(tmp_path):
    assert false_alarms.main(["--quick", "--runs", "12", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "false_alarms.json").read_text())
    assert {r["config"] for r in data["rows"]} == set(false_alarms.CONFIGS)
    for r in data["rows"]:
        assert r["runs"] == 12 and 0 <= r["violations"] <= 12
        assert r["ci_low"] <= r["fraction"] <= r["ci_high"]
        assert r["bound_max"] <= r["power"] + 1e-9
    text = (tmp_path / "false_alarms.md").read_text()
    assert "--quick" in text and "2 shared CPU cores" in text and "Clopper-Pearson" in text


def test_summary_interval_and_p_value():
    runs = [{"decision": "VIOLATION" if i < 3 else "NO VIOLATION DETECTED", "bound": 0.1, "claimed": 1.0,
             "sigma": 1.0, "power": 4.0} for i in range(100)]
    r = false_alarms.summarise(1.0, "x", runs)
    assert r["violations"] == 3 and r["fraction"] == 0.03
    assert r["ci_low"] < 0.03 < r["ci_high"] and r["consistent"]
    assert 0.5 < r["p_value"] < 0.9  # P[Binomial(100, 0.05) >= 3] = 0.882
    many = false_alarms.summarise(1.0, "x", [{**runs[0]} for _ in range(40)])
    assert not many["consistent"] and many["p_value"] < 1e-10


def test_bad_runs_exits_2(capsys):
    assert false_alarms.main(["--runs", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
