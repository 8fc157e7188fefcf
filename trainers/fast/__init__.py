"""Fast many-model DP-SGD: K MLPs trained at once with exact per-example clipping.

Public API:
    MLPShape, StackedMLP                      (ensemble)
    per_sample_sq_norms, weighted_grad_sum    (norms)
    StepSpec, CORRECT, NON_PRIVATE, FAULTS, fault   (spec)
    Subsets, PoissonBatch, poisson_batch      (sampling)
    GradientRows, StepHooks                   (hooks)
    DPSGDConfig, FastDPSGD, StepOutput, TrainResult, train, spawn_generators,
    steps_for_epochs                          (trainer)
"""

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
    "PoissonBatch", "StackedMLP", "StepHooks", "StepOutput", "StepSpec", "Subsets", "TrainResult",
    "fault", "per_sample_sq_norms", "poisson_batch", "spawn_generators", "steps_for_epochs", "train",
    "weighted_grad_sum",
]
