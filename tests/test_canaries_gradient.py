"""White-box gradient canaries inserted into Opacus' DPOptimizer.

Statistical checks use fixed seeds; each states its failure probability for a correct
implementation (z = 5 two-sided: about 6e-7).
"""

import math

import numpy as np
import pytest
import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.optimizers.optimizer_fast_gradient_clipping import DPOptimizerFastGradientClipping
from scipy import stats
from torch import nn

from audit.errors import InputError
from canaries.gradient import CanarySlots, GradientCanaries, canary_optimizer_class, with_canaries
from canaries.iterate_scores import likelihood_ratio

torch.set_num_threads(1)
pytestmark = [
    pytest.mark.filterwarnings("ignore:Full backward hook"),
    pytest.mark.filterwarnings("ignore:Secure RNG"),
]

STABILISER = 1e-6  # Opacus divides by (norm + 1e-6) when clipping


class Net(nn.Module):
    def __init__(self, m, n_tensors=1, features=3):
        super().__init__()
        self.fc = nn.Linear(features, 2)
        self.canary_slots = CanarySlots(m, n_tensors)

    def forward(self, x):
        return self.fc(x)


class NoClipDPOptimizer(DPOptimizer):
    """Faulty: sums per-sample gradients without clipping."""

    def clip_and_accumulate(self):
        for p in self.params:
            _check_processed_flag(p.grad_sample)
            grad = self._get_flat_grad_sample(p).sum(dim=0)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)


class PerTensorClipDPOptimizer(DPOptimizer):
    """Faulty: clips each parameter tensor's per-sample gradient to C separately."""

    def clip_and_accumulate(self):
        for p in self.params:
            _check_processed_flag(p.grad_sample)
            g = self._get_flat_grad_sample(p)
            norms = g.reshape(len(g), -1).norm(2, dim=-1)
            factor = (self.max_grad_norm / (norms + STABILISER)).clamp(max=1.0)
            grad = torch.einsum("i,i...", factor, g)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)


def _setup(m=3, n_tensors=1, *, cls=DPOptimizer, noise=0.0, clip=0.5, batch=4, seed=0, lr=0.1, features=3, slots=True):
    torch.manual_seed(seed)
    net = Net(m, n_tensors, features)
    gsm = GradSampleModule(net)
    opt = cls(
        torch.optim.SGD(gsm.parameters() if slots else net.fc.parameters(), lr=lr),
        noise_multiplier=noise,
        max_grad_norm=clip,
        expected_batch_size=batch,
        generator=torch.Generator().manual_seed(seed + 100),
    )
    return net, gsm, opt


def _train(gsm, opt, steps, *, batch=4, seed=0, zero_feature=None, features=3):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(batch, features, generator=gen)
        if zero_feature is not None:
            x[:, zero_feature] = 0.0
        y = torch.randint(0, 2, (batch,), generator=gen)
        nn.functional.cross_entropy(gsm(x), y).backward()
        opt.step()
        opt.zero_grad()


def _clipped(c, factor=1000.0):
    return c * (factor * c) / (factor * c + STABILISER)


def test_dirac_canary_is_clipped_to_c_and_touches_only_its_coordinate():
    c = 0.5
    # Same data and init, with and without canaries: the model's gradients must not change.
    net_a, gsm_a, opt_a = _setup(clip=c, slots=False)  # a plain DPOptimizer cannot take canary slots
    net_b, gsm_b, opt_b = _setup(clip=c)
    members = np.array([True, False, True])
    with_canaries(
        opt_b,
        GradientCanaries.dirac(net_b.canary_slots.slots[0], sample_rate=1.0, members=members),
        generator=torch.Generator().manual_seed(0),
    )
    _train(gsm_a, opt_a, 1)
    _train(gsm_b, opt_b, 1)
    torch.testing.assert_close(net_a.fc.weight, net_b.fc.weight, rtol=0, atol=0)
    torch.testing.assert_close(net_a.fc.bias, net_b.fc.bias, rtol=0, atol=0)
    obs = opt_b.canary_observations()
    np.testing.assert_allclose(obs.readings, [[_clipped(c), 0.0, _clipped(c)]], rtol=1e-6)
    assert abs(_clipped(c) - c) < 1e-8
    # The slot moved by -lr/B * C on present canaries' coordinates and nowhere else.
    np.testing.assert_allclose(
        net_b.canary_slots.slots[0].detach().numpy(), [-0.1 / 4 * c, 0.0, -0.1 / 4 * c], rtol=1e-5
    )


