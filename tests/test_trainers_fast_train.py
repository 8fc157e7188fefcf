"""The training loop: K models at once equal K single-model runs, seeds reproduce,
the non-private mode is plain autograd SGD, and the canary hooks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from audit.errors import InputError
from trainers.fast import (
    NON_PRIVATE, DPSGDConfig, FastDPSGD, GradientRows, MLPShape, StackedMLP, StepHooks, spawn_generators,
    steps_for_epochs, train,
)

torch.set_num_threads(1)

SHAPE = MLPShape((10, 8, 4))
CFG = DPSGDConfig(lr=0.2, max_grad_norm=1.0, noise_multiplier=1.1, expected_batch_size=8, momentum=0.5)


def _data(seed=0, n=120, k=3):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 10, generator=g) < 0.3).float()
    y = torch.randint(0, 4, (n,), generator=g)
    keep = torch.rand(k, n, generator=g) < 0.5
    return x, y, keep


def _fresh(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_ensemble_equals_single_model_runs(momentum):
    x, y, keep = _data()
    seeds = (3, 4, 5)
    cfg = replace(CFG, momentum=momentum)
    together = train(x, y, keep, SHAPE, cfg, steps=12, generator=_fresh(seeds))
    for k, s in enumerate(seeds):
        alone = train(x, y, keep[k : k + 1], SHAPE, cfg, steps=12, generator=_fresh([s]))
        assert torch.equal(alone.batch_sizes[:, 0], together.batch_sizes[:, k])
        torch.testing.assert_close(alone.model.flat()[0], together.model.flat()[k], rtol=1e-5, atol=1e-6)
    # and the models really differ from each other and from their start
    start = StackedMLP.init(SHAPE, _fresh(seeds)).flat()
    assert (together.model.flat() - start).abs().max() > 1e-2
    assert (together.model.flat()[0] - together.model.flat()[1]).abs().max() > 1e-2


def test_same_seed_same_weights_other_seed_other_weights():
    x, y, keep = _data()
    a = train(x, y, keep, SHAPE, CFG, steps=5, generator=torch.Generator().manual_seed(1))
    b = train(x, y, keep, SHAPE, CFG, steps=5, generator=torch.Generator().manual_seed(1))
    c = train(x, y, keep, SHAPE, CFG, steps=5, generator=torch.Generator().manual_seed(2))
    d = train(x, y, keep, SHAPE, CFG, steps=5, generator=torch.Generator().manual_seed(1), noise_threads=2)
    assert torch.equal(a.model.flat(), b.model.flat())
    assert torch.equal(a.model.flat(), d.model.flat())
    assert not torch.allclose(a.model.flat(), c.model.flat())


def test_non_private_mode_is_plain_sgd():
    """NON_PRIVATE = mean cross-entropy over the actual batch, torch.optim.SGD."""
    cfg = DPSGDConfig(lr=0.3, max_grad_norm=1.0, noise_multiplier=5.0, expected_batch_size=8,
                      momentum=0.9, weight_decay=1e-3, spec=NON_PRIVATE)
    g = torch.Generator().manual_seed(0)
    modules = [SHAPE.module() for _ in range(2)]
    fast = FastDPSGD(StackedMLP.from_modules(SHAPE, modules), cfg)
    opts = [torch.optim.SGD(m.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-3) for m in modules]
    for _ in range(3):
        x = torch.randn(2, 7, 10, generator=g)
        y = torch.randint(0, 4, (2, 7), generator=g)
        mask = torch.ones(2, 7, dtype=torch.bool)
        mask[0, 5:] = False
        fast.step(x, y, mask)  # no generators needed: no noise
        for k, (m, o) in enumerate(zip(modules, opts)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x[k][mask[k]]), y[k][mask[k]]).backward()
            o.step()
    for k, m in enumerate(modules):
        torch.testing.assert_close(fast.model.flat()[k], nn.utils.parameters_to_vector(m.parameters()), rtol=1e-5, atol=1e-6)


def test_non_private_training_learns():
    """Sanity: a learnable rule is learnt (loss well below log 4)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(400, 10, generator=g) < 0.5).float()
    y = (x[:, 0] * 2 + x[:, 1]).long()
    keep = torch.ones(2, 400, dtype=torch.bool)
    cfg = DPSGDConfig(lr=0.5, max_grad_norm=1.0, noise_multiplier=0.0, expected_batch_size=32, spec=NON_PRIVATE)
    res = train(x, y, keep, SHAPE, cfg, steps=300, generator=g)
    acc = (res.model.logits(x).argmax(-1) == y).float().mean(1)
    assert res.losses[-20:].mean() < 0.3 and (acc > 0.95).all()


