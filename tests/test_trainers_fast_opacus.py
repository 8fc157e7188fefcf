"""The fast DP-SGD step against Opacus (hand-built GradSampleModule + DPOptimizer) on
identical batches and identical noise."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from trainers.fast import DPSGDConfig, FastDPSGD, MLPShape, StackedMLP, StepHooks

torch.set_num_threads(1)


def _opacus(module: nn.Module, cfg: DPSGDConfig, noise_seed: int):
    gsm = GradSampleModule(module, batch_first=True, loss_reduction="mean")
    sgd = torch.optim.SGD(gsm.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt = DPOptimizer(
        sgd,
        noise_multiplier=cfg.noise_multiplier,
        max_grad_norm=cfg.max_grad_norm,
        expected_batch_size=cfg.expected_batch_size,
        loss_reduction="mean",
        generator=torch.Generator().manual_seed(noise_seed),
    )
    return gsm, opt


def _opacus_step(gsm, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(gsm(x), y, reduction="mean").backward()
    opt.step()
    return torch.cat([p.grad.reshape(-1) for p in gsm.parameters()])


@pytest.mark.parametrize("widths", [(12, 9, 7, 5), (12, 5)], ids=["mlp", "logreg"])
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 1e-2)])
@pytest.mark.parametrize("watch", [True, False], ids=["watched", "direct"])
def test_three_steps_equal_opacus(widths, momentum, weight_decay, watch):
    """With ``watch`` the step materialises the privatised gradient; without it (and no
    momentum or weight decay) it writes the update straight into the parameters."""
    shape = MLPShape(widths)
    cfg = DPSGDConfig(
        lr=0.3, max_grad_norm=0.7, noise_multiplier=0.8, expected_batch_size=6,
        momentum=momentum, weight_decay=weight_decay,
    )
    g = torch.Generator().manual_seed(0)
    module = shape.module()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.8, 0.8, generator=g)  # large weights: most examples get clipped
    fast = FastDPSGD(
        StackedMLP.from_modules(shape, [module]), cfg,
        StepHooks(watch=torch.arange(shape.n_params) if watch else None),
    )
    gsm, opt = _opacus(module, cfg, noise_seed=123)
    fast_noise = [torch.Generator().manual_seed(123)]
    for size in (7, 3, 9):  # actual batch sizes differ from the expected 6
        x = torch.randn(size, widths[0], generator=g) * 2
        y = torch.randint(0, widths[-1], (size,), generator=g)
        ref_grad = _opacus_step(gsm, opt, x, y)
        out = fast.step(x[None], y[None], torch.ones(1, size, dtype=torch.bool), noise_generators=fast_noise)
        if watch:
            torch.testing.assert_close(out.watched[0], ref_grad, rtol=1e-5, atol=1e-5)
        ref_params = torch.nn.utils.parameters_to_vector(gsm.parameters())
        torch.testing.assert_close(fast.model.flat()[0], ref_params, rtol=1e-5, atol=1e-5)


def test_clipping_is_active_in_the_comparison():
    """Guard for the test above: its examples have gradient norms above C."""
    shape = MLPShape((12, 9, 7, 5))
    g = torch.Generator().manual_seed(0)
    module = shape.module()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.8, 0.8, generator=g)
    x = torch.randn(7, 12, generator=g) * 2
    y = torch.randint(0, 5, (7,), generator=g)
    norms = []
    for i in range(7):
        module.zero_grad()
        nn.functional.cross_entropy(module(x[i : i + 1]), y[i : i + 1]).backward()
        norms.append(torch.cat([p.grad.reshape(-1) for p in module.parameters()]).norm())
    norms = torch.stack(norms)
    assert (norms > 0.7).sum() >= 3 and (norms < 0.7 * 50).all()


def test_padded_rows_do_not_change_the_step():
    """K = 2 with different batch sizes (padding) equals Opacus on each model's real rows."""
    shape = MLPShape((8, 6, 3))
    cfg = DPSGDConfig(lr=0.5, max_grad_norm=0.5, noise_multiplier=1.3, expected_batch_size=4)
    g = torch.Generator().manual_seed(5)
    modules = [shape.module() for _ in range(2)]
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.uniform_(-1, 1, generator=g)
    fast = FastDPSGD(StackedMLP.from_modules(shape, modules), cfg, StepHooks(watch=torch.arange(shape.n_params)))
    x = torch.randn(2, 6, 8, generator=g)
    y = torch.randint(0, 3, (2, 6), generator=g)
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    x[1, 2:] = 100.0  # garbage in padding must be ignored
    out = fast.step(x, y, mask, noise_generators=[torch.Generator().manual_seed(s) for s in (11, 12)])
    for k, seed in enumerate((11, 12)):
        gsm, opt = _opacus(modules[k], cfg, noise_seed=seed)
        m = mask[k]
        ref = _opacus_step(gsm, opt, x[k][m], y[k][m])
        torch.testing.assert_close(out.watched[k], ref, rtol=1e-5, atol=1e-5)
    assert out.batch_sizes.tolist() == [6, 2]


def test_ghost_mode_matches_too():
    """Opacus' ghost clipping (PrivacyEngine.make_private(grad_sample_mode="ghost")) gives
    the same step: both are exact per-example clipping."""
    from opacus import PrivacyEngine

    shape = MLPShape((10, 8, 4))
    cfg = DPSGDConfig(lr=0.2, max_grad_norm=0.4, noise_multiplier=0.9, expected_batch_size=5)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(5, 10, generator=g)
    y = torch.randint(0, 4, (5,), generator=g)
    module = shape.module()
    fast = FastDPSGD(StackedMLP.from_modules(shape, [module]), cfg)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    model, opt, crit, _ = PrivacyEngine().make_private(
        module=module, optimizer=torch.optim.SGD(module.parameters(), lr=cfg.lr), data_loader=loader,
        noise_multiplier=cfg.noise_multiplier, max_grad_norm=cfg.max_grad_norm,
        criterion=nn.CrossEntropyLoss(), grad_sample_mode="ghost", poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(77),
    )
    assert opt.expected_batch_size == 5
    loss = crit(model(x), y)
    loss.backward()
    opt.step()
    fast.step(x[None], y[None], torch.ones(1, 5, dtype=torch.bool), noise_generators=[torch.Generator().manual_seed(77)])
    ref = torch.nn.utils.parameters_to_vector(model.parameters())
    torch.testing.assert_close(fast.model.flat()[0], ref, rtol=1e-5, atol=1e-5)


def test_noise_is_opacus_draws():
    """Model k's noise is Opacus' _generate_noise from generator k: torch.normal over
    each parameter's shape, in parameter order."""
    shape = MLPShape((7, 5, 3))
    model = StackedMLP.init(shape, [torch.Generator().manual_seed(k) for k in range(3)])
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=2)
    draws = []
    for threads in (1, 2, 3):
        zw, zb = FastDPSGD(model, cfg, noise_threads=threads).draw_noise(
            [torch.Generator().manual_seed(100 + k) for k in range(3)]
        )
        draws.append(torch.cat([torch.cat([w.flatten(1), b], 1) for w, b in zip(zw, zb)], 1))
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    drawn = draws[0]
    for k in range(3):
        g = torch.Generator().manual_seed(100 + k)
        ref = torch.cat([torch.normal(0, 1.0, p.shape, generator=g).flatten() for p in shape.module().parameters()])
        assert torch.equal(drawn[k], ref)
