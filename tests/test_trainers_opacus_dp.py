"""Tests for trainers.opacus_dp: equivalence with Opacus' PrivacyEngine, accounting, plug-in classes."""

import warnings

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer
from scipy.optimize import brentq
from scipy.stats import norm
from torch.utils.data import DataLoader, TensorDataset

from audit.errors import InputError
from trainers.data import load_dataset, split_dataset
from trainers.models import build_model
from trainers.opacus_dp import DPConfig, claimed_epsilon, derive_seeds, run_dp_epochs, train_dp

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Secure RNG turned off")


@pytest.fixture(scope="module")
def splits():
    return split_dataset(load_dataset("fair", seed=0), pool=300, population=0, test=300, seed=0)


def _model(seed=0):
    return build_model("mlp", (8,), 2, generator=torch.Generator().manual_seed(seed), widths=(16,))


def _flat(model):
    return torch.cat([p.detach().ravel() for p in model.parameters()])


def test_identical_to_privacy_engine(splits):
    cfg = DPConfig(epochs=2, batch_size=30, lr=0.3, noise_multiplier=1.1, max_grad_norm=0.7)
    ours = train_dp(_model(), splits.pool, config=cfg, seed=11)

    # the same run through PrivacyEngine.make_private, with the same generators
    s_sampling, s_noise, _ = derive_seeds(11)
    model = _model()
    data = TensorDataset(torch.as_tensor(splits.pool.x), torch.as_tensor(splits.pool.y))
    loader = DataLoader(data, batch_size=30, generator=torch.Generator().manual_seed(s_sampling))
    engine = PrivacyEngine(accountant="prv")
    gsm, opt, dl = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.3), data_loader=loader,
        noise_multiplier=1.1, max_grad_norm=0.7, noise_generator=torch.Generator().manual_seed(s_noise),
    )
    run_dp_epochs(gsm, opt, dl, epochs=2)
    assert torch.equal(_flat(ours.model), _flat(model))
    assert ours.epsilon == pytest.approx(engine.get_epsilon(1e-5), rel=1e-9)
    assert ours.steps == 20 and ours.sample_rate == pytest.approx(0.1)


def test_seed_determinism(splits):
    cfg = DPConfig(epochs=1, batch_size=30, noise_multiplier=1.0)
    a = _flat(train_dp(_model(), splits.pool, config=cfg, seed=1).model)
    b = _flat(train_dp(_model(), splits.pool, config=cfg, seed=1).model)
    c = _flat(train_dp(_model(), splits.pool, config=cfg, seed=2).model)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_prv_matches_exact_gaussian_composition():
    # q = 1: T Gaussian steps with noise sigma compose to a Gaussian mechanism with
    # mu = sqrt(T) / sigma, whose exact delta(eps) is Balle & Wang (ICML 2018, analytic Gaussian mechanism):
    # delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2).
    sigma, steps, delta = 2.0, 4, 1e-5
    mu = np.sqrt(steps) / sigma
    exact = brentq(lambda e: norm.cdf(-e / mu + mu / 2) - np.exp(e) * norm.cdf(-e / mu - mu / 2) - delta, 0, 50)
    prv = claimed_epsilon(noise_multiplier=sigma, sample_rate=1.0, steps=steps, delta=delta, accountant="prv")
    rdp = claimed_epsilon(noise_multiplier=sigma, sample_rate=1.0, steps=steps, delta=delta, accountant="rdp")
    assert exact - 1e-3 <= prv <= exact + 0.02
    assert rdp >= exact  # RDP conversion is a valid but looser upper bound
    assert claimed_epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=3, delta=delta) == float("inf")
    assert claimed_epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=delta) == 0.0


def test_target_epsilon(splits):
    cfg = DPConfig(epochs=1, batch_size=30, target_epsilon=2.0, accountant="rdp")
    res = train_dp(_model(), splits.pool, config=cfg, seed=0)
    assert 1.9 <= res.epsilon <= 2.0
    # the same calibration as PrivacyEngine.make_private_with_epsilon
    model = _model()
    loader = DataLoader(TensorDataset(torch.as_tensor(splits.pool.x), torch.as_tensor(splits.pool.y)), batch_size=30)
    _, opt, _ = PrivacyEngine(accountant="rdp").make_private_with_epsilon(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), data_loader=loader,
        target_epsilon=2.0, target_delta=1e-5, epochs=1, max_grad_norm=1.0)
    assert res.noise_multiplier == pytest.approx(opt.noise_multiplier, rel=1e-9)
    # more noise than a larger target would need
    loose = claimed_epsilon(noise_multiplier=res.noise_multiplier * 0.9, sample_rate=res.sample_rate,
                            steps=res.steps, delta=1e-5, accountant="rdp")
    assert loose > 2.0


