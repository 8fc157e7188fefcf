"""Fast many-model DP-SGD: K MLPs trained at once with exact per-example clipping.

Public API:
    MLPShape, StackedMLP                      (ensemble)
    per_sample_sq_norms, weighted_grad_sum    (norms)
    StepSpec, CORRECT, NON_PRIVATE, FAULTS, fault   (spec)
    Subsets, PoissonBatch, poisson_batch      (sampling)
    RaggedBatch                               (batch)
    GradientRows, StepHooks                   (hooks)
    DPSGDConfig, FastDPSGD, StepOutput, TrainResult, train, spawn_generators,
    steps_for_epochs                          (trainer)

Example (16 shadow models, each on a random half of the data)::

    shape = MLPShape((600, 256, 100))
    config = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=256)
    keep = torch.rand(16, n, generator=g) < 0.5                      # bool[models, records]
    result = train(x, y, keep, shape, config, steps=steps_for_epochs(10, 256, n // 2),
                   generator=torch.Generator().manual_seed(0))
    logits = result.model.logits(x_queries)                          # float[models, queries, classes]

A faulty variant is ``dataclasses.replace(config, spec=fault("no_clipping"))``; canary
hooks are in :mod:`trainers.fast.hooks`.
"""

from trainers.fast.batch import RaggedBatch
from trainers.fast.ensemble import MLPShape, StackedMLP
from trainers.fast.hooks import GradientRows, StepHooks
from trainers.fast.norms import per_sample_sq_norms, weighted_grad_sum
from trainers.fast.sampling import PoissonBatch, Subsets, poisson_batch
from trainers.fast.spec import CORRECT, FAULTS, NON_PRIVATE, StepSpec, fault
from trainers.fast.trainer import (
    DPSGDConfig,
    FastDPSGD,
    StepOutput,
    TrainResult,
    spawn_generators,
    steps_for_epochs,
    train,
)

__all__ = [
    "CORRECT", "FAULTS", "NON_PRIVATE", "DPSGDConfig", "FastDPSGD", "GradientRows", "MLPShape",
    "PoissonBatch", "RaggedBatch", "StackedMLP", "StepHooks", "StepOutput", "StepSpec", "Subsets", "TrainResult",
    "fault", "per_sample_sq_norms", "poisson_batch", "spawn_generators", "steps_for_epochs", "train",
    "weighted_grad_sum",
]
