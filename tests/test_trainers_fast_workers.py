"""Workers of the fast trainer: the models stepped in shares on Python threads are
bit-identical to one share, for every step kind (a model reads only its own rows of each
ragged batch, so it does not depend on the others), and so are the logits and predictions computed by shares; the pipeline's
worker count follows the unit's CPUs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from audit.config import ExecutorSettings
from audit.errors import InputError
from trainers.fast import CORRECT, NON_PRIVATE, DPSGDConfig, MLPShape, StackedMLP, StepHooks, fault, train
from trainers.fast.sampling import pad_batches

SHAPE = MLPShape((40, 24, 6))
CFG = DPSGDConfig(lr=0.2, max_grad_norm=1.0, noise_multiplier=1.1, expected_batch_size=12)


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(k=5, n=160):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 40, generator=g)
    y = torch.randint(0, 6, (n,), generator=g)
    keep = torch.rand(k, n, generator=g) < 0.5
    return x, y, keep


def _run(cfg, workers, hooks=StepHooks()):
    x, y, keep = _data()
    return train(x, y, keep, SHAPE, cfg, steps=25, generator=torch.Generator().manual_seed(1), hooks=hooks,
                 workers=workers)


def _same(a, b):
    assert all(torch.equal(p, q) for p, q in zip(a.model.weights + a.model.biases, b.model.weights + b.model.biases))
    assert torch.equal(a.batch_sizes, b.batch_sizes) and torch.equal(a.losses, b.losses)


@pytest.mark.parametrize("cfg", [
    CFG,                                                   # the direct update
    replace(CFG, momentum=0.9, weight_decay=1e-3),         # torch.optim.SGD's path
    replace(CFG, noise_multiplier=0.0, spec=NON_PRIVATE, momentum=0.5),
    replace(CFG, spec=fault("per_batch_clipping")),
    replace(CFG, spec=fault("no_clipping")),
], ids=["dp-direct", "dp-momentum", "non-private", "per-batch-clip", "no-clipping"])
@pytest.mark.parametrize("workers", [2, 3, 5, 9])
def test_shares_equal_one_share(cfg, workers):
    _same(_run(cfg, workers), _run(cfg, 1))


def test_hooks_keep_one_share():
    """Hooks see all K models' flat gradients: with hooks the models step as one share,
    and the watched gradients are those of workers = 1."""
    hooks = StepHooks(watch=torch.arange(SHAPE.n_params)[::7])
    a, b = _run(CFG, 3, hooks), _run(CFG, 1, hooks)
    _same(a, b)
    assert a.watched is not None and torch.equal(a.watched, b.watched)


@pytest.mark.parametrize("cfg", [CFG, replace(CFG, noise_multiplier=0.0, spec=NON_PRIVATE)], ids=["dp", "non-private"])
@pytest.mark.parametrize("shape", [SHAPE, MLPShape((40, 128, 100))], ids=["small", "audit-widths"])
def test_a_model_does_not_depend_on_the_others(cfg, shape):
    """Why the shares are bit-identical: model k reads only its own rows of each ragged
    batch, so with generator k it trains exactly as model 0 of a K = 1 run, whatever the
    other models' batch sizes. (Batches padded to the largest of the K models, as before,
    fail this: the weight gradient's matmul then sums over the padded width.)"""
    x, y, keep = _data(k=4)
    y = y % shape.widths[-1]
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(4)]  # noqa: E731
    together = train(x, y, keep, shape, cfg, steps=15, generator=gens())
    assert len(set(together.batch_sizes[3].tolist())) > 1  # the batches differ in size
    for k in range(4):
        alone = train(x, y, keep[k : k + 1], shape, cfg, steps=15, generator=gens()[k : k + 1])
        for p, q in zip(together.model.weights + together.model.biases, alone.model.weights + alone.model.biases):
            assert torch.equal(p[k], q[0])
        assert torch.equal(together.losses[:, k], alone.losses[:, 0])


def test_padded_batches_are_checked():
    x, y, keep = _data()
    gens = [torch.Generator().manual_seed(s) for s in range(5)]
    from trainers.fast.sampling import Subsets, draw_ragged

    subsets = Subsets.from_keep(keep)
    index, counts = draw_ragged(subsets, subsets.sample_rates(12), gens)
    batches = index.split(list(counts))
    widest = max(len(b) for b in batches)
    assert pad_batches(batches[:2], widest).index.shape == (2, widest)
    assert pad_batches(batches[:2]).index.shape[1] == max(len(b) for b in batches[:2])
    with pytest.raises(InputError, match="width="):
        pad_batches(batches, widest - 1)


def test_workers_are_checked():
    with pytest.raises(InputError, match="workers=0"):
        _run(CFG, 0)
    model = StackedMLP.init(SHAPE, [torch.Generator().manual_seed(s) for s in range(3)])
    with pytest.raises(InputError, match="workers=0"):
        model.logits(torch.zeros(2, 40), workers=0)


@pytest.mark.parametrize("workers", [2, 4, 7])
def test_logits_and_predict_by_shares_are_the_same(workers):
    model = StackedMLP.init(MLPShape((600, 128, 100)), [torch.Generator().manual_seed(s) for s in range(7)])
    x = torch.randn(700, 600, generator=torch.Generator().manual_seed(2))
    ref = model.logits(x)
    assert torch.equal(model.logits(x, workers=workers), ref)
    assert torch.equal(model.logits(x, chunk=100, workers=workers), ref)
    assert torch.equal(model.predict(x, workers=workers), ref.argmax(-1))
    assert model.logits(x[:0], workers=workers).shape == (7, 0, 100)


def test_unit_workers_follow_the_units_cpus(monkeypatch):
    import audit.config as config

    monkeypatch.setattr(config, "_machine_cpus", lambda: 8)
    assert ExecutorSettings().unit_workers == 8
    assert ExecutorSettings(threads=2).unit_workers == 4
    assert ExecutorSettings(threads=3).unit_workers == 2
    assert ExecutorSettings(local_cpus=2).unit_workers == 2
    assert ExecutorSettings(threads=16).unit_workers == 1
    # a Ray task: its reservation, which by default goes to torch threads
    assert ExecutorSettings(kind="ray", num_cpus=4).unit_workers == 1
    assert ExecutorSettings(kind="ray", num_cpus=4, threads=1).unit_workers == 4
    assert ExecutorSettings(kind="ray", num_cpus=4, threads=2).unit_workers == 2
    assert ExecutorSettings(kind="ray").unit_workers == 1




def test_a_replaced_model_is_stepped_not_the_old_one():
    """The trainer keeps per-model views of the parameters across steps; after
    ``trainer.model`` is replaced, a step updates the new model (as the first step would)."""
    from trainers.fast import FastDPSGD

    x, y, keep = _data(k=2)
    cfg = replace(CFG, noise_multiplier=0.0, spec=NON_PRIVATE)
    init = lambda: StackedMLP.init(SHAPE, [torch.Generator().manual_seed(s) for s in range(2)])  # noqa: E731
    xb, yb, mask = x[:24].view(2, 12, 40), y[:24].view(2, 12), torch.ones(2, 12, dtype=torch.bool)
    trainer = FastDPSGD(init(), cfg)
    trainer.step(xb, yb, mask)
    trainer.model = init()
    trainer.step(xb, yb, mask)
    fresh = FastDPSGD(init(), cfg)
    fresh.step(xb, yb, mask)
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.flat(), fresh.model.flat()))
