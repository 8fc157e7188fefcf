"""What one DP-SGD step does, as a small frozen record, so that a faulty variant is the
correct step with one field changed.

The correct step is Abadi et al. 2016, "Deep learning with differential privacy",
Algorithm 1, as implemented by Opacus ``DPOptimizer`` with ``loss_reduction="mean"``:
clip each example's gradient to norm ``C`` with factor ``min(1, C / (||g_i|| + 1e-6))``,
sum, add ``N(0, sigma^2 C^2)`` to every coordinate, divide by the expected batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from audit.errors import InputError

_CLIPPING = ("per_example", "per_batch", "none")
_NOISE_STD = ("sigma_c", "sigma")
_NORMALISE = ("expected", "actual")


@dataclass(frozen=True)
class StepSpec:
    """One DP-SGD step's behaviour.

    Attributes:
        clipping: ``"per_example"`` (correct), ``"per_batch"`` (clip the summed batch
            gradient to ``C`` instead), ``"none"``.
        add_noise: add Gaussian noise at all.
        noise_std: ``"sigma_c"`` (correct: std ``sigma * C``) or ``"sigma"`` (std
            ``sigma``, the bug of forgetting the clipping norm).
        noise_factor: multiplies the noise std (1.0 is correct).
        normalise: divide by the ``"expected"`` batch size (correct, Opacus) or the
            ``"actual"`` (data-dependent) batch size of each model's step.
        reuse_noise: draw the noise once and add the same noise at every step.
        noise_over_batch: divide the noise std by the expected batch size as well (noise
            std ``sigma * C / B`` added to the sum, which is then divided by ``B`` again).
    """

    clipping: Literal["per_example", "per_batch", "none"] = "per_example"
    add_noise: bool = True
    noise_std: Literal["sigma_c", "sigma"] = "sigma_c"
    noise_factor: float = 1.0
    normalise: Literal["expected", "actual"] = "expected"
    reuse_noise: bool = False
    noise_over_batch: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("clipping", _CLIPPING), ("noise_std", _NOISE_STD), ("normalise", _NORMALISE)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name}={getattr(self, name)!r}: expected one of {allowed}")
        if not self.noise_factor >= 0:
            raise InputError(f"noise_factor={self.noise_factor!r}: expected a number >= 0")


CORRECT = StepSpec()
"""The DP-SGD step of Opacus."""

NON_PRIVATE = StepSpec(clipping="none", add_noise=False, normalise="actual")
"""Plain minibatch SGD on the mean loss of the (Poisson) batch."""

FAULTS: dict[str, StepSpec] = {
    "no_clipping": replace(CORRECT, clipping="none"),
    "per_batch_clipping": replace(CORRECT, clipping="per_batch"),
    "noise_sigma_not_sigma_c": replace(CORRECT, noise_std="sigma"),
    "actual_batch_normalisation": replace(CORRECT, normalise="actual"),
    "reused_noise": replace(CORRECT, reuse_noise=True),
    "half_noise": replace(CORRECT, noise_factor=0.5),
    "no_noise": replace(CORRECT, add_noise=False),
    "noise_divided_by_batch_twice": replace(CORRECT, noise_over_batch=True),
}
"""Faulty variants, each the correct step with one field changed."""


def fault(name: str) -> StepSpec:
    """The faulty variant called ``name`` (a key of :data:`FAULTS`)."""
    if name not in FAULTS:
        raise InputError(f"fault={name!r}: expected one of {sorted(FAULTS)}")
    return FAULTS[name]
