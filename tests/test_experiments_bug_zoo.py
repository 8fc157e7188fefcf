"""Smoke test of ``experiments.bug_zoo --quick`` and checks of its shared helpers (experiments.zoo_audit)."""

import json

import numpy as np
import pytest

from experiments import bug_zoo
from experiments import zoo_audit as za

pytestmark = [pytest.mark.filterwarnings("ignore")]


def test_quick_flags_the_bugs_and_never_the_correct_trainers(tmp_path):
    assert bug_zoo.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "bug_zoo.md").read_text()
    data = json.loads((tmp_path / "bug_zoo.json").read_text())
    rows = data["opacus"] + data["fast"] + data["multi"]
    assert data["command"] == "python -m experiments.bug_zoo --quick" and "2 shared CPU cores" in text
    for r in rows:
        assert 0.0 <= r["bound"] <= r["power"] + 1e-9
        assert (r["decision"] == "VIOLATION") == (r["bound"] > r["claimed"])
        if r["variant"] == "correct":
            assert r["decision"] == "NO VIOLATION DETECTED"
    # no clipping is seen by the one-run white-box audit in both trainers; the realised-batch
    # normalisation only by the multi-run probes; reused noise only by the spread statistic
    by = {(r["trainer"], r["variant"], "multi" if r in data["multi"] else "one"): r for r in rows}
    assert by["opacus", "no_clipping", "one"]["decision"] == "VIOLATION"
    assert by["fast", "no_clipping", "one"]["decision"] == "VIOLATION"
    assert by["fast", "actual_batch_normalisation", "multi"]["decision"] == "VIOLATION"
    assert by["fast", "actual_batch_normalisation", "multi"]["statistic"] == "probe-scale"
    reused = by["fast", "reused_noise", "one"]["per_statistic"]
    assert reused["spread"] > reused["likelihood-ratio"]
    assert "| `correct` | fast, opacus | no (correct) |" in text
    # the table is a rendering of the JSON: re-rendering gives the same file
    assert bug_zoo.main(["--render", str(tmp_path / "bug_zoo.json")]) == 0
    assert (tmp_path / "bug_zoo.md").read_text() == text


def test_verdict_of_reaches_the_power_on_perfect_scores_and_nothing_on_noise():
    members = np.arange(1000) % 2 == 0
    perfect = za.verdict_of({"s": members.astype(float) + np.arange(1000) * 1e-6}, members, 1.0)
    assert perfect["decision"] == "VIOLATION" and perfect["bound"] == pytest.approx(perfect["power"], abs=0.5)
    noise = za.verdict_of({"s": np.random.default_rng(0).normal(size=1000)}, members, 1.0)
    assert noise["decision"] == "NO VIOLATION DETECTED" and noise["bound"] < 0.5


def test_best_threshold_separates_and_is_a_score_value():
    members = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    scores = np.r_[np.full(200, 2.0), np.zeros(200)] + np.linspace(0, 0.1, 400)
    t, b = za.best_threshold(scores, members)
    assert 0.1 < t <= 2.1 and b > 3.0


def test_render_rewrites_the_table_from_the_json(tmp_path):
    assert bug_zoo.main(["--render", str(tmp_path / "missing.json")]) == 2
    bad = tmp_path / "bug_zoo.json"
    bad.write_text("{}")
    assert bug_zoo.main(["--render", str(bad)]) == 2


def test_run_cache_resumes_and_shares_the_file(tmp_path):
    path = tmp_path / "runs.jsonl"
    calls = []

    def compute(value):
        calls.append(value)
        return {"value": value}

    first = bug_zoo.RunCache(path)
    assert first.row({"cell": 1}, lambda: compute(1))["value"] == 1
    assert first.row({"cell": 1}, lambda: compute(99))["value"] == 1  # cached: not computed again
    second = bug_zoo.RunCache(path)  # a resumed run, or a second process on the same file
    assert second.row({"cell": 1}, lambda: compute(99))["value"] == 1
    assert second.row({"cell": 2}, lambda: compute(2))["value"] == 2
    assert first.row({"cell": 2}, lambda: compute(99))["value"] == 2  # finished by the other: re-read, not re-run
    assert calls == [1, 2] and len(path.read_text().splitlines()) == 2
    assert bug_zoo.RunCache(None).row({"cell": 1}, lambda: compute(3))["value"] == 3 and not (tmp_path / "None").exists()
    with open(path, "a") as handle:  # a kill in the middle of a line: that audit is run again, the others kept
        handle.write('{"key": {"cell": 3}, "row": {"val')
    third = bug_zoo.RunCache(path)
    assert third.row({"cell": 1}, lambda: compute(99))["value"] == 1
    assert third.row({"cell": 3}, lambda: compute(3))["value"] == 3 and calls == [1, 2, 3, 3]
    assert bug_zoo.RunCache(path).row({"cell": 3}, lambda: compute(99))["value"] == 3  # written on a line of its own
