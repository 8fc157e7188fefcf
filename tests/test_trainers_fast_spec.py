"""Each faulty step differs from the correct step exactly where intended, on identical
batches and identical standard-normal noise."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from audit.errors import InputError
from trainers.fast import (
    CORRECT, FAULTS, NON_PRIVATE, DPSGDConfig, FastDPSGD, MLPShape, StackedMLP, StepHooks, StepSpec, fault,
)

torch.set_num_threads(1)

SHAPE = MLPShape((6, 5, 3))
C, SIGMA, EBS, LR = 0.5, 1.7, 4.0, 0.1


def _setup(seed=0, k=2, b=5):
    g = torch.Generator().manual_seed(seed)
    model = StackedMLP.init(SHAPE, [torch.Generator().manual_seed(seed + 10 + j) for j in range(k)], dtype=torch.float64)
    for w in model.weights:
        w.mul_(6)  # gradients well above C
    x = torch.randn(k, b, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (k, b), generator=g)
    mask = torch.ones(k, b, dtype=torch.bool)
    mask[1, 3:] = False
    zw = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in model.weights]
    zb = [torch.randn(b_.shape, generator=g, dtype=torch.float64) for b_ in model.biases]
    return model, x, y, mask, (zw, zb)


def _privatised(spec, seed=0, sigma=SIGMA):
    """(privatised gradient float[K, P], unclipped sum float[K, P], clipped sum float[K, P], noise float[K, P])."""
    model, x, y, mask, noise = _setup(seed)
    cfg = DPSGDConfig(lr=LR, max_grad_norm=C, noise_multiplier=sigma, expected_batch_size=int(EBS), spec=spec)
    watch = torch.arange(SHAPE.n_params)
    unclipped = FastDPSGD(model, replace(cfg, spec=NON_PRIVATE)).clipped_sum(x, y, mask)
    clipped = FastDPSGD(model, replace(cfg, spec=CORRECT)).clipped_sum(x, y, mask)
    out = FastDPSGD(model, cfg, StepHooks(watch=watch)).step(x, y, mask, noise=noise)
    flat = lambda ws, bs: torch.cat([t for w, b in zip(ws, bs) for t in (w.reshape(w.shape[0], -1), b)], 1)
    return out.watched, flat(*unclipped[:2]), flat(*clipped[:2]), flat(*noise), mask.sum(1).double()


def _naive_clipped_sum(seed=0):
    """Per-example clipping with a Python loop over examples and autograd."""
    model, x, y, mask, _ = _setup(seed)
    total = []
    for k in range(x.shape[0]):
        module = model.to_module(k)
        acc = 0
        for i in range(x.shape[1]):
            if not mask[k, i]:
                continue
            module.zero_grad()
            torch.nn.functional.cross_entropy(module(x[k, i : i + 1]), y[k, i : i + 1]).backward()
            g = torch.nn.utils.parameters_to_vector([p.grad for p in module.parameters()])
            acc = acc + g * min(1.0, C / (g.norm().item() + 1e-6))
        total.append(acc)
    return torch.stack(total)


def test_correct_step_is_the_dp_sgd_formula():
    priv, unclipped, clipped, z, _ = _privatised(CORRECT)
    torch.testing.assert_close(clipped, _naive_clipped_sum(), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(clipped, unclipped), "clipping should be active here"
    torch.testing.assert_close(priv, (clipped + SIGMA * C * z) / EBS, rtol=1e-12, atol=1e-12)


def test_no_clipping():
    priv, unclipped, _, z, _ = _privatised(fault("no_clipping"))
    torch.testing.assert_close(priv, (unclipped + SIGMA * C * z) / EBS, rtol=1e-12, atol=1e-12)


def test_noise_sigma_instead_of_sigma_c():
    priv, _, clipped, z, _ = _privatised(fault("noise_sigma_not_sigma_c"))
    correct, *_ = _privatised(CORRECT)
    torch.testing.assert_close(priv, (clipped + SIGMA * z) / EBS, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(priv - correct, SIGMA * (1 - C) * z / EBS, rtol=1e-9, atol=1e-12)


def test_actual_batch_normalisation():
    priv, _, clipped, z, actual = _privatised(fault("actual_batch_normalisation"))
    correct, *_ = _privatised(CORRECT)
    assert actual.tolist() == [5, 3]
    torch.testing.assert_close(priv, (clipped + SIGMA * C * z) / actual[:, None], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(priv, correct * EBS / actual[:, None], rtol=1e-12, atol=1e-12)


def test_per_batch_clipping():
    priv, unclipped, _, z, _ = _privatised(fault("per_batch_clipping"))
    factor = (C / (unclipped.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1)
    assert (factor < 1).all()
    torch.testing.assert_close(priv, (unclipped * factor + SIGMA * C * z) / EBS, rtol=1e-12, atol=1e-12)


def test_half_noise_and_no_noise():
    priv, _, clipped, z, _ = _privatised(fault("half_noise"))
    torch.testing.assert_close(priv, (clipped + 0.5 * SIGMA * C * z) / EBS, rtol=1e-12, atol=1e-12)
    priv, _, clipped, _, _ = _privatised(fault("no_noise"))
    torch.testing.assert_close(priv, clipped / EBS, rtol=1e-12, atol=1e-12)

    priv, _, clipped, z, _ = _privatised(fault("noise_divided_by_batch_twice"))
    torch.testing.assert_close(priv, (clipped + SIGMA * C / EBS * z) / EBS, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reuse", [False, True])
def test_reused_noise(reuse):
    spec = fault("reused_noise") if reuse else CORRECT
    model, x, y, mask, _ = _setup()
    cfg = DPSGDConfig(lr=LR, max_grad_norm=C, noise_multiplier=SIGMA, expected_batch_size=int(EBS), spec=spec)
    trainer = FastDPSGD(model, cfg, StepHooks(watch=torch.arange(SHAPE.n_params)))
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    noise = []
    for _ in range(3):
        clipped = trainer.clipped_sum(x, y, mask)
        flat = torch.cat([t for w, b in zip(*clipped[:2]) for t in (w.reshape(2, -1), b)], 1)
        noise.append(trainer.step(x, y, mask, noise_generators=gens).watched * EBS - flat)
    assert noise[0].std() > 0.5 * SIGMA * C
    if reuse:
        torch.testing.assert_close(noise[1], noise[0], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(noise[2], noise[0], rtol=1e-9, atol=1e-9)
    else:
        assert (noise[1] - noise[0]).abs().mean() > 0.5 * SIGMA * C


def test_every_fault_changes_exactly_one_field():
    fields = StepSpec.__dataclass_fields__
    for name, spec in FAULTS.items():
        changed = [f for f in fields if getattr(spec, f) != getattr(CORRECT, f)]
        assert len(changed) == 1, name


def test_bad_specs_and_configs_are_rejected():
    with pytest.raises(InputError, match="clipping='sometimes'"):
        StepSpec(clipping="sometimes")
    with pytest.raises(InputError, match="noise_factor"):
        StepSpec(noise_factor=-1.0)
    with pytest.raises(InputError, match="fault='nope'"):
        fault("nope")
    with pytest.raises(InputError, match="max_grad_norm=0"):
        DPSGDConfig(lr=0.1, max_grad_norm=0, noise_multiplier=1.0, expected_batch_size=4)
    with pytest.raises(InputError, match="expected_batch_size=2.5"):
        DPSGDConfig(lr=0.1, max_grad_norm=1, noise_multiplier=1.0, expected_batch_size=2.5)


def test_explicit_noise_of_the_wrong_shape_is_rejected():
    model, x, y, mask, (zw, zb) = _setup()
    cfg = DPSGDConfig(lr=LR, max_grad_norm=C, noise_multiplier=SIGMA, expected_batch_size=int(EBS))
    with pytest.raises(InputError, match="noise shapes"):
        FastDPSGD(model, cfg).step(x, y, mask, noise=(zw[::-1], zb))