def test_presence_follows_poisson_rate():
    m, q, steps = 40, 0.25, 200
    members = np.arange(m) % 2 == 0
    net, gsm, opt = _setup(m)
    with_canaries(
        opt,
        GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=q, members=members),
        generator=torch.Generator().manual_seed(3),
    )
    _train(gsm, opt, steps)
    obs = opt.canary_observations()
    assert obs.presence.shape == (steps, m)
    assert not obs.presence[:, ~members].any()
    n = steps * members.sum()
    count = obs.presence[:, members].sum()
    assert abs(count - n * q) <= 5 * math.sqrt(n * q * (1 - q))  # failure prob ~6e-7
    # Independence across steps: present at t and t+1 jointly with prob q^2.
    both = (obs.presence[:-1:2, members] & obs.presence[1::2, members]).sum()
    pairs = (steps // 2) * members.sum()
    assert abs(both - pairs * q * q) <= 5 * math.sqrt(pairs * q * q * (1 - q * q))


def test_all_and_last_iterate_statistics_without_noise():
    c, lr, batch = 0.5, 0.1, 4
    net, gsm, opt = _setup(5, clip=c, lr=lr, batch=batch)
    with_canaries(
        opt, GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=0.3), generator=torch.Generator().manual_seed(5)
    )
    _train(gsm, opt, 30, batch=batch)
    obs = opt.canary_observations()
    counts = obs.presence.sum(axis=0)
    assert 0 < counts.min() and counts.max() < 30
    np.testing.assert_allclose(obs.readings, obs.presence * _clipped(c), rtol=1e-6)
    np.testing.assert_allclose(obs.all_iterates, counts * _clipped(c), rtol=1e-6)
    # Plain SGD on an unused coordinate: theta_T - theta_0 = -lr / B * sum_t x_t.
    np.testing.assert_allclose(obs.last_iterate, lr / batch * counts * c, rtol=1e-5)
    # Without noise the LLR is the limit: +inf once present, else T log(1 - q).
    expected = np.where(counts > 0, np.inf, 30 * np.log(0.7))
    np.testing.assert_array_equal(obs.likelihood_ratio, expected)


def test_readings_with_noise_are_gaussian_with_std_sigma_c():
    sigma, c, m, steps = 2.0, 0.5, 20, 200
    net, gsm, opt = _setup(m, noise=sigma, clip=c)
    with_canaries(
        opt,
        GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=0.5, members=np.zeros(m, dtype=bool)),
        generator=torch.Generator().manual_seed(0),
    )
    _train(gsm, opt, steps)
    obs = opt.canary_observations()
    x = obs.readings.ravel()
    n = x.size
    assert abs(x.mean()) <= 5 * sigma * c / math.sqrt(n)
    # (n - 1) s^2 / (sigma C)^2 ~ chi2(n - 1): two-sided failure probability 1e-6.
    chi = (n - 1) * x.var(ddof=1) / (sigma * c) ** 2
    assert stats.chi2.ppf(5e-7, n - 1) < chi < stats.chi2.isf(5e-7, n - 1)
    np.testing.assert_allclose(
        obs.likelihood_ratio, likelihood_ratio(obs.readings, sample_rate=0.5, noise_multiplier=sigma, max_grad_norm=c)
    )


def test_likelihood_ratio_separates_members_with_noise():
    m = 200
    members = np.arange(m) < 100
    net, gsm, opt = _setup(m, noise=1.0, clip=1.0)
    with_canaries(
        opt,
        GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=0.5, members=members),
        generator=torch.Generator().manual_seed(1),
    )
    _train(gsm, opt, 40)
    obs = opt.canary_observations()
    # 20 expected presences at reading C against sigma C noise: the classes barely overlap.
    auc = stats.mannwhitneyu(obs.likelihood_ratio[members], obs.likelihood_ratio[~members]).statistic / 100**2
    assert auc > 0.99


