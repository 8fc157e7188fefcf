"""``dpaudit simulate``: a correct claim is not contradicted, a planted bug is; the output
directory is created; bad input exits 2 before anything is written."""

import numpy as np
import pytest

from audit.cli import main
from audit.stats import epsilon_one_run_from_scores

SMALL = ["--epsilon", "2", "--canaries", "500", "--steps", "300"]


def _bound(path):
    with np.load(path, allow_pickle=False) as data:
        return epsilon_one_run_from_scores(data["scores"], data["members"], delta=1e-5).value


def test_correct_and_planted_bug(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any working directory, not the checkout
    assert main(["simulate", "runs/demo/correct.npz", *SMALL]) == 0  # runs/demo/ does not exist yet
    assert main(["simulate", "runs/demo/buggy.npz", *SMALL, "--noise-factor", "0.1"]) == 0
    assert _bound("runs/demo/correct.npz") < 2.0 < _bound("runs/demo/buggy.npz")


def test_same_seed_same_scores(tmp_path):
    for name in ("a", "b"):
        assert main(["simulate", str(tmp_path / f"{name}.npz"), *SMALL, "--seed", "3"]) == 0
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert np.array_equal(a["scores"], b["scores"]) and np.array_equal(a["members"], b["members"])


@pytest.mark.parametrize("args, fragment", [
    (["--epsilon", "0"], "--epsilon"),
    (["--epsilon", "inf"], "--epsilon"),
    (["--canaries", "0"], "--canaries"),
    (["--sample-rate", "1.5"], "--sample-rate"),
    (["--noise-factor", "-1"], "--noise-factor"),
    (["--steps", "1000000", "--canaries", "1000000"], "readings"),
    (["--epsilon", "1e-9"], "Opacus cannot reach it"),
])
def test_bad_input_one_line_nothing_written(tmp_path, capsys, args, fragment):
    out = tmp_path / "sub" / "x.npz"
    assert main(["simulate", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "sub").exists()


def test_out_must_be_an_npz_file(tmp_path, capsys):
    assert main(["simulate", str(tmp_path)]) == 2
    assert main(["simulate", str(tmp_path / "x.csv")]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_readings_feed_the_noise_test_of_bound_scores(tmp_path, capsys):
    """``simulate --readings`` stores the per-step readings; ``bound scores`` with the claim
    then measures the noise (half the claimed noise here: sigma_eff about half the claim).
    Readings that do not match the canaries are refused in one line."""
    import json

    from audit.cli import EXIT_BAD_INPUT

    out = tmp_path / "half.npz"
    assert main(["simulate", str(out), *SMALL, "--noise-factor", "0.5", "--readings"]) == 0
    with np.load(out) as data:
        sigma = float(data["readings"][:, ~data["members"]].std() * 2)  # about the claimed sigma
        assert data["readings"].shape == (300, 500)
    capsys.readouterr()
    claim = ["--noise-multiplier", f"{sigma:.6f}", "--sample-rate", "0.01", "--steps", "300"]
    assert main(["bound", "scores", "--scores", str(out), "--delta", "1e-5", *claim, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["effective"]["details"]["decided_by"] == "noise"
    assert 0.49 * sigma < payload["effective_noise_multiplier"] < 0.53 * sigma
    with np.load(out) as data:
        np.savez(tmp_path / "bad.npz", scores=data["scores"], members=data["members"], readings=data["readings"][:, :7])
    assert main(["bound", "scores", "--scores", str(tmp_path / "bad.npz"), "--delta", "1e-5", *claim]) == EXIT_BAD_INPUT
    assert "one column per canary" in capsys.readouterr().err
