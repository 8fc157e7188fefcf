"""DP-SGD through Opacus: the reference private trainer, with a pluggable optimizer class.

Algorithm 1 of Abadi et al., "Deep Learning with Differential Privacy" (CCS 2016): each step
samples a Poisson batch (every record independently with probability q), clips each
per-sample gradient to L2 norm C, sums, adds N(0, sigma^2 C^2 I) and divides by the expected
batch size q*n. Privacy is accounted by an Opacus accountant (``prv`` by default:
Gopi, Lee & Wutschitz, "Numerical Composition of Differential Privacy", NeurIPS 2021).

We assemble the pieces ``PrivacyEngine.make_private`` would (``GradSampleModule``,
``DPDataLoader``, a ``DPOptimizer`` and the accountant's step hook) ourselves so that any
``DPOptimizer`` subclass can be plugged in through ``optimizer_class``: gradient canaries,
the faulty variants of ``trainers.zoo`` and user plugins. With the default class the result
is identical to ``PrivacyEngine.make_private`` given the same generators (tested).

The accountant always records the optimizer's *nominal* ``noise_multiplier`` and the
sample rate ``accounting_sample_rate`` (default: the true q), whatever the optimizer does:
the epsilon reported is the one the training code claims.

Seeding: ``seed`` is expanded by ``np.random.SeedSequence`` into three streams: Poisson
sampling (``torch.Generator`` of the data loader), noise (``torch.Generator`` of the
optimizer) and dropout (torch's global generator inside ``torch.random.fork_rng``).
``secure_mode`` stays off: this is an auditing harness, reproducibility matters more than
resistance to floating-point attacks on the sampler.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from opacus.accountants import create_accountant
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from audit.errors import InputError
from audit.stats.accountant import noise_multiplier_for
from trainers.data import Dataset
from trainers.plain import OPTIMIZERS, accuracy

ACCOUNTANTS = ("prv", "rdp", "gdp")
SAMPLINGS = ("poisson", "shuffle")


@dataclasses.dataclass(frozen=True)
class DPConfig:
    """DP-SGD hyper-parameters. Give exactly one of ``noise_multiplier`` and ``target_epsilon``.

    ``batch_size`` is the expected batch size; as in Opacus, the sample rate is
    ``q = 1 / ceil(n / batch_size)`` and there are ``ceil(n / batch_size)`` steps per epoch.
    """

    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "prv"
    grad_sample_mode: str = "hooks"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name}={value!r}; expected an int >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer={self.optimizer!r}; expected one of {sorted(OPTIMIZERS)}")
        if not self.lr > 0 or not self.max_grad_norm > 0:
            raise InputError(f"lr={self.lr!r}, max_grad_norm={self.max_grad_norm!r}; expected both > 0")
        if self.weight_decay < 0 or self.momentum < 0:
            raise InputError(f"weight_decay={self.weight_decay!r}, momentum={self.momentum!r}; expected >= 0")
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise InputError(
                f"noise_multiplier={self.noise_multiplier!r}, target_epsilon={self.target_epsilon!r}; "
                "expected exactly one of them"
            )
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise InputError(f"noise_multiplier={self.noise_multiplier!r}; expected >= 0")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise InputError(f"target_epsilon={self.target_epsilon!r}; expected > 0")
        if not 0 < self.delta < 1:
            raise InputError(f"delta={self.delta!r}; expected in (0, 1)")
        if self.accountant not in ACCOUNTANTS:
            raise InputError(f"accountant={self.accountant!r}; expected one of {ACCOUNTANTS}")
        if self.grad_sample_mode not in ("hooks", "functorch"):
            raise InputError(f"grad_sample_mode={self.grad_sample_mode!r}; expected 'hooks' or 'functorch'")


@dataclasses.dataclass(frozen=True, eq=False)
class DPResult:
    """A DP-SGD-trained model, its claimed guarantee and utility.

    ``epsilon`` is what the accountant reports for ``delta`` after ``steps`` steps at the
    nominal ``noise_multiplier`` and ``accounting_sample_rate``. ``optimizer`` is the
    optimizer instance used (custom optimizers may keep statistics on it).
    """

    model: nn.Module
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    accounting_sample_rate: float
    steps: int
    accountant: str
    train_accuracy: float
    test_accuracy: float | None
    optimizer: DPOptimizer


def derive_seeds(seed: int) -> tuple[int, int, int]:
    """(sampling, noise, dropout) seeds from one ``seed``, via ``np.random.SeedSequence``."""
    a, b, c = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
    return int(a >> 1), int(b >> 1), int(c >> 1)


def sample_rate_and_steps(n: int, batch_size: int) -> tuple[float, int]:
    """Opacus' convention: ``steps_per_epoch = ceil(n / B)``, ``q = 1 / steps_per_epoch``."""
    steps_per_epoch = -(-n // batch_size)
    return 1.0 / steps_per_epoch, steps_per_epoch


def claimed_epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv") -> float:
    """Epsilon the accountant gives for ``steps`` Poisson-subsampled Gaussian steps (sigma, q)."""
    if accountant not in ACCOUNTANTS:
        raise InputError(f"accountant={accountant!r}; expected one of {ACCOUNTANTS}")
    acc = create_accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))] if steps else []
    return _epsilon(acc, delta)


def _epsilon(accountant, delta: float) -> float:
    """The accountant's epsilon; 0 with no steps, infinite if any step had no noise."""
    if not accountant.history:
        return 0.0
    if any(sigma == 0 and q > 0 for sigma, q, _ in accountant.history):
        return float("inf")
    with warnings.catch_warnings():  # RDP's "optimal order is the largest alpha", also inside PRV
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta=delta))


