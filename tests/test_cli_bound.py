"""``dpaudit bound``: reference values through the console script, JSON shape, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit.cli import main

DPAUDIT = [str(Path(sys.executable).with_name("dpaudit"))]


def run(args):
    return subprocess.run(DPAUDIT + args, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "default"})


def test_one_run_reference_value_json_via_console_script():
    out = run(["bound", "one-run", "--canaries", "10000", "--guesses", "1000", "--correct", "900", "--delta", "1e-5", "--json"])
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)  # exactly one JSON object
    assert round(payload["epsilon_lower_bound"], 4) == 2.0152
    assert payload["confidence"] == 0.95 and payload["method"] == "one-run" and payload["kind"] == "bound"
    assert payload["inputs"] == {"canaries": 10000, "guesses": 1000, "correct": 900}


@pytest.mark.parametrize("name, expected", [("rdp", 6.13), ("prv", 5.58), ("gdp", 5.14)])
def test_accountant_reference_values(capsys, name, expected):
    args = ["bound", "accountant", "--noise-multiplier", "1", "--sample-rate", "0.0256", "--steps", "1170", "--delta", "1e-5"]
    assert main(args + ["--accountant", name, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["epsilon"] == pytest.approx(expected, abs=0.005)
    assert payload["accountant"] == name


def test_counts_human_output(capsys):
    assert main(["bound", "counts", "--tp", "900", "--fn", "100", "--fp", "100", "--tn", "900", "--delta", "1e-5"]) == 0
    assert capsys.readouterr().out.startswith("epsilon lower bound: 1.9897")


def test_counts_jeffreys_is_an_estimate(capsys):
    assert main(["bound", "counts", "--tp", "900", "--fn", "100", "--fp", "100", "--tn", "900", "--delta", "1e-5", "--method", "jeffreys", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["kind"] == "estimate" and "epsilon_estimate" in payload


def test_scores_json(tmp_path, capsys):
    rng = np.random.default_rng(7)
    members = rng.random(3000) < 0.5
    path = tmp_path / "s.npz"
    np.savez(path, scores=rng.normal(size=3000) + 2 * members, members=members)
    assert main(["bound", "scores", "--scores", str(path), "--delta", "1e-5", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["epsilon_lower_bound"] > 1.0
    assert payload["counts_bound"]["epsilon_lower_bound"] > 0.5
    assert payload["details"]["power"] > payload["epsilon_lower_bound"]


def test_scores_ties_give_zero(tmp_path, capsys):
    path = tmp_path / "t.npz"
    members = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    np.savez(path, scores=np.ones(1000), members=members)
    assert main(["bound", "scores", "--scores", str(path), "--delta", "1e-5", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["epsilon_lower_bound"] == 0.0
    assert payload["counts_bound"]["epsilon_lower_bound"] == 0.0


def _npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


BAD = [
    (["bound", "counts", "--tp", "-3", "--fn", "1", "--fp", "1", "--tn", "1", "--delta", "0"], "tp=-3"),
    (["bound", "one-run", "--canaries", "100", "--guesses", "10", "--correct", "11", "--delta", "0"], "correct=11"),
    (["bound", "one-run", "--canaries", "100", "--guesses", "101", "--correct", "11", "--delta", "0"], "guesses=101"),
    (["bound", "one-run", "--canaries", "100", "--guesses", "10", "--correct", "1", "--delta", "1"], "delta=1.0"),
    (["bound", "one-run", "--canaries", "100", "--guesses", "10", "--correct", "1", "--delta", "0", "--confidence", "1.2"], "confidence=1.2"),
    (["bound", "one-run", "--canaries", "100", "--guesses", "ten", "--correct", "1", "--delta", "0"], "--guesses"),
    (["bound", "scores", "--scores", "/no/such.npz", "--delta", "0"], "/no/such.npz"),
    (["bound", "accountant", "--noise-multiplier", "0", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5"], "noise_multiplier"),
]


@pytest.mark.parametrize("args, named", BAD)
def test_bad_input_one_line_exit_2(args, named):
    out = run(args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "arrays, named",
    [
        (dict(scores=np.zeros(3)), "members"),
        (dict(scores=np.r_[np.nan, 1.0], members=np.array([True, False])), "NaN"),
        (dict(scores=np.zeros(3), members=np.array([True, False])), "equal lengths"),
    ],
)
def test_bad_npz(tmp_path, capsys, arrays, named):
    path = _npz(tmp_path, "bad.npz", **arrays)
    assert main(["bound", "scores", "--scores", path, "--delta", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


def test_malformed_and_pickled_npz(tmp_path, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    assert main(["bound", "scores", "--scores", str(junk), "--delta", "0"]) == 2
    pickled = tmp_path / "p.npz"
    np.savez(pickled, scores=np.array([object(), 1], dtype=object), members=np.array([True, False]))
    assert main(["bound", "scores", "--scores", str(pickled), "--delta", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2  # one line per failure
    assert "not an .npz archive" in err[0] and "pickled" in err[1]
