"""Tests for trainers.observe: query views, defended outputs, resumable K-model observation runs."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import softmax

from audit.errors import InputError
from audit.observations import ObservationRun
from trainers.data import make_purchase
from trainers.observe import (
    _seeds, blackbox_trainer, dp_trainer, observe_models, observe_outputs, plain_trainer, query_views,
)
from trainers.opacus_dp import DPConfig
from trainers.output_defences import OutputDefence
from trainers.plain import PlainConfig
from trainers.plugins import load_blackbox_plugin

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Secure RNG turned off")


def test_query_views_by_hand():
    x = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3)
    m = query_views(x, augment="mirror")
    assert m.shape == (2, 2, 1, 2, 3)
    np.testing.assert_array_equal(m[1, 0, 0], [[2, 1, 0], [5, 4, 3]])
    s = query_views(x, augment="shift")
    assert s.shape == (5, 2, 1, 2, 3)
    np.testing.assert_array_equal(s[0], x)
    np.testing.assert_array_equal(s[1, 0, 0], [[3, 4, 5], [0, 0, 0]])  # dy=-1: moved up
    np.testing.assert_array_equal(s[4, 0, 0], [[0, 0, 1], [0, 3, 4]])  # dx=+1: moved right
    with pytest.raises(InputError, match="needs images"):
        query_views(np.zeros((3, 4), np.float32), augment="mirror")
    with pytest.raises(InputError, match="augment='rot'"):
        query_views(x, augment="rot")


def test_defended_outputs_round_trip():
    logits = np.random.default_rng(0).normal(size=(6, 5)) * 3
    raw = observe_outputs(lambda v: logits, np.zeros((6, 2), np.float32))
    np.testing.assert_allclose(raw[:, 0], logits, rtol=1e-6)
    d = OutputDefence(top_k=2)
    out = observe_outputs(lambda v: logits, np.zeros((6, 2), np.float32), defence=d)
    revealed = d.apply(logits)
    np.testing.assert_allclose(softmax(out[:, 0].astype(np.float64), axis=1),
                               revealed / revealed.sum(axis=1, keepdims=True), atol=1e-12)
    assert np.isfinite(out).all()


@pytest.fixture(scope="module")
def records():
    return make_purchase(seed=0, n=120, n_features=30, n_classes=4, flip_prob=0.2)


def _keep(k, n, seed=0):
    return np.random.default_rng(seed).random((k, n)) < 0.5


def test_observe_models_matches_single_training_and_resumes(tmp_path, records):
    keep = _keep(4, len(records))
    trainer = plain_trainer("logreg", config=PlainConfig(epochs=5, batch_size=16, lr=0.3))
    run = ObservationRun.create(tmp_path / "full", labels=records.y)
    info = observe_models(run, trainer, records, keep, seed=9, test=records)
    obs = run.load()
    assert obs.logits.shape == (4, 120, 1, 4) and np.array_equal(obs.keep, keep)
    assert [r.index for r in info] == [0, 1, 2, 3] and all(r.epsilon == float("inf") for r in info)
    # model 2 trained alone with its derived seed gives the same outputs
    alone = trainer(records.subset(keep[2]), seed=int(np.random.SeedSequence([9, 2]).generate_state(1)[0]))
    np.testing.assert_allclose(obs.logits[2, :, 0], alone.predict_logits(records.x), rtol=1e-6)

    # interrupted after two models, then resumed: identical observations
    calls = []

    def flaky(train, *, seed):
        calls.append(seed)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return trainer(train, seed=seed)

    part = ObservationRun.create(tmp_path / "part", labels=records.y)
    with pytest.raises(RuntimeError, match="killed"):
        observe_models(part, flaky, records, keep, seed=9)
    assert ObservationRun.open(tmp_path / "part").n_models_done == 2
    more = observe_models(ObservationRun.open(tmp_path / "part"), trainer, records, keep, seed=9)
    assert [r.index for r in more] == [2, 3]
    np.testing.assert_array_equal(ObservationRun.open(tmp_path / "part").load().logits, obs.logits)


def test_members_fit_better_than_non_members(tmp_path, records):
    keep = _keep(6, len(records), seed=1)
    trainer = plain_trainer("mlp", config=PlainConfig(epochs=40, batch_size=16, lr=0.01, optimizer="adam"), widths=(64,))
    run = ObservationRun.create(tmp_path / "r", labels=records.y)
    info = observe_models(run, trainer, records, keep, seed=0, test=records)
    logits = run.load().logits[:, :, 0].astype(np.float64)
    p_true = softmax(logits, axis=2)[:, np.arange(len(records)), records.y]
    loss_in, loss_out = -np.log(p_true[keep]).mean(), -np.log(p_true[~keep]).mean()
    assert loss_out > 5 * loss_in  # overfit models: non-members' loss far above members'
    assert all(r.train_accuracy > 0.9 for r in info)


def test_dp_zoo_and_blackbox_trainers(tmp_path, records, monkeypatch):
    keep = _keep(2, len(records))
    cfg = DPConfig(epochs=1, batch_size=20, noise_multiplier=1.0)
    for name, trainer in (
        ("dp", dp_trainer("logreg", config=cfg)),
        ("zoo", dp_trainer("logreg", config=cfg, zoo="accountant_rate_10x_small")),
    ):
        run = ObservationRun.create(tmp_path / name, labels=records.y)
        info = observe_models(run, trainer, records, keep, seed=0)
        assert np.isfinite(info[0].epsilon) and run.load().logits.shape == (2, 120, 1, 4)
    assert info[0].epsilon < 1.0  # the faulty accountant claims a much smaller epsilon
    with pytest.raises(InputError, match="unknown zoo variant"):
        dp_trainer("logreg", config=cfg, zoo="nope")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    bb = blackbox_trainer(load_blackbox_plugin("plugins_example:train"))
    run = ObservationRun.create(tmp_path / "bb", labels=records.y)
    info = observe_models(run, bb, records, keep, seed=0, defence=OutputDefence(decimals=2))
    assert info[0].epsilon == 8.0
    probs = softmax(run.load().logits[0, :, 0].astype(np.float64), axis=1)
    model = bb(records.subset(keep[0]), seed=int(np.random.SeedSequence([0, 0]).generate_state(1)[0]))
    revealed = np.round(softmax(model.predict_logits(records.x), axis=1), 2)  # what a 2-decimal API shows
    np.testing.assert_allclose(probs, revealed / revealed.sum(axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(InputError, match="expected bool\\[models, 120\\]"):
        observe_models(run, bb, records, keep[:, :5], seed=0)


def test_seeds_are_distinct():
    assert len({_seeds(s) for s in range(50)}) == 50