def _check_optimizer_class(optimizer_class: Any) -> type[DPOptimizer]:
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, DPOptimizer)):
        raise InputError(
            f"optimizer_class={optimizer_class!r}; expected a subclass of opacus.optimizers.DPOptimizer"
        )
    return optimizer_class


def train_dp(
    model: nn.Module,
    train: Dataset,
    *,
    config: DPConfig,
    seed: int,
    test: Dataset | None = None,
    optimizer_class: type[DPOptimizer] = DPOptimizer,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    sampling: str = "poisson",
    accounting_sample_rate: float | None = None,
    prepare_optimizer: Callable[[DPOptimizer], DPOptimizer] | None = None,
) -> DPResult:
    """Train ``model`` in place with DP-SGD on ``train``; return it with epsilon and utility.

    optimizer_class: a ``DPOptimizer`` subclass, built as Opacus builds one:
        ``optimizer_class(base_optimizer, noise_multiplier=, max_grad_norm=,
        expected_batch_size=, generator=, secure_mode=False, **optimizer_kwargs)``.
    sampling: ``"poisson"`` (correct) or ``"shuffle"`` (fixed-size batches of a random
        permutation per epoch; used by ``trainers.zoo`` to model the shuffling bug).
    accounting_sample_rate: the q given to the accountant (default: the true q).
    prepare_optimizer: called with the built optimizer before the first step; returns the
        optimizer to train with (e.g. ``lambda opt: canaries.gradient.with_canaries(opt, ...)``).
        The accountant hook stays attached.
    """
    optimizer_class = _check_optimizer_class(optimizer_class)
    if sampling not in SAMPLINGS:
        raise InputError(f"sampling={sampling!r}; expected one of {SAMPLINGS}")
    if len(train) == 0:
        raise InputError("training set is empty")
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise InputError(f"model is not Opacus-compatible: {errors}")
    q, steps_per_epoch = sample_rate_and_steps(len(train), config.batch_size)
    q_acc = q if accounting_sample_rate is None else float(accounting_sample_rate)
    if not 0 < q_acc <= 1:
        raise InputError(f"accounting_sample_rate={accounting_sample_rate!r}; expected in (0, 1]")
    sigma = config.noise_multiplier
    if sigma is None:
        sigma = noise_multiplier_for(
            target_epsilon=config.target_epsilon, delta=config.delta, sample_rate=q_acc,
            steps=config.epochs * steps_per_epoch, accountant=config.accountant,
        )
    seed_sampling, seed_noise, seed_dropout = derive_seeds(seed)
    sampling_gen = torch.Generator().manual_seed(seed_sampling)
    noise_gen = torch.Generator().manual_seed(seed_noise)
    tensors = TensorDataset(torch.as_tensor(train.x), torch.as_tensor(train.y))
    loader = DataLoader(tensors, batch_size=config.batch_size, shuffle=sampling == "shuffle", generator=sampling_gen)
    if sampling == "poisson":
        loader = DPDataLoader.from_data_loader(loader, generator=sampling_gen)
    gsm = GradSampleModule(
        model, batch_first=True, loss_reduction="mean", force_functorch=config.grad_sample_mode == "functorch"
    )
    if sampling == "poisson":
        gsm.forbid_grad_accumulation()
    # weight decay acts on the (already private) parameters, after noise: no privacy cost
    opt_kwargs = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        opt_kwargs["momentum"] = config.momentum
    base = OPTIMIZERS[config.optimizer](gsm.parameters(), **opt_kwargs)
    try:
        optimizer = optimizer_class(
            base,
            noise_multiplier=float(sigma),
            max_grad_norm=config.max_grad_norm,
            expected_batch_size=int(len(train) * q),
            loss_reduction="mean",
            generator=noise_gen,
            secure_mode=False,
            **dict(optimizer_kwargs or {}),
        )
    except TypeError as exc:
        raise InputError(f"optimizer_class {optimizer_class.__name__} could not be built: {exc}") from exc
    accountant = create_accountant(config.accountant)
    optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=q_acc))
    if prepare_optimizer is not None:
        optimizer = prepare_optimizer(optimizer)
        if not isinstance(optimizer, DPOptimizer):
            raise InputError(f"prepare_optimizer returned {type(optimizer).__name__}; expected a DPOptimizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_dropout)
        run_dp_epochs(gsm, optimizer, loader, epochs=config.epochs)
    gsm.cleanup()  # removes hooks and p.grad_sample; ``model`` is the plain module again
    model.eval()
    steps = sum(s for _, _, s in accountant.history)
    epsilon = _epsilon(accountant, config.delta)
    return DPResult(
        model=model, epsilon=epsilon, delta=config.delta, noise_multiplier=float(sigma),
        sample_rate=q, accounting_sample_rate=q_acc, steps=steps, accountant=config.accountant,
        train_accuracy=accuracy(model, train),
        test_accuracy=accuracy(model, test) if test is not None else None,
        optimizer=optimizer,
    )


def run_dp_epochs(model: nn.Module, optimizer: DPOptimizer, loader, *, epochs: int) -> None:
    """The DP-SGD loop: forward, mean cross-entropy, backward (per-sample grads), ``optimizer.step()``.

    Empty Poisson batches still take a step, so that noise is added and the step is accounted.
    """
    model.train()
    with warnings.catch_warnings():
        # Opacus' hooks on the first layer fire although the inputs need no gradient: harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(epochs):
            for x, y in loader:
                optimizer.zero_grad()
                out = model(x)
                # mean over the actual batch, 0 for an empty one (plain mean would be NaN)
                loss = F.cross_entropy(out, y, reduction="sum") / max(len(y), 1)
                loss.backward()
                optimizer.step()
