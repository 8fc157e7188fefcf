"""trainers/thirdparty/opacus_command_train.py, the Opacus DP-SGD script audited through the
command target (experiments/third_party_command.py runs it with an older Opacus in its own
venv). Here it runs with the project's own Python and Opacus: the protocol (one run answers
every declared query with probabilities over the public label set, the seed fixes the model)
and the claim (the noise multiplier it trains with and the epsilon it reports are what
Opacus' accountant gives for the target epsilon; each misconfiguration breaks it as stated)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")

from trainers.command import load_command_trainer

SCRIPT = Path(__file__).resolve().parent.parent / "trainers" / "thirdparty" / "opacus_command_train.py"
CLASSES = 3
# Small and fast: a few Opacus steps on 4 features.
OPTIONS = ["--epochs", "2", "--batch-size", "16", "--hidden", "8", "--classes", str(CLASSES), "--lr", "0.2"]


def script_module():
    spec = importlib.util.spec_from_file_location("opacus_command_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, CLASSES - 1, 200)  # class 2 of the public label set is never seen
    x = (rng.normal(size=(200, 4)) + y[:, None]).astype(np.float32)
    return x[:150], y[:150].astype(np.int64), x[150:]


def run_script(tmp_path: Path, x, y, q, seed: int, *extra: str) -> tuple[np.ndarray, dict]:
    """The script run directly (as the command target runs it), its output and the JSON
    line it prints on stderr."""
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "query.npz", x=q)
    out = tmp_path / "out.npy"
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "train.npz"), str(tmp_path / "query.npz"),
                           str(out), str(seed), *extra], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(out), json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("epsilon", [1.0, 4.0])
def test_the_claim_is_what_opacus_accounts_for_the_target(epsilon):
    from opacus.accountants import create_accountant
    from opacus.accountants.utils import get_noise_multiplier

    mod = script_module()
    n, batch, epochs = 1750, 64, 4
    args = mod.parse(["--account", str(n), "--epsilon", str(epsilon), "--epochs", str(epochs),
                      "--batch-size", str(batch)])
    got = mod.account(args, n)
    steps_per_epoch = math.ceil(n / batch)  # the length of a DataLoader, 1 / Opacus' sample rate
    assert got["sample_rate"] == 1 / steps_per_epoch and got["steps"] == got["claim_steps"] == epochs * steps_per_epoch
    sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=1e-5, sample_rate=1 / steps_per_epoch,
                                 epochs=epochs, accountant="prv")
    assert got["noise_multiplier"] == sigma
    accountant = create_accountant("prv")
    accountant.history = [(sigma, 1 / steps_per_epoch, epochs * steps_per_epoch)]
    accounted = accountant.get_epsilon(delta=1e-5)
    assert got["claim_accounted_epsilon"] == pytest.approx(accounted, rel=1e-6)
    assert epsilon - 0.05 < accounted <= epsilon  # make_private_with_epsilon's tolerance is 0.01
    assert got["actual_epsilon"] == got["claim_accounted_epsilon"]  # the correct use spends what it claims
    # the misconfigurations: the claim is still the target, the real epsilon is not
    wrong_epochs = mod.account(mod.parse(["--account", str(n), "--epsilon", str(epsilon), "--epochs", str(epochs),
                                          "--batch-size", str(batch), "--misconfig", "epochs"]), n)
    assert wrong_epochs["claim_steps"] == steps_per_epoch and wrong_epochs["noise_multiplier"] < sigma
    assert wrong_epochs["claim_accounted_epsilon"] <= epsilon < 1.5 * epsilon < wrong_epochs["actual_epsilon"]
    stale = mod.account(mod.parse(["--account", str(n), "--epsilon", str(epsilon), "--misconfig", "stale-optimizer"]), n)
    assert stale["actual_epsilon"] == math.inf


def test_one_run_through_the_command_target_is_the_model_opacus_accounts_for(tmp_path, data):
    """Through the command target: probabilities over the public label set for every declared
    query. Run again directly with the same seed: the same model (the seed drives sampling,
    initialisation and noise), trained with the noise multiplier and steps Opacus' accountant
    gives for the claim, which it reports."""
    x, y, q = data
    argv = [sys.executable, str(SCRIPT), "{train}", "{query}", "{out}", "{seed}", "--epsilon", "2", *OPTIONS]
    trainer = load_command_trainer(argv, epsilon=2.0, delta=1e-5, timeout_s=120).with_queries(q)
    model = trainer.fit(x, y, seed=11)
    on_train, on_q = model.predict_proba(x), model.predict_proba(q)
    assert on_train.shape == (150, CLASSES) and on_q.shape == (50, CLASSES)  # the unseen class has a column
    np.testing.assert_allclose(on_q.sum(axis=1), 1.0, rtol=1e-9)
    assert np.isfinite(on_q).all() and (on_q >= 0).all()

    probs, used = run_script(tmp_path, x, y, np.concatenate([x, q]), 11, "--epsilon", "2", *OPTIONS)
    np.testing.assert_array_equal(probs[len(x):], on_q)
    mod = script_module()
    expected = mod.account(mod.parse(["--account", str(len(x)), "--epsilon", "2", *OPTIONS]), len(x))
    assert used["noise_multiplier"] == expected["noise_multiplier"]  # what make_private_with_epsilon picked
    assert used["sample_rate"] == expected["sample_rate"] and used["accounted_steps"] == expected["steps"]
    assert used["accounted_epsilon"] == pytest.approx(expected["claim_accounted_epsilon"], rel=1e-6)
    assert 1.9 < used["accounted_epsilon"] <= 2.0


def test_the_stale_optimizer_trains_without_the_accountant_seeing_a_step(tmp_path, data):
    """The planted misconfiguration: Opacus raises nothing, the accountant counts no step, and
    the model is the non-private one (no noise: a different model from the DP run's)."""
    x, y, q = data
    _, used = run_script(tmp_path, x, y, q, 11, "--epsilon", "2", "--misconfig", "stale-optimizer", *OPTIONS)
    assert used["accounted_steps"] == 0 and used["accounted_epsilon"] == 0.0