def test_non_clipping_optimizer_lets_the_large_norm_through():
    c = 0.5
    net, gsm, opt = _setup(2, cls=NoClipDPOptimizer, clip=c)
    with_canaries(
        opt, GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=1.0), generator=torch.Generator().manual_seed(0)
    )
    assert type(opt).__name__ == "CanaryNoClipDPOptimizer"
    _train(gsm, opt, 2)
    np.testing.assert_allclose(opt.canary_observations().readings, 1000 * c, rtol=1e-6)


@pytest.mark.parametrize(
    "cls,kind,expected",
    [
        (DPOptimizer, "dirac", 1.0),
        (DPOptimizer, "split", 1.0),
        (PerTensorClipDPOptimizer, "dirac", 1.0),  # per-tensor clipping is invisible to a one-tensor canary
        (PerTensorClipDPOptimizer, "split", math.sqrt(2)),  # ... and caught by a canary split over two
    ],
)
def test_split_canary_catches_per_tensor_clipping(cls, kind, expected):
    c = 0.5
    net, gsm, opt = _setup(3, n_tensors=2, cls=cls, clip=c)
    slots = net.canary_slots.slots
    canaries = (
        GradientCanaries.dirac(slots[0], sample_rate=1.0)
        if kind == "dirac"
        else GradientCanaries.split(slots, sample_rate=1.0)
    )
    with_canaries(opt, canaries, generator=torch.Generator().manual_seed(0))
    _train(gsm, opt, 2)
    np.testing.assert_allclose(opt.canary_observations().readings, expected * c, rtol=1e-5)


@pytest.mark.parametrize("kind,expected", [("dirac", 0.5), ("split", 1 / math.sqrt(2))])
def test_opacus_per_layer_clipping_is_wrapped_and_stays_within_c(kind, expected):
    # Opacus' own per-layer optimizer, four tensors (fc.weight, fc.bias, two slots) each
    # clipped to C/2: the total sensitivity is C. A Dirac canary on one slot is clipped to
    # C/2; a split canary to C/2 on each slot, so its projection is (C/2 + C/2)/sqrt(2).
    from opacus.optimizers import DPPerLayerOptimizer

    c = 0.5
    torch.manual_seed(0)
    net = Net(3, 2)
    gsm = GradSampleModule(net)
    opt = DPPerLayerOptimizer(
        torch.optim.SGD(gsm.parameters(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=[c / 2] * 4,
        expected_batch_size=4,
    )
    assert opt.max_grad_norm == pytest.approx(c)
    slots = net.canary_slots.slots
    canaries = (
        GradientCanaries.dirac(slots[0], sample_rate=1.0)
        if kind == "dirac"
        else GradientCanaries.split(slots, sample_rate=1.0)
    )
    with_canaries(opt, canaries, generator=torch.Generator().manual_seed(0))
    assert type(opt).__name__ == "CanaryDPPerLayerOptimizer"
    _train(gsm, opt, 2)
    np.testing.assert_allclose(opt.canary_observations().readings, expected * c, rtol=1e-5)


def test_dirac_on_weights_of_an_always_zero_feature():
    c = 1.0
    net, gsm, opt = _setup(1, clip=c)
    # fc.weight is [2, 3]; feature 2 is always zero, so flat coordinates 2 and 5 are unused.
    canaries = GradientCanaries.dirac(net.fc.weight, sample_rate=1.0, indices=[2, 5])
    with_canaries(opt, canaries, generator=torch.Generator().manual_seed(0))
    _train(gsm, opt, 3, zero_feature=2)
    np.testing.assert_allclose(opt.canary_observations().readings, _clipped(c), rtol=1e-6)


def test_canary_on_a_used_coordinate_is_rejected():
    net, gsm, opt = _setup(1)
    with_canaries(
        opt,
        GradientCanaries.dirac(net.fc.weight, sample_rate=1.0, indices=[0]),
        generator=torch.Generator().manual_seed(0),
    )
    with pytest.raises(InputError, match="real per-sample gradients touch canary coordinates"):
        _train(gsm, opt, 1)


def test_virtual_steps_insert_once_per_logical_step():
    c = 0.5
    net, gsm, opt = _setup(2, clip=c)
    with_canaries(
        opt, GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=1.0), generator=torch.Generator().manual_seed(0)
    )
    gen = torch.Generator().manual_seed(0)
    for skip in (True, False, True, False):  # two logical steps of two physical batches
        x, y = torch.randn(4, 3, generator=gen), torch.randint(0, 2, (4,), generator=gen)
        nn.functional.cross_entropy(gsm(x), y).backward()
        opt.signal_skip_step(skip)
        opt.step()
        opt.zero_grad()
    obs = opt.canary_observations()
    assert obs.presence.shape == (2, 2)
    np.testing.assert_allclose(obs.readings, _clipped(c), rtol=1e-6)


def test_empty_poisson_batch_still_carries_canaries():
    # Poisson sampling can draw an empty batch of real records; present canaries still count.
    c = 0.5
    net, gsm, opt = _setup(3, clip=c)
    with_canaries(
        opt, GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=1.0), generator=torch.Generator().manual_seed(0)
    )
    out = gsm(torch.zeros(0, 3))
    nn.functional.cross_entropy(out, torch.zeros(0, dtype=torch.long), reduction="sum").backward()
    opt.step()
    np.testing.assert_allclose(opt.canary_observations().readings, [[c, c, c]], rtol=1e-6)


