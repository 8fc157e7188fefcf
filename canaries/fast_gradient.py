"""White-box Dirac gradient canaries in the fast many-model DP-SGD trainer.

The fast-trainer counterpart of :mod:`canaries.gradient` (Opacus side): m Dirac gradient
canaries per model (Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1)
training run", Section 7; Nasr et al. 2023, "Tight auditing of differentially private
machine learning", Section 3), inserted through :class:`trainers.fast.hooks.StepHooks`.

Where the canaries live
-----------------------
The data ``x: float[n, d]`` gets m extra input features that are always zero
(``[x, 0]: float[n, d + m]``), and canary i of every model is the first-layer weight
``W_0[row, d + i]`` (flat coordinate ``shape.weight_coord(0, row, d + i)``, ``row = 0``
by default). A real example's first-layer weight gradient is its output gradient times
its input, so every real per-sample gradient is exactly zero there, whatever the
labels, the depth or the step; the canaries never change the models' outputs either,
since the features they sit on are zero. The canaries all share one row, one column
each, so their supports are disjoint.

What is inserted
----------------
Canary i of model k is included with probability 1/2 (``members: bool[K, m]``, drawn
from model k's canary generator unless given). At every step an included canary is
present independently with model k's Poisson rate ``q_k = expected_batch_size / m_k``
(the rate of its real records, :meth:`trainers.fast.sampling.Subsets.sample_rates`),
drawn from model k's canary generator: model k's canaries depend on nothing but its own
two generators, so a K-model run gives each model the canaries of a single-model run.
A present canary is one extra per-sample gradient row with value ``norm_factor * C`` on
its coordinate (default ``norm_factor = 1000``): correct per-example clipping brings it to
``C * 1000C / (1000C + 1e-6)`` (Opacus' stabiliser), missing clipping lets ``1000 C``
through. The row counts in the model's batch size, like a real example.

Readings
--------
The trainer records the privatised gradient at the canary coordinates every step:
``(clipped sum + N(0, sigma^2 C^2)) / expected_batch_size``, before learning rate, weight
decay and momentum. It is a gradient, not an update, and the canary rows are inserted
with a positive sign, so no sign needs undoing; multiplying by the configured expected
batch size gives the reading on the unnormalised scale of :mod:`canaries.iterate_scores`:

    x_t = b_t * C + N(0, sigma^2 C^2)        for a correct step.

The auditor multiplies by the *configured* expected batch size whatever the step does:
it audits the claimed mechanism, so a step that normalises differently (a faulty spec)
shows up in the readings instead of being undone. The likelihood-ratio statistic is
computed under the claimed ``(q_k, sigma, C)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import torch

from audit.errors import InputError
from canaries.iterate_scores import all_iterates, likelihood_ratio
from trainers.fast import DPSGDConfig, GradientRows, MLPShape, StepHooks, TrainResult, spawn_generators, train
from trainers.fast.sampling import Subsets

DEFAULT_NORM_FACTOR = 1000.0


@dataclasses.dataclass(frozen=True)
class FastCanaryResult:
    """One model's canaries after training.

    Attributes:
      members: bool[canaries]; which canaries were included.
      presence: bool[steps, canaries]; whether each canary was in each step's batch.
      readings: float64[steps, canaries]; privatised gradient at the canary's coordinate
        times the configured expected batch size.
      likelihood_ratio: float64[canaries]; LLR of the readings, "present at rate q"
        against "never present" (:func:`canaries.iterate_scores.likelihood_ratio`).
      all_iterates: float64[canaries]; sum of the readings (Nasr et al. 2023).
      sample_rate: q of this model (its canaries' per-step presence probability).
      noise_multiplier, max_grad_norm, norm_factor: the settings read under.
    """

    members: np.ndarray
    presence: np.ndarray
    readings: np.ndarray
    likelihood_ratio: np.ndarray
    all_iterates: np.ndarray
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    norm_factor: float


@dataclasses.dataclass(frozen=True)
class FastCanaryRun:
    """A fast-trainer run with canaries.

    Attributes:
      models: one :class:`FastCanaryResult` per model.
      train: the trainer's result (models on ``d + m`` inputs, batch sizes counting the
        canary rows, the watched gradients ``float[steps, K, m]``).
      shape: the trained shape ``(d + m, ..., c)``.
      coords: long[canaries]; the canaries' flat coordinates (the same in every model).
    """

    models: tuple[FastCanaryResult, ...]
    train: TrainResult
    shape: MLPShape
    coords: torch.Tensor


def canary_shape(shape: MLPShape, n_canaries: int) -> MLPShape:
    """``shape`` with ``n_canaries`` more input features (the always-zero canary inputs)."""
    return MLPShape((shape.widths[0] + n_canaries,) + tuple(shape.widths[1:]))


def canary_coords(shape: MLPShape, n_canaries: int, *, row: int = 0) -> torch.Tensor:
    """long[canaries]: flat coordinate ``W_0[row, d + i]`` of canary i; ``shape`` is the
    real data's shape (input width d)."""
    d = shape.widths[0]
    wide = canary_shape(shape, n_canaries)
    return torch.tensor([wide.weight_coord(0, row, d + i) for i in range(n_canaries)], dtype=torch.long)


