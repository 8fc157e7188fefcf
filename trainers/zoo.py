"""A zoo of deliberately faulty DP-SGD implementations (Opacus side), for testing auditors.

Each variant is the correct Opacus DP-SGD (``trainers.opacus_dp.train_dp`` with
``opacus.optimizers.DPOptimizer``) with ONE realistic change: either a ``DPOptimizer``
subclass overriding exactly one step (``clip_and_accumulate``, ``add_noise`` or
``scale_grad``) or one flag of ``train_dp`` (sampling, accountant sample rate). Every
variant *claims* the epsilon the correct algorithm would get: the accountant records the
nominal noise multiplier and sample rate; only ``accountant_rate_10x_small`` hands it a
wrong rate, which is its bug. An auditor that finds no violation for a variant lacks power.

The bugs are of the kinds privacy auditing is meant to catch (Tramèr et al., "Debugging
Differential Privacy: A Case Study for Privacy Auditing", 2022, audits an implementation
with such a bug; Nasr et al., "Tight Auditing of Differentially Private Machine Learning",
USENIX Security 2023). Fixed shuffled batches accounted as Poisson sampling is studied by
Chua et al., "How Private are DP-SGD Implementations?", ICML 2024, and by Lebeda et al.,
"Avoiding Pitfalls for Privacy Accounting of Subsampled Mechanisms under Composition",
2024. Dividing by the realised Poisson batch size makes the update depend on whether the
target record was sampled beyond its clipped contribution, which the accountant ignores.

Names shared with ``trainers.fast.spec.FAULTS`` mean the same step there (e.g.
``per_batch_clipping`` clips the *summed* batch gradient to C), so the two trainers can be
cross-checked.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import torch
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _generate_noise, _mark_as_processed
from torch import nn

from audit.errors import InputError
from trainers.data import Dataset
from trainers.opacus_dp import DPConfig, DPResult, sample_rate_and_steps, train_dp

CLIP_EPS = 1e-6  # Opacus' denominator guard in min(1, C / (||g|| + 1e-6))


def per_sample_clip_factors(opt: DPOptimizer, params: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Opacus' per-sample factors ``float[batch] = min(1, C / (||g_i|| + 1e-6))``.

    ``||g_i||`` is the norm over ``params`` (default: all of the optimizer's parameters).
    """
    samples = [opt._get_flat_grad_sample(p) for p in (params if params is not None else opt.params)]
    if len(samples[0]) == 0:
        return torch.zeros(0, device=samples[0].device)
    norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in samples], dim=1).norm(2, dim=1)
    return (opt.max_grad_norm / (norms + CLIP_EPS)).clamp(max=1.0)


def accumulate(opt: DPOptimizer, factor_for: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """``p.summed_grad += sum_i factor_for(p)[i] * g_i`` for every parameter, as Opacus does."""
    for p in opt.params:
        _check_processed_flag(p.grad_sample)
        grad_sample = opt._get_flat_grad_sample(p).to(p.dtype)
        grad = torch.einsum("i,i...", factor_for(p).to(grad_sample.device, p.dtype), grad_sample)
        p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
        _mark_as_processed(p.grad_sample)


def add_noise_with_std(opt: DPOptimizer, std: float) -> None:
    """``p.grad = p.summed_grad + N(0, std^2)``, drawn as Opacus draws it (same generator order)."""
    for p in opt.params:
        _check_processed_flag(p.summed_grad)
        noise = _generate_noise(std=std, reference=p.summed_grad, generator=opt.generator, secure_mode=opt.secure_mode)
        p.grad = (p.summed_grad + noise).view_as(p)
        _mark_as_processed(p.summed_grad)


def _ones(opt: DPOptimizer) -> Callable[[torch.Tensor], torch.Tensor]:
    n = len(opt._get_flat_grad_sample(opt.params[0]))
    return lambda p: torch.ones(n)


class NoClippingOptimizer(DPOptimizer):
    """Bug: per-sample gradients are summed without clipping (sensitivity unbounded)."""

    def clip_and_accumulate(self) -> None:
        accumulate(self, _ones(self))


class PerBatchClippingOptimizer(DPOptimizer):
    """Bug: the summed batch gradient is clipped to C instead of each example's gradient."""

    def clip_and_accumulate(self) -> None:
        accumulate(self, _ones(self))
        total = torch.stack([p.summed_grad.norm(2) for p in self.params]).norm(2)
        factor = (self.max_grad_norm / (total + CLIP_EPS)).clamp(max=1.0)
        for p in self.params:
            p.summed_grad = p.summed_grad * factor


class PartialClippingOptimizer(DPOptimizer):
    """Bug: only weight tensors (ndim >= 2) are clipped, with a norm over them alone; biases are summed raw."""

    def clip_and_accumulate(self) -> None:
        weights = [p for p in self.params if p.dim() >= 2]
        factors = per_sample_clip_factors(self, weights)
        ones = torch.ones_like(factors)
        accumulate(self, lambda p: factors if p.dim() >= 2 else ones)


class NoiseSigmaNotSigmaCOptimizer(DPOptimizer):
    """Bug: noise std sigma instead of sigma * C (the clipping norm is forgotten)."""

    def add_noise(self) -> None:
        add_noise_with_std(self, self.noise_multiplier)


class NoiseDividedByBatchTwiceOptimizer(DPOptimizer):
    """Bug: noise std sigma * C / B added to the sum, which is then divided by B again."""

    def add_noise(self) -> None:
        add_noise_with_std(self, self.noise_multiplier * self.max_grad_norm / self.expected_batch_size)


class HalfNoiseOptimizer(DPOptimizer):
    """Bug: noise std sigma * C / 2 (sensitivity taken as C/2, e.g. clipping range [-C/2, C/2])."""

    def add_noise(self) -> None:
        add_noise_with_std(self, 0.5 * self.noise_multiplier * self.max_grad_norm)


class ReusedNoiseOptimizer(DPOptimizer):
    """Bug: the noise is drawn at the first step and the same noise is added at every step."""

    def add_noise(self) -> None:
        if not hasattr(self, "_fixed_noise"):
            self._fixed_noise = [
                _generate_noise(std=self.noise_multiplier * self.max_grad_norm, reference=p.summed_grad,
                                generator=self.generator, secure_mode=self.secure_mode)
                for p in self.params
            ]
        for p, noise in zip(self.params, self._fixed_noise):
            _check_processed_flag(p.summed_grad)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)