def test_wraps_make_private_with_poisson_sampling():
    torch.manual_seed(0)
    net = Net(6)
    data = torch.utils.data.TensorDataset(torch.randn(64, 3), torch.randint(0, 2, (64,)))
    engine = PrivacyEngine(accountant="prv")
    model, opt, loader = engine.make_private(
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        data_loader=torch.utils.data.DataLoader(data, batch_size=8),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(0),
    )
    members = np.array([True, False] * 3)
    with_canaries(
        opt,
        GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=8 / 64, members=members),
        generator=torch.Generator().manual_seed(0),
    )
    for x, y in loader:
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    obs = opt.canary_observations()
    assert obs.readings.shape == obs.presence.shape == (8, 6)
    assert obs.noise_multiplier == 1.0 and obs.sample_rate == 0.125
    assert not obs.presence[:, ~members].any()
    assert engine.get_epsilon(1e-5) > 0


class SkipsAddNoiseDPOptimizer(DPOptimizer):
    """Faulty: never calls add_noise (writes the clipped sum to p.grad itself)."""

    def pre_step(self, closure=None):
        self.clip_and_accumulate()
        for p in self.params:
            p.grad = p.summed_grad.view_as(p)
        return True


def test_optimizer_that_bypasses_add_noise_is_reported():
    net, gsm, opt = _setup(2, cls=SkipsAddNoiseDPOptimizer)
    with_canaries(
        opt, GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=1.0), generator=torch.Generator().manual_seed(0)
    )
    with pytest.raises(RuntimeError, match="without calling add_noise"):
        _train(gsm, opt, 2)


def test_ghost_clipping_is_refused():
    with pytest.raises(InputError, match="ghost clipping"):
        canary_optimizer_class(DPOptimizerFastGradientClipping)


def test_validation():
    slots = CanarySlots(4, 2).slots
    with pytest.raises(InputError, match="sample_rate"):
        GradientCanaries.dirac(slots[0], sample_rate=0.0)
    with pytest.raises(InputError, match="members"):
        GradientCanaries.dirac(slots[0], sample_rate=0.1, members=np.ones(3, dtype=bool))
    with pytest.raises(InputError, match="used twice"):
        GradientCanaries.dirac(slots[0], sample_rate=0.1, indices=[1, 1])
    with pytest.raises(InputError, match="flat indices"):
        GradientCanaries.dirac(slots[0], sample_rate=0.1, indices=[4])
    with pytest.raises(InputError, match="at least 2"):
        GradientCanaries.split(slots[:1], sample_rate=0.1)
    with pytest.raises(InputError, match="norm_factor"):
        GradientCanaries.dirac(slots[0], sample_rate=0.1, norm_factor=0.0)
    with pytest.raises(InputError, match="n_canaries"):
        CanarySlots(0)
    with pytest.raises(RuntimeError):
        CanarySlots(2)(torch.zeros(1))
    net, gsm, opt = _setup(2)
    foreign = GradientCanaries.dirac(slots[0], sample_rate=0.1)
    with pytest.raises(InputError, match="not among the optimizer"):
        with_canaries(opt, foreign, generator=torch.Generator())
    assert type(opt) is DPOptimizer  # a refused attach leaves the optimizer untouched
    own = GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=0.1)
    with pytest.raises(InputError, match="generator"):
        with_canaries(opt, own, generator=np.random.default_rng(0))
    with pytest.raises(InputError, match="DPOptimizer"):
        with_canaries(torch.optim.SGD(net.parameters(), lr=0.1), own, generator=torch.Generator())
    with_canaries(opt, own, generator=torch.Generator())
    with pytest.raises(InputError, match="already carries canaries"):
        canary_optimizer_class(type(opt))