class _Recording(DPOptimizer):
    """Records per-step batch sizes and whether per-sample gradients were present."""

    def __init__(self, *args, tag, **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag
        self.batch_sizes = []

    def pre_step(self, closure=None):
        self.batch_sizes.append(len(self.grad_samples[0]))
        return super().pre_step(closure)


def test_custom_optimizer_class_and_shuffle(splits):
    cfg = DPConfig(epochs=2, batch_size=40, noise_multiplier=1.0)
    res = train_dp(_model(), splits.pool, config=cfg, seed=0, optimizer_class=_Recording, optimizer_kwargs={"tag": "x"})
    assert isinstance(res.optimizer, _Recording) and res.optimizer.tag == "x"
    sizes = np.array(res.optimizer.batch_sizes)
    assert len(sizes) == res.steps == 16  # ceil(300/40) = 8 steps per epoch
    assert len(set(sizes.tolist())) > 1  # Poisson batch sizes vary
    # fixed shuffled batches: 7 of 40 and one of 20 per epoch; accountant unchanged
    shuf = train_dp(_model(), splits.pool, config=cfg, seed=0, optimizer_class=_Recording,
                    optimizer_kwargs={"tag": "y"}, sampling="shuffle")
    assert shuf.optimizer.batch_sizes == ([40] * 7 + [20]) * 2
    assert shuf.epsilon == pytest.approx(res.epsilon)
    # the accountant can be told another sample rate; the epsilon follows it
    low = train_dp(_model(), splits.pool, config=cfg, seed=0, accounting_sample_rate=res.sample_rate / 10)
    assert low.epsilon == pytest.approx(
        claimed_epsilon(noise_multiplier=1.0, sample_rate=res.sample_rate / 10, steps=16, delta=1e-5), rel=1e-6)
    assert low.epsilon < res.epsilon


def test_utility_with_little_noise(splits):
    cfg = DPConfig(epochs=3, batch_size=30, lr=0.5, noise_multiplier=0.3, max_grad_norm=5.0)
    res = train_dp(_model(), splits.pool, config=cfg, seed=0, test=splits.test)
    majority = max(splits.test.y.mean(), 1 - splits.test.y.mean())
    assert res.test_accuracy >= majority - 0.02
    assert res.train_accuracy > 0.6 and np.isfinite(res.epsilon)


def test_errors(splits):
    with pytest.raises(InputError, match="exactly one"):
        DPConfig(noise_multiplier=1.0, target_epsilon=1.0)
    with pytest.raises(InputError, match="accountant='moments'"):
        DPConfig(noise_multiplier=1.0, accountant="moments")
    with pytest.raises(InputError, match="subclass of opacus.optimizers.DPOptimizer"):
        train_dp(_model(), splits.pool, config=DPConfig(noise_multiplier=1.0), seed=0, optimizer_class=torch.optim.SGD)
    with pytest.raises(InputError, match="could not be built"):
        train_dp(_model(), splits.pool, config=DPConfig(noise_multiplier=1.0), seed=0, optimizer_class=_Recording)
    bn = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    with pytest.raises(InputError, match="not Opacus-compatible"):
        train_dp(bn, splits.pool, config=DPConfig(noise_multiplier=1.0), seed=0)


def test_empty_poisson_batches_still_step(splits):
    tiny = splits.pool.subset(np.arange(10))
    cfg = DPConfig(epochs=2, batch_size=1, noise_multiplier=1.0)  # q = 0.1: P(empty batch) = 0.9^10
    res = train_dp(_model(), tiny, config=cfg, seed=0, optimizer_class=_Recording, optimizer_kwargs={"tag": "e"})
    assert res.steps == 20 and 0 in res.optimizer.batch_sizes
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_functorch_mode_matches_hooks(splits):
    import dataclasses

    cfg = DPConfig(epochs=1, batch_size=30, noise_multiplier=1.0)
    hooks = train_dp(_model(), splits.pool, config=cfg, seed=4)
    func = train_dp(_model(), splits.pool, config=dataclasses.replace(cfg, grad_sample_mode="functorch"), seed=4)
    np.testing.assert_allclose(_flat(func.model).numpy(), _flat(hooks.model).numpy(), rtol=1e-4, atol=1e-6)
