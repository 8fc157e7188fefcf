"""Tests for trainers.zoo: each faulty step equals a hand computation of its buggy formula,
differs from Opacus' correct step, and agrees with it where the bug has no effect."""

import warnings

import numpy as np
import pytest
import torch
from opacus.optimizers import DPOptimizer
from torch import nn

from audit.errors import InputError
from trainers import zoo
from trainers.data import load_dataset, split_dataset
from trainers.models import build_model
from trainers.opacus_dp import DPConfig, claimed_epsilon, train_dp

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Secure RNG turned off")

SIGMA, C, B_EXP = 0.8, 0.7, 5
SHAPES = [(3, 4), (3,)]


def _grad_samples(batch, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    # per-sample norms mostly above C=1 so clipping matters
    return [scale * torch.randn(batch, *s, generator=g, dtype=torch.float64) for s in SHAPES]


def _run(cls, steps_gs, *, sigma=SIGMA, b_exp=B_EXP, seed=0):
    """Feed fixed per-sample gradients to ``cls`` and return p.grad per step."""
    params = [nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in SHAPES]
    opt = cls(torch.optim.SGD(params, lr=1.0), noise_multiplier=sigma, max_grad_norm=C,
              expected_batch_size=b_exp, generator=torch.Generator().manual_seed(seed))
    out = []
    for gs in steps_gs:
        for p, g in zip(params, gs):
            p.grad_sample = g.clone()
        assert opt.pre_step()
        out.append(np.concatenate([p.grad.detach().numpy().ravel() for p in params]))
        opt.zero_grad()
    return out


def _normals(seed, n_steps):
    """Standard normals in Opacus' draw order (parameter by parameter, step by step)."""
    g = torch.Generator().manual_seed(seed)
    return [np.concatenate([torch.normal(0, 1.0, size=s, generator=g, dtype=torch.float64).numpy().ravel()
                            for s in SHAPES]) for _ in range(n_steps)]


def _flat(gs):
    return np.concatenate([g.numpy().reshape(len(g), -1) for g in gs], axis=1)  # [batch, n_params]


def _clip(rows, c=C):
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows * np.minimum(1.0, c / (norms + 1e-6))


N_W = 12  # the weight coordinates come first in the flat vector


def _partial(rows):
    w = _clip(rows[:, :N_W])  # norm over weights only
    return np.concatenate([w, rows[:, N_W:]], axis=1).sum(0)


def _per_batch(rows):
    return _clip(rows.sum(0, keepdims=True))[0]


# hand computations of each buggy step: (rows[batch, params], z standard normals) -> p.grad
HAND = {
    "correct": lambda r, z: (_clip(r).sum(0) + SIGMA * C * z) / B_EXP,
    "no_clipping": lambda r, z: (r.sum(0) + SIGMA * C * z) / B_EXP,
    "per_batch_clipping": lambda r, z: (_per_batch(r) + SIGMA * C * z) / B_EXP,
    "partial_clipping": lambda r, z: (_partial(r) + SIGMA * C * z) / B_EXP,
    "noise_sigma_not_sigma_c": lambda r, z: (_clip(r).sum(0) + SIGMA * z) / B_EXP,
    "noise_divided_by_batch_twice": lambda r, z: (_clip(r).sum(0) + SIGMA * C / B_EXP * z) / B_EXP,
    "half_noise": lambda r, z: (_clip(r).sum(0) + 0.5 * SIGMA * C * z) / B_EXP,
    "actual_batch_normalisation": lambda r, z: (_clip(r).sum(0) + SIGMA * C * z) / len(r),
}


def test_registry_has_the_planted_bugs():
    assert len(zoo.ZOO) - 1 >= 8  # minus the control
    for name, v in zoo.ZOO.items():
        assert v.name == name and v.bug and v.claim
        assert issubclass(v.optimizer_class, DPOptimizer)
        # one change: a subclass overriding exactly one DPOptimizer step, or a flag
        overridden = [m for m in ("clip_and_accumulate", "add_noise", "scale_grad", "pre_step", "step")
                      if v.optimizer_class is not DPOptimizer and m in vars(v.optimizer_class)]
        flags = (v.sampling != "poisson") + (v.accounting_rate_factor != 1.0)
        assert len(overridden) + flags == (0 if name == "correct" else 1), name
    with pytest.raises(InputError, match="unknown zoo variant 'x'"):
        zoo.get_variant("x")


@pytest.mark.parametrize("name", sorted(HAND))
def test_step_matches_hand_formula(name):
    gs = _grad_samples(7, seed=1, scale=0.6)  # batch 7 != expected 5
    got = _run(zoo.ZOO[name].optimizer_class, [gs])[0]
    expected = HAND[name](_flat(gs), _normals(0, 1)[0])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    correct = _run(DPOptimizer, [gs])[0]
    if name == "correct":
        np.testing.assert_array_equal(got, correct)
    else:
        assert np.abs(got - correct).max() > 1e-3


@pytest.mark.parametrize("name", ["no_clipping", "per_batch_clipping", "partial_clipping"])
def test_clipping_bugs_vanish_when_nothing_needs_clipping(name):
    gs = _grad_samples(5, seed=2, scale=0.01)  # every norm (and the sum's) below C
    np.testing.assert_allclose(_run(zoo.ZOO[name].optimizer_class, [gs])[0], _run(DPOptimizer, [gs])[0], rtol=1e-12)


@pytest.mark.parametrize("name", ["noise_sigma_not_sigma_c", "noise_divided_by_batch_twice", "half_noise", "reused_noise"])
def test_noise_bugs_vanish_without_noise(name):
    gs = [_grad_samples(7, seed=3), _grad_samples(7, seed=4)]
    got = _run(zoo.ZOO[name].optimizer_class, gs, sigma=0.0)
    for a, b in zip(got, _run(DPOptimizer, gs, sigma=0.0)):
        np.testing.assert_array_equal(a, b)


def test_actual_batch_bug_vanishes_at_expected_size():
    gs = _grad_samples(B_EXP, seed=5)
    np.testing.assert_allclose(_run(zoo.ActualBatchNormalisationOptimizer, [gs])[0], _run(DPOptimizer, [gs])[0], rtol=1e-12)


def test_reused_noise_repeats_first_draw():
    gs = [_grad_samples(7, seed=6), _grad_samples(6, seed=7), _grad_samples(8, seed=8)]
    got = _run(zoo.ReusedNoiseOptimizer, gs)
    correct = _run(DPOptimizer, gs)
    z = _normals(0, 1)[0]
    for step, g in zip(gs, got):
        np.testing.assert_allclose(g, (_clip(_flat(step)).sum(0) + SIGMA * C * z) / B_EXP, rtol=1e-10)
    np.testing.assert_array_equal(got[0], correct[0])  # the first step is the correct one
    assert np.abs(got[1] - correct[1]).max() > 1e-3


@pytest.fixture(scope="module")
def pool():
    return split_dataset(load_dataset("fair", seed=0), pool=200, population=0, test=0, seed=0).pool


def _model():
    return build_model("logreg", (8,), 2, generator=torch.Generator().manual_seed(0))


CFG = DPConfig(epochs=1, batch_size=40, lr=0.5, noise_multiplier=1.0, max_grad_norm=0.5)


@pytest.fixture(scope="module")
def reference(pool):
    return train_dp(_model(), pool, config=CFG, seed=3)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_variant_trains_and_claims_nominal_epsilon(pool, reference, name):
    res = zoo.train_faulty(name, _model(), pool, config=CFG, seed=3)
    ref = reference
    factor = zoo.ZOO[name].accounting_rate_factor
    expected = claimed_epsilon(noise_multiplier=1.0, sample_rate=0.2 * factor, steps=5, delta=1e-5)
    assert res.epsilon == pytest.approx(expected, rel=1e-9) and res.steps == 5
    same = all(torch.equal(a, b) for a, b in zip(res.model.parameters(), ref.model.parameters()))
    # only the accountant bug leaves the trained weights unchanged
    assert same == (name in ("correct", "accountant_rate_10x_small"))
    assert isinstance(res.optimizer, zoo.ZOO[name].optimizer_class)


def test_gradient_canaries_plug_in_and_expose_clipping_bug(pool):
    from canaries.gradient import CanarySlots, GradientCanaries, with_canaries

    from trainers.opacus_dp import sample_rate_and_steps

    q, _ = sample_rate_and_steps(len(pool), 40)
    cfg = DPConfig(epochs=2, batch_size=40, lr=0.5, noise_multiplier=0.5, max_grad_norm=1.0)

    def readings(name):
        model = _model()
        model.canary_slots = CanarySlots(50)
        canaries = GradientCanaries.dirac(model.canary_slots.slots[0], sample_rate=q)
        res = zoo.train_faulty(name, model, pool, config=cfg, seed=0, prepare_optimizer=lambda opt: with_canaries(
            opt, canaries, generator=torch.Generator().manual_seed(1)))
        obs = res.optimizer.canary_observations()
        assert obs.readings.shape == (res.steps, 50)
        return obs.readings[obs.presence], obs.readings[~obs.presence]

    present, absent = readings("correct")
    # correct clipping: a present canary reads C + N(0, (sigma C)^2), an absent one N(0, (sigma C)^2)
    assert len(present) > 50 and abs(present.mean() - 1.0) < 0.25 and abs(absent.mean()) < 0.1
    for name in ("no_clipping", "partial_clipping"):  # slots are 1-d, so partial clipping skips them
        present, _ = readings(name)
        assert present.min() > 100.0  # the canary's norm 1000 C passes unclipped


def test_one_run_canary_audit_flags_planted_bugs():
    """End to end: a one-run Dirac-canary audit (Steinke, Nasr & Jagielski 2023) of Opacus DP-SGD
    finds no violation for the correct optimizer and a violation for two planted bugs."""
    from canaries.gradient import CanarySlots, GradientCanaries, with_canaries

    from audit.stats.one_run import epsilon_one_run_from_scores
    from trainers.opacus_dp import sample_rate_and_steps

    pool = split_dataset(load_dataset("fair", seed=0), pool=500, population=0, test=0, seed=0).pool
    cfg = DPConfig(epochs=5, batch_size=50, lr=0.1, noise_multiplier=3.0, max_grad_norm=4.0)
    q, _ = sample_rate_and_steps(len(pool), cfg.batch_size)
    members = np.random.default_rng(0).random(1000) < 0.5
    bounds = {}
    for name in ("correct", "no_clipping", "noise_divided_by_batch_twice"):
        model = _model()
        model.canary_slots = CanarySlots(1000)
        can = GradientCanaries.dirac(model.canary_slots.slots[0], sample_rate=q, members=members)
        res = zoo.train_faulty(name, model, pool, config=cfg, seed=1, prepare_optimizer=lambda o: with_canaries(
            o, can, generator=torch.Generator().manual_seed(2)))
        scores = res.optimizer.canary_observations().likelihood_ratio
        bounds[name] = (epsilon_one_run_from_scores(scores, members, delta=1e-5).value, res.epsilon)
    eps_lb, claimed = bounds["correct"]
    assert eps_lb <= claimed
    for name in ("no_clipping", "noise_divided_by_batch_twice"):
        eps_lb, claimed = bounds[name]
        assert eps_lb > claimed + 1.0, (name, bounds)
