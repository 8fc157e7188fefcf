"""The examples that audit a user's own Opacus script in place (examples/cnn_digits_audit.py,
examples/lora_finetune_audit.py), run as a newcomer runs them: ``python examples/NAME.py``
from another working directory, in their small form (``--quick``); and the user scripts of
``experiments.own_loop``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VERDICT_LINE = ("NO VIOLATION DETECTED: ", "VIOLATION: ", "INCONCLUSIVE: ")


def _example(name, *args, cwd, **env):
    # OMP_NUM_THREADS=1: the examples are timed on one core; HF_HUB_OFFLINE unset: the LoRA example sets it itself
    environ = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True,
                          env={**environ, "OMP_NUM_THREADS": "1", **env}, timeout=600)


def _verdict(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith(VERDICT_LINE)]
    assert len(lines) == 1, stdout
    return lines[0].split(":", 1)[0]


def test_cnn_example_passes_a_correct_run_and_writes_the_report(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    proc = _example("cnn_digits_audit.py", "--quick", cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _verdict(proc.stdout) == "NO VIOLATION DETECTED"
    report = json.loads((tmp_path / "runs" / "cnn-digits-audit" / "report.json").read_text())
    assert report["verdict"]["decision"] == "NO VIOLATION DETECTED"
    assert report["config"]["trainer"]["kind"] == "in-process" and report["utility"]["test_accuracy"] > 0.6
    assert 0.9 < report["verdict"]["effective_noise_multiplier"] / 1.3 < 1.1  # the noise the script asked for
    assert "MLflow: run " in proc.stdout and uri in proc.stdout and not (tmp_path / "mlflow.db").exists()
    assert proc.stderr == ""  # no Opacus, MLflow or torch noise in the terminal


def test_cnn_example_catches_its_planted_bug_and_says_so(tmp_path):
    proc = _example("cnn_digits_audit.py", "--quick", "--plant-bug", "--no-mlflow", "--out", "bug", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _verdict(proc.stdout) == "VIOLATION"
    assert proc.stdout.startswith("PLANTED BUG:") and "(exit 1 expected: the bug was planted on purpose)" in proc.stdout
    assert (tmp_path / "bug" / "report.json").exists() and not (tmp_path / "mlflow.db").exists()


def test_lora_example_passes_a_correct_run_and_downloads_nothing(tmp_path):
    # No network: an attempt to reach the Hugging Face Hub fails fast instead of hanging.
    proc = _example("lora_finetune_audit.py", "--quick", "--no-mlflow", cwd=tmp_path,
                    HF_HOME=str(tmp_path / "hf"), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _verdict(proc.stdout) == "NO VIOLATION DETECTED"
    assert "trainable parameters (LoRA adapters and head)" in proc.stdout
    report = json.loads((tmp_path / "runs" / "lora-finetune-audit" / "report.json").read_text())
    assert report["utility"]["test_accuracy"] > 0.6 and report["claimed"]["dpsgd"][2] == 64
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))
    assert proc.stderr == ""


@pytest.mark.slow
def test_lora_example_catches_half_the_noise_in_its_full_form(tmp_path):
    proc = _example("lora_finetune_audit.py", "--plant-bug", "--no-mlflow", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _verdict(proc.stdout) == "VIOLATION" and "claimed DP-SGD privacy profile" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn_digits_audit.py", "lora_finetune_audit.py"])
def test_full_examples_pass(name, tmp_path):
    proc = _example(name, "--no-mlflow", cwd=tmp_path)
    assert proc.returncode == 0 and _verdict(proc.stdout) == "NO VIOLATION DETECTED", proc.stdout + proc.stderr


# ---------------------------------------------------------------- experiments.own_loop's user scripts


@pytest.fixture(scope="module")
def tokens():
    from experiments import own_loop

    return own_loop.family_data("lora", None, own_loop.token_data())


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        for message in ("Secure RNG turned off", "Full backward hook is firing", ".*is_gradient_checkpointing.*"):
            warnings.filterwarnings("ignore", message=message)
        yield


def test_token_data_is_learnable_and_fixed_by_its_seed():
    from experiments.own_loop import token_data

    x, y = token_data(500, seed=3)
    assert x.shape == (500, 16) and set(y.tolist()) == {0, 1}
    assert ((x == 1) | (x == 2)).sum(dim=1).eq(1).all()  # exactly one marker per sequence
    assert ((x == 1).any(dim=1).long() == 1 - y).all()  # the marker is the class
    x2, y2 = token_data(500, seed=3)
    assert (x == x2).all() and (y == y2).all()


def test_lora_user_script_is_deterministic_and_its_bug_is_flagged(tokens):
    import numpy as np

    from experiments.own_loop import QUICK, Design, user_script

    design = Design(n=128, batch_size=32, sigma=1.0, epochs=1, canaries=100)
    runs = [user_script("lora", design, seed=5, data=tokens)[1] for _ in range(2)]
    a, b = (r.optimizer.canary_observations().readings for r in runs)
    assert a.shape == (4, 100)
    np.testing.assert_array_equal(a, b)  # every random choice comes from the seed
    _, run, engine, _ = user_script("lora", QUICK["no_clipping"], seed=5, data=tokens, bug="no_clipping")
    result = run.finish(accountant=engine.accountant, delta=1e-5)
    assert result.verdict == "VIOLATION" and result.claim_rejected