def test_dirac_gradient_canary_and_watch():
    """A Dirac row of value 10 C on a coordinate is clipped to C; with no noise the
    watched coordinate moves by exactly C / expected_batch_size more, and the row
    counts in the batch size. The watched value is -(delta theta) / lr with plain SGD."""
    cfg = DPSGDConfig(lr=0.2, max_grad_norm=0.5, noise_multiplier=0.0, expected_batch_size=4)
    # a weight from input feature 9, which is always 0 in the data: no real gradient uses it
    coord = 9
    x = torch.zeros(2, 3, 10)
    x[..., :9] = torch.randn(2, 3, 9, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([[0, 1, 2], [3, 0, 1]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    start = StackedMLP.init(SHAPE, _fresh((1, 2)))
    rows = GradientRows(model=torch.tensor([1]), coords=torch.tensor([[coord]]), values=torch.tensor([[5.0]]))
    watch = torch.tensor([coord, 0])
    plain = FastDPSGD(StackedMLP(SHAPE, start.weights, start.biases), cfg, StepHooks(watch=watch))
    canary = FastDPSGD(StackedMLP(SHAPE, start.weights, start.biases), cfg, StepHooks(watch=watch, extra_rows=lambda step: rows))
    a = plain.step(x, y, mask)
    b = canary.step(x, y, mask)
    assert a.watched[:, 0].abs().max() == 0
    torch.testing.assert_close(b.watched[:, 0], torch.tensor([0.0, 0.5 / 4]))
    torch.testing.assert_close(b.watched[:, 1], a.watched[:, 1])
    assert b.batch_sizes.tolist() == [3, 4]
    delta = canary.model.flat()[:, watch] - start.flat()[:, watch]
    torch.testing.assert_close(-delta / cfg.lr, b.watched)


def test_watch_records_every_step():
    x, y, keep = _data()
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=8)
    watch = torch.tensor([0, 5, SHAPE.n_params - 1])
    res = train(x, y, keep, SHAPE, cfg, steps=7, generator=torch.Generator().manual_seed(0), hooks=StepHooks(watch=watch))
    assert res.watched.shape == (7, 3, 3)
    # noise std sigma C / ebs dominates: the recorded values are not all tiny
    assert res.watched.abs().mean() > 0.02


def test_steps_for_epochs():
    assert steps_for_epochs(2, 10, 105) == 21
    with pytest.raises(InputError, match="epochs"):
        steps_for_epochs(0, 10, 100)


def test_bad_inputs_are_rejected():
    x, y, keep = _data()
    gen = torch.Generator()
    with pytest.raises(InputError, match="x has shape"):
        train(x[:, :5], y, keep, SHAPE, CFG, steps=1, generator=gen)
    with pytest.raises(InputError, match="y has shape"):
        train(x, y + 4, keep, SHAPE, CFG, steps=1, generator=gen)
    with pytest.raises(InputError, match="keep"):
        train(x, y, keep[:, :5], SHAPE, CFG, steps=1, generator=gen)
    with pytest.raises(InputError, match="expected_batch_size=8"):
        train(x, y, keep & (torch.arange(120) < 10), SHAPE, CFG, steps=1, generator=gen)
    with pytest.raises(InputError, match="generators"):
        train(x, y, keep, SHAPE, CFG, steps=1, generator=spawn_generators(gen, 2))
    with pytest.raises(InputError, match="coordinate"):
        rows = GradientRows(model=torch.tensor([0]), coords=torch.tensor([[1, 1]]), values=torch.ones(1, 2))
        t = FastDPSGD(StackedMLP.init(SHAPE, _fresh((1,))), CFG, StepHooks(extra_rows=lambda s: rows))
        t.step(torch.zeros(1, 2, 10), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool), noise_generators=_fresh((1,)))
    with pytest.raises(InputError, match="watch"):
        FastDPSGD(StackedMLP.init(SHAPE, _fresh((1,))), CFG, StepHooks(watch=torch.tensor([SHAPE.n_params])))


def test_documented_dirac_canary_example_runs():
    """The example in trainers/fast/hooks.py, with no noise: each canary coordinate's
    recorded update is C / expected_batch_size (times the clip factor C / (C + 1e-6))
    exactly when the canary was drawn into its model's batch, else 0."""
    x, y, keep = _data()
    x[:, 9] = 0.0
    K, m, C, dead_feature = keep.shape[0], 5, 1.0, 9
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=C, noise_multiplier=0.0, expected_batch_size=8)
    q = 8 / keep.sum(1).double()
    canary_in = torch.rand(K, m, generator=torch.Generator().manual_seed(7)) < 0.5
    canary_gen = torch.Generator().manual_seed(8)
    drawn = []
    coords = torch.tensor([[SHAPE.weight_coord(0, j, dead_feature)] for j in range(m)])

    def extra_rows(step):
        present = (torch.rand(K, m, generator=canary_gen) < q[:, None]) & canary_in
        drawn.append(present)
        model, which = present.nonzero(as_tuple=True)
        return GradientRows(model=model, coords=coords[which], values=torch.full((len(model), 1), C))

    hooks = StepHooks(extra_rows=extra_rows, watch=coords[:, 0])
    res = train(x, y, keep, SHAPE, cfg, steps=40, generator=torch.Generator().manual_seed(0), hooks=hooks)
    expected = torch.stack(drawn).float() * (C / 8) * (C / (C + 1e-6))
    torch.testing.assert_close(res.watched, expected)
    assert torch.stack(drawn).any() and not torch.stack(drawn).all()