class ActualBatchNormalisationOptimizer(DPOptimizer):
    """Bug: the noisy sum is divided by the realised Poisson batch size, not the expected one.

    The realised size |B| is data-dependent (it counts the target record), so the update
    leaks it; the accountant assumes the data-independent q*n.
    """

    def scale_grad(self) -> None:
        if self.loss_reduction == "mean":
            actual = max(len(self._get_flat_grad_sample(self.params[0])), 1)
            for p in self.params:
                p.grad /= actual


@dataclasses.dataclass(frozen=True)
class ZooVariant:
    """One faulty DP-SGD: how to build it, what the bug is, and how its claim is computed."""

    name: str
    bug: str
    claim: str
    optimizer_class: type[DPOptimizer] = DPOptimizer
    sampling: str = "poisson"
    accounting_rate_factor: float = 1.0


NOMINAL = "accountant on the nominal (sigma, q = 1/ceil(n/B), steps), as the correct DP-SGD"

ZOO: dict[str, ZooVariant] = {}


def register_variant(variant: ZooVariant, *, force: bool = False) -> None:
    """Add ``variant`` to :data:`ZOO` under its name."""
    if variant.name in ZOO and not force:
        raise InputError(f"a zoo variant named {variant.name!r} is already registered")
    ZOO[variant.name] = variant


for _variant in (
    ZooVariant("correct", "none: Opacus DP-SGD (control)", NOMINAL),
    ZooVariant("no_clipping", "per-sample gradients are not clipped", NOMINAL, NoClippingOptimizer),
    ZooVariant("per_batch_clipping", "the summed batch gradient is clipped to C, not each example's",
               NOMINAL, PerBatchClippingOptimizer),
    ZooVariant("partial_clipping", "only weight matrices are clipped; bias gradients are summed unclipped",
               NOMINAL, PartialClippingOptimizer),
    ZooVariant("noise_sigma_not_sigma_c", "noise std is sigma instead of sigma*C", NOMINAL,
               NoiseSigmaNotSigmaCOptimizer),
    ZooVariant("noise_divided_by_batch_twice", "noise std sigma*C/B is added to the sum, then divided by B again",
               NOMINAL, NoiseDividedByBatchTwiceOptimizer),
    ZooVariant("half_noise", "noise std is sigma*C/2", NOMINAL, HalfNoiseOptimizer),
    ZooVariant("reused_noise", "the same noise vector is added at every step", NOMINAL, ReusedNoiseOptimizer),
    ZooVariant("actual_batch_normalisation", "the noisy sum is divided by the realised batch size |B|, not q*n",
               NOMINAL, ActualBatchNormalisationOptimizer),
    ZooVariant("shuffled_batches_as_poisson", "fixed-size batches of a per-epoch shuffle, accounted as Poisson",
               NOMINAL, sampling="shuffle"),
    ZooVariant("accountant_rate_10x_small", "the accountant is given sample rate q/10",
               "accountant on (sigma, q/10, steps): the claim itself is the bug", accounting_rate_factor=0.1),
):
    register_variant(_variant)


def get_variant(name: str) -> ZooVariant:
    """The registered variant ``name``."""
    if name not in ZOO:
        raise InputError(f"unknown zoo variant {name!r}; expected one of {sorted(ZOO)}")
    return ZOO[name]


def train_faulty(
    name: str,
    model: nn.Module,
    train: Dataset,
    *,
    config: DPConfig,
    seed: int,
    test: Dataset | None = None,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    prepare_optimizer: Callable[[DPOptimizer], DPOptimizer] | None = None,
) -> DPResult:
    """Train ``model`` with the zoo variant ``name``; ``DPResult.epsilon`` is the variant's claim.

    ``optimizer_kwargs`` and ``prepare_optimizer`` are passed to ``train_dp`` (e.g. to
    attach gradient canaries with ``canaries.gradient.with_canaries``).

    With ``config.target_epsilon`` the noise multiplier is calibrated on the claimed
    (accounted) sample rate, as the faulty code would.
    """
    variant = get_variant(name)
    q_true, _ = sample_rate_and_steps(max(len(train), 1), config.batch_size)
    rate = None if variant.accounting_rate_factor == 1.0 else q_true * variant.accounting_rate_factor
    return train_dp(
        model, train, config=config, seed=seed, test=test, optimizer_class=variant.optimizer_class,
        optimizer_kwargs=optimizer_kwargs, sampling=variant.sampling, accounting_sample_rate=rate,
        prepare_optimizer=prepare_optimizer,
    )