def _generators(generator, n_models: int, name: str) -> list[torch.Generator]:
    if isinstance(generator, torch.Generator):
        return spawn_generators(generator, n_models)
    gens = list(generator)
    if len(gens) != n_models or not all(isinstance(g, torch.Generator) for g in gens):
        raise InputError(f"{name}: expected a torch.Generator or {n_models} of them (one per model)")
    return gens


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name}={value!r}: expected an integer >= 1")
    return int(value)


def train_with_canaries(
    x: torch.Tensor,
    y: torch.Tensor,
    keep: torch.Tensor,
    shape: MLPShape,
    config: DPSGDConfig,
    *,
    n_canaries: int,
    steps: int,
    generator: torch.Generator | Sequence[torch.Generator],
    canary_generator: torch.Generator | Sequence[torch.Generator],
    members: Optional[np.ndarray] = None,
    norm_factor: float = DEFAULT_NORM_FACTOR,
    row: int = 0,
    noise_threads: int = 1,
) -> FastCanaryRun:
    """Train K models with :func:`trainers.fast.train` and m Dirac canaries in each.

    Args:
      x: float[n, d] real features; m zero features are appended for the canaries.
      y: long[n]; keep: bool[K, n]; config: as for :func:`trainers.fast.train`.
      shape: the real data's widths ``(d, ..., c)``.
      n_canaries: m >= 1 canaries per model.
      steps: T.
      generator: the run's generator (or K), passed to :func:`trainers.fast.train`.
      canary_generator: one generator (K are spawned from it) or K: model k's member
        draws (if ``members`` is None), then its per-step presence draws.
      members: bool[K, m], or None to draw Bernoulli(1/2).
      norm_factor: inserted norm is ``norm_factor * max_grad_norm``.
      row: first-layer row holding the canaries.
    """
    m = _check_positive_int("n_canaries", n_canaries)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise InputError(f"steps={steps!r}: expected an integer >= 0")
    if isinstance(norm_factor, bool) or not isinstance(norm_factor, (int, float)) or not 0 < norm_factor < math.inf:
        raise InputError(f"norm_factor={norm_factor!r}: expected a finite number > 0")
    if x.dim() != 2 or x.shape[1] != shape.widths[0] or not x.is_floating_point():
        raise InputError(f"x has shape {tuple(x.shape)} and dtype {x.dtype}: expected float[n, {shape.widths[0]}]")
    if not (isinstance(row, int) and 0 <= row < shape.widths[1]):
        raise InputError(f"row={row!r}: expected a first-layer row in [0, {shape.widths[1]})")
    if keep.dim() != 2 or keep.dtype != torch.bool:
        raise InputError(f"keep has dtype {keep.dtype} and shape {tuple(keep.shape)}: expected bool[models, records]")
    k = keep.shape[0]
    canary_gens = _generators(canary_generator, k, "canary_generator")
    if members is None:
        members_t = torch.stack([torch.rand(m, generator=g) < 0.5 for g in canary_gens])
    else:
        members = np.asarray(members)
        if members.shape != (k, m) or members.dtype != bool:
            raise InputError(f"members with shape {members.shape} and dtype {members.dtype}: expected bool[{k}, {m}]")
        members_t = torch.as_tensor(members)
    rates = Subsets.from_keep(keep).sample_rates(config.expected_batch_size)

    wide = canary_shape(shape, m)
    coords = canary_coords(shape, m, row=row)
    value = float(norm_factor) * float(config.max_grad_norm)
    presence: list[torch.Tensor] = []

    def extra_rows(step: int) -> GradientRows:
        # one draw of m uniforms per model from its own generator, included or not
        present = torch.stack([torch.rand(m, generator=g) < float(q) for g, q in zip(canary_gens, rates)])
        present &= members_t
        presence.append(present)
        model, which = present.nonzero(as_tuple=True)
        return GradientRows(model=model, coords=coords[which].unsqueeze(1), values=torch.full((len(model), 1), value))

    x_wide = torch.cat([x, x.new_zeros(x.shape[0], m)], dim=1)
    result = train(
        x_wide, y, keep, wide, config, steps=steps, generator=generator,
        hooks=StepHooks(extra_rows=extra_rows, watch=coords), noise_threads=noise_threads,
    )
    watched = result.watched if result.watched is not None else torch.zeros(0, k, m)
    readings = watched.double().numpy() * float(config.expected_batch_size)  # [T, K, m]
    pres = torch.stack(presence).numpy() if presence else np.zeros((0, k, m), dtype=bool)
    sigma, c = float(config.noise_multiplier), float(config.max_grad_norm)
    models = tuple(
        FastCanaryResult(
            members=members_t[j].numpy().copy(),
            presence=pres[:, j].copy(),
            readings=readings[:, j].copy(),
            likelihood_ratio=likelihood_ratio(readings[:, j], sample_rate=float(rates[j]), noise_multiplier=sigma, max_grad_norm=c),
            all_iterates=all_iterates(readings[:, j]),
            sample_rate=float(rates[j]),
            noise_multiplier=sigma,
            max_grad_norm=c,
            norm_factor=float(norm_factor),
        )
        for j in range(k)
    )
    return FastCanaryRun(models=models, train=result, shape=wide, coords=coords)
