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


def test_scores_all_members_refused(tmp_path, capsys):
    # Standard-normal scores, every canary a member: the one-run theorem does not apply
    # (it needs each canary included with probability 1/2); it used to print 3.90, exit 0.
    from scipy import stats

    scores = stats.norm.ppf((np.arange(1000) + 0.5) / 1000)
    path = _npz(tmp_path, "all.npz", scores=scores, members=np.ones(1000, bool))
    assert main(["bound", "scores", "--scores", path, "--delta", "1e-5"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    err = out.err.strip().splitlines()
    assert len(err) == 1 and "1000 of 1000 canaries are members" in err[0]


ACCOUNTANT = ["bound", "accountant", "--noise-multiplier", "1", "--sample-rate", "0.0256", "--steps", "1170", "--delta", "1e-5"]


def _with(args, option, value):
    args = list(args)
    args[args.index(option) + 1] = value
    return args


@pytest.mark.parametrize(
    "option, value, named",
    [
        ("--noise-multiplier", "1e300", "noise_multiplier=1e+300"),  # was: OverflowError traceback
        ("--noise-multiplier", "1e-160", "noise_multiplier=1e-160"),  # was: Opacus' RDP series looped forever
        ("--steps", "1000000000000", "steps=1000000000000"),  # was: PRV traceback
        ("--steps", "10000000", "steps=10000000"),  # was: PRV past 23 GB
    ],
)
def test_accountant_extremes_via_console_script(option, value, named):
    out = subprocess.run(DPAUDIT + _with(ACCOUNTANT, option, value), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in out.stderr


NUMBERS = {
    "--noise-multiplier": ["0", "-1", "1e-200", "1e-160", "1e-9", "0.1", "1e6", "1e100", "1e300", "1e400", "inf", "-inf", "nan"],
    "--sample-rate": ["0", "-0.1", "1e-320", "1e-300", "1", "1.5", "inf", "nan"],
    "--steps": ["0", "-5", "1", "10000000", "1000000000000", "1" + "0" * 18, "1" + "0" * 400],
    "--delta": ["0", "1e-320", "1e-100", "0.5", "0.9", "1", "-1", "inf", "nan"],
}


@pytest.mark.parametrize("accountant", ["prv", "rdp", "gdp"])
@pytest.mark.parametrize("option, value", [(o, v) for o, vs in NUMBERS.items() for v in vs])
def test_accountant_never_a_traceback(capsys, accountant, option, value):
    base = _with(ACCOUNTANT, "--steps", "10") if option != "--steps" else ACCOUNTANT  # keeps q = 1 with prv quick
    code = main(_with(base, option, value) + ["--accountant", accountant, "--json"])
    out = capsys.readouterr()
    assert code in (0, 2), (code, out.err)
    if code == 0:
        epsilon = json.loads(out.out)["epsilon"]
        assert epsilon == "inf" or epsilon >= 0
    else:
        lines = out.err.strip().splitlines()
        assert out.out == "" and len(lines) == 1 and lines[0].startswith("dpaudit: error: ")


def test_accountant_prv_grid_message(capsys):
    assert main(_with(ACCOUNTANT, "--steps", "1000000")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps=1000000" in err[0] and "grid" in err[0] and "rdp" in err[0]


@pytest.mark.parametrize("args, named", [
    (["one-run", "--canaries", "1000000000000", "--guesses", "1000000000000", "--correct", "999999999999"], "canaries"),
    (["counts", "--tp", "1" + "0" * 400, "--fn", "1", "--fp", "1", "--tn", "1"], "tp"),
])
def test_huge_counts_are_refused_in_one_line(capsys, args, named):
    """Before: a 7.28 TiB allocation (one-run) and an OverflowError (counts), with tracebacks."""
    from audit.cli import main

    assert main(["bound", *args, "--delta", "1e-5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


def _simulated(tmp_path, name, factor):
    """A simulated white-box run claiming epsilon 8 (q = 0.01, T = 1000); ``factor`` scales the noise."""
    assert main(["simulate", str(tmp_path / name), "--epsilon", "8", "--noise-factor", str(factor)]) == 0
    return str(tmp_path / name)


CLAIM = ["--noise-multiplier", "0.587", "--sample-rate", "0.01", "--steps", "1000"]


def test_scores_with_the_claimed_curve(tmp_path, capsys):
    """half_noise at a claimed epsilon of 8: the one-run (epsilon, delta) bound cannot
    reach 8, the test of the claimed curve rejects it; the correct run is not rejected."""
    ok, bug = _simulated(tmp_path, "ok.npz", 1.0), _simulated(tmp_path, "bug.npz", 0.5)
    capsys.readouterr()
    results = {}
    for name, path in (("ok", ok), ("bug", bug)):
        assert main(["bound", "scores", "--scores", path, "--delta", "1e-5", *CLAIM, "--json"]) == 0
        results[name] = json.loads(capsys.readouterr().out)
    assert not results["ok"]["claim_rejected"] and results["ok"]["claim_p_value"] > 0.05
    assert results["bug"]["claim_rejected"] and results["bug"]["claim_p_value"] <= 0.05
    assert results["bug"]["epsilon_lower_bound"] < 8
    assert "sigma=0.587" in results["bug"]["claim_test"]["claim"] and results["bug"]["claim_test"]["testable"]
    # the effective noise of the half-noise run: below the claimed 0.587, epsilon above the claimed 8
    assert results["bug"]["effective_noise_multiplier"] < 0.587 and results["bug"]["effective_epsilon"] > 8
    assert "assumes the implementation is DP-SGD" in results["bug"]["effective"]["assumption"]


def test_scores_with_the_claimed_curve_human_output(tmp_path, capsys):
    bug = _simulated(tmp_path, "bug.npz", 0.5)
    capsys.readouterr()
    assert main(["bound", "scores", "--scores", bug, "--delta", "1e-5", *CLAIM]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    claim_line = next(line for line in lines if line.startswith("claimed privacy curve"))
    effective_line = next(line for line in lines if line.startswith("effective noise"))
    counts_line = next(line for line in lines if line.startswith("counts test of the claimed curve"))
    assert claim_line.startswith("claimed privacy curve (DP-SGD sigma=0.587") and "REJECTED" in claim_line
    assert effective_line.startswith("effective noise: behaves as if it added less noise than sigma = 0.5")
    assert "valid only if each entry is an independent run" in counts_line


def test_scores_without_a_claim_is_unchanged(tmp_path, capsys):
    ok = _simulated(tmp_path, "ok.npz", 1.0)
    capsys.readouterr()
    assert main(["bound", "scores", "--scores", ok, "--delta", "1e-5", "--json"]) == 0
    keys = {"claim_rejected", "claim_p_value", "claim_test", "effective_noise_multiplier", "effective_epsilon", "effective",
            "counts_claim_test"}
    assert not keys & set(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize("partial", [CLAIM[:2], CLAIM[2:], CLAIM[:4]])
def test_scores_claim_needs_all_three(tmp_path, capsys, partial):
    ok = _simulated(tmp_path, "ok.npz", 1.0)
    capsys.readouterr()
    assert main(["bound", "scores", "--scores", ok, "--delta", "1e-5", *partial]) == 2
    err = capsys.readouterr().err
    assert "give all three" in err and len(err.strip().splitlines()) == 1


def test_counts_with_the_claimed_curve(capsys):
    """One Gaussian step claimed at sigma = 1 (mu = 1); counts of a test with both error rates
    at 10% refute it (mu about 2.3), and the effective noise says so."""
    args = ["bound", "counts", "--tp", "900", "--fn", "100", "--fp", "100", "--tn", "900", "--delta", "1e-5"]
    assert main([*args, "--noise-multiplier", "1", "--sample-rate", "1", "--steps", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["claim_rejected"] and out["claim_p_value"] < 1e-10 and out["claim_test"]["testable"]
    assert 0.42 < out["effective_noise_multiplier"] < 0.45 and out["effective_epsilon"] > out["epsilon_lower_bound"]
    assert main([*args, "--json"]) == 0
    assert "claim_rejected" not in json.loads(capsys.readouterr().out)
    assert main([*args, "--steps", "1"]) == 2
