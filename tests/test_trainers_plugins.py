"""Tests for trainers.plugins with the example plugins in tests/plugins_example.py."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.errors import InputError
from trainers.data import load_dataset, split_dataset
from trainers.models import build_model
from trainers.opacus_dp import DPConfig, claimed_epsilon, train_dp
from trainers.plugins import load_blackbox_plugin, load_object, load_optimizer_plugin

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Secure RNG turned off")


@pytest.fixture(autouse=True)
def _plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.fixture(scope="module")
def splits():
    return split_dataset(load_dataset("fair", seed=0), pool=200, population=0, test=300, seed=1)


def _weights(res):
    return torch.cat([p.detach().ravel() for p in res.model.parameters()])


def _model():
    return build_model("logreg", (8,), 2, generator=torch.Generator().manual_seed(0))


def test_optimizer_plugin_trains_like_opacus(splits):
    cls = load_optimizer_plugin("plugins_example:ScaledNoiseOptimizer", noise_scale=1.0)
    cfg = DPConfig(epochs=1, batch_size=40, noise_multiplier=1.2)
    ours = train_dp(_model(), splits.pool, config=cfg, seed=0, optimizer_class=cls, optimizer_kwargs={"noise_scale": 1.0})
    ref = train_dp(_model(), splits.pool, config=cfg, seed=0)
    assert torch.equal(_weights(ours), _weights(ref)) and ours.optimizer.steps_seen == 5
    # noise_scale=0 trains as the noiseless algorithm but still claims the nominal epsilon
    silent = train_dp(_model(), splits.pool, config=cfg, seed=0, optimizer_class=cls, optimizer_kwargs={"noise_scale": 0.0})
    noiseless = train_dp(_model(), splits.pool, config=DPConfig(epochs=1, batch_size=40, noise_multiplier=0.0), seed=0)
    assert torch.equal(_weights(silent), _weights(noiseless))
    assert silent.epsilon == pytest.approx(claimed_epsilon(noise_multiplier=1.2, sample_rate=0.2, steps=5, delta=1e-5))
    assert noiseless.epsilon == float("inf")


def test_blackbox_plugin(splits):
    trainer = load_blackbox_plugin("plugins_example:train")
    assert (trainer.epsilon, trainer.delta) == (8.0, 1e-5)
    model = trainer.fit(splits.pool.x, splits.pool.y, seed=0)
    probs = model.predict_proba(splits.test.x)
    assert probs.shape == (300, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    import plugins_example

    direct = plugins_example.train(splits.pool.x, splits.pool.y, seed=0)(splits.test.x)
    np.testing.assert_array_equal(probs, direct)  # the wrapper passes outputs through unchanged
    other_seed = trainer.fit(splits.pool.x, splits.pool.y, seed=1).predict_proba(splits.test.x)
    assert not np.array_equal(probs, other_seed)
    override = load_blackbox_plugin("plugins_example:train", epsilon=1.0, delta=0.0)
    assert (override.epsilon, override.delta) == (1.0, 0.0)
    uniform = load_blackbox_plugin("plugins_example:train_uniform").fit(splits.pool.x, splits.pool.y, seed=0)
    np.testing.assert_array_equal(uniform.predict_proba(splits.test.x[:3]), np.full((3, 2), 0.5))


@pytest.mark.parametrize("path", ["nocolon", "a.b:", ":x", "1mod:x", "a:b:c", "a b:c", ""])
def test_malformed_paths(path):
    with pytest.raises(InputError, match="malformed"):
        load_object(path)


def test_loader_errors(tmp_path, monkeypatch, splits):
    with pytest.raises(InputError, match="module 'no_such_module_xyz' not found"):
        load_object("no_such_module_xyz:f")
    with pytest.raises(InputError, match="has no attribute 'Missing'"):
        load_object("plugins_example:Missing")
    with pytest.raises(InputError, match="expected a subclass of opacus.optimizers.DPOptimizer"):
        load_optimizer_plugin("plugins_example:NotAnOptimizer")
    with pytest.raises(InputError, match="does not accept Opacus' DPOptimizer arguments"):
        load_optimizer_plugin("plugins_example:RigidOptimizer")
    with pytest.raises(InputError, match="cannot be called as train"):
        load_blackbox_plugin("plugins_example:train_no_seed")
    with pytest.raises(InputError, match="expected a function"):
        load_blackbox_plugin("plugins_example:ScaledNoiseOptimizer")
    bad = load_blackbox_plugin("plugins_example:train_bad_output").fit(splits.pool.x, splits.pool.y, seed=0)
    with pytest.raises(InputError, match="rows summing to 1"):
        bad.predict_proba(splits.test.x)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "noclaim_plugin.py").write_text("def train(x, y, *, seed):\n    return None\n")
    with pytest.raises(InputError, match="declares no claim"):
        load_blackbox_plugin("noclaim_plugin:train")
    with pytest.raises(InputError, match="expected a predict_proba"):
        load_blackbox_plugin("noclaim_plugin:train", epsilon=1, delta=0).fit(splits.pool.x, splits.pool.y, seed=0)
    (tmp_path / "badclaim_plugin.py").write_text(
        "CLAIMED_EPSILON = -1\nCLAIMED_DELTA = 0\ndef train(x, y, *, seed):\n    return None\n")
    with pytest.raises(InputError, match="claimed epsilon=-1.0"):
        load_blackbox_plugin("badclaim_plugin:train")
    (tmp_path / "broken_plugin.py").write_text("import no_such_dependency_abc\n")
    with pytest.raises(InputError, match="no_such_dependency_abc"):
        load_object("broken_plugin:x")


def test_file_path_plugins(tmp_path, splits):
    here = Path(__file__).parent / "plugins_example.py"
    trainer = load_blackbox_plugin(f"{here}:train")
    assert trainer.epsilon == 8.0
    assert trainer.fit(splits.pool.x, splits.pool.y, seed=0).predict_proba(splits.test.x[:4]).shape == (4, 2)
    assert issubclass(load_optimizer_plugin(f"{here}:ScaledNoiseOptimizer"), torch.optim.Optimizer)
    with pytest.raises(InputError, match="no such file"):
        load_object(f"{tmp_path / 'absent.py'}:train")
    (tmp_path / "bad_syntax.py").write_text("def train(:\n")
    with pytest.raises(InputError, match="syntax error"):
        load_object(f"{tmp_path / 'bad_syntax.py'}:train")


def test_a_file_plugin_runs_once_per_content(tmp_path):
    """The claim, the provenance and the trainer read one module: the file runs once per
    process, and again only when its bytes change (the recorded hash is of what ran)."""
    import hashlib

    from trainers.plugins import declared_claim, load_blackbox_plugin, plugin_source

    log = tmp_path / "runs.txt"
    plugin = tmp_path / "counted.py"
    body = (f"open({str(log)!r}, 'a').write('x')\nCLAIMED_EPSILON = 1.0\nCLAIMED_DELTA = 1e-5\n"
            "def train(x, y, *, seed):\n    return lambda q: None\n")
    plugin.write_text(body)
    path = f"{plugin}:train"
    declared_claim(path), plugin_source(path), load_blackbox_plugin(path)
    assert log.read_text() == "x"
    plugin.write_text(body.replace("1.0", "2.0"))
    assert declared_claim(path)[0] == 2.0 and log.read_text() == "xx"
    assert plugin_source(path)["sha256"] == hashlib.sha256(plugin.read_bytes()).hexdigest()