def test_opacus_canaries_match_the_yardstick_simulation():
    """The Opacus-inserted canaries and experiments.yardstick.simulate are the same mechanism.

    Same (m, T, q, sigma, C): the LLR scores of members and of non-members must have the
    same distributions (two-sample Kolmogorov-Smirnov; fails with probability 1e-6 each
    when they do).
    """
    from experiments.yardstick import simulate

    m, steps, q, sigma, c = 400, 60, 0.2, 1.5, 0.5
    members = np.random.default_rng(0).random(m) < 0.5
    net, gsm, opt = _setup(m, noise=sigma, clip=c)
    with_canaries(
        opt,
        GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=q, members=members),
        generator=torch.Generator().manual_seed(7),
    )
    _train(gsm, opt, steps)
    obs = opt.canary_observations()
    sim = simulate(n_canaries=4000, steps=steps, sample_rate=q, noise_multiplier=sigma, max_grad_norm=c, rng=np.random.default_rng(1))
    for mask, sim_mask in ((members, sim.members), (~members, ~sim.members)):
        assert stats.ks_2samp(obs.likelihood_ratio[mask], sim.llr[sim_mask]).pvalue > 1e-6
    # ... and the two member distributions do differ from the non-member ones.
    assert stats.ks_2samp(obs.likelihood_ratio[members], obs.likelihood_ratio[~members]).pvalue < 1e-6


def _with(opt, net, members, rate=1.0):
    return with_canaries(opt, GradientCanaries.dirac(net.canary_slots.slots[0], sample_rate=rate, members=members),
                         generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("lr, weight_decay", [(0.1, 0.0), (0.7, 0.05)])
def test_readings_come_from_the_released_iterates_of_plain_sgd(lr, weight_decay):
    """The reading is the change of the iterates turned back into a gradient (any lr and weight decay)."""
    c = 0.5
    net, gsm, opt = _setup(clip=c, lr=lr)
    for group in opt.original_optimizer.param_groups:
        group["weight_decay"] = weight_decay
    _with(opt, net, np.array([True, False, True]))
    _train(gsm, opt, 4)
    obs = opt.canary_observations()
    assert obs.reading_source == "iterates"
    np.testing.assert_allclose(obs.readings, np.tile([_clipped(c), 0.0, _clipped(c)], (4, 1)), rtol=1e-5, atol=1e-6)


def test_other_inner_optimizers_are_read_at_the_gradient_they_receive():
    c = 0.5
    net, gsm, opt = _setup(clip=c)
    opt.original_optimizer = torch.optim.Adam(gsm.parameters(), lr=0.01)
    opt.param_groups = opt.original_optimizer.param_groups
    _with(opt, net, np.array([True, False, True]))
    _train(gsm, opt, 3)
    obs = opt.canary_observations()
    assert obs.reading_source == "gradient"
    np.testing.assert_allclose(obs.readings, np.tile([_clipped(c), 0.0, _clipped(c)], (3, 1)), rtol=1e-6)


class RealisedBatchDPOptimizer(DPOptimizer):
    """Faulty after the noise: divides by the realised batch size, not the expected one (Opacus #571)."""

    def scale_grad(self):
        batch = next(len(p.grad_sample) for p in self.params if p.grad_sample is not None)
        for p in self.params:
            p.grad /= batch


def test_what_a_step_does_after_the_noise_shows_in_the_readings():
    """A batch of 4 records and 2 present canaries divided by its realised size 6 instead of
    the expected 4: each present canary reads 4/6 C, not C (a reading taken inside the
    optimizer, before the scaling, would show C and miss it)."""
    c = 0.5
    net, gsm, opt = _setup(clip=c, cls=RealisedBatchDPOptimizer)
    _with(opt, net, np.array([True, False, True]))
    _train(gsm, opt, 2)
    np.testing.assert_allclose(opt.canary_observations().readings, np.tile([4 / 6 * c, 0.0, 4 / 6 * c], (2, 1)),
                               rtol=1e-5, atol=1e-6)
