"""Hook points for white-box canaries in the fast trainer.

Two things a gradient-canary audit (Nasr et al. 2023, "Tight auditing of differentially
private machine learning", Sec. 4; Steinke et al. 2023, "Privacy auditing with one (1)
training run", Sec. 5) needs from the trainer:

* **extra per-sample gradient rows** added to a step *before clipping*: a Dirac
  canary is a row with value ``C`` on one coordinate no real gradient uses. The caller
  decides per step which rows are in the batch (e.g. by its own Poisson draw with the
  trainer's rate); the trainer clips each row exactly like a real example (factor
  ``min(1, C / (||row|| + 1e-6))`` under per-example clipping), adds it to its model's
  summed gradient, and counts it in that model's actual batch size.
* **recording** the privatised gradient (clipped sum + noise, normalised; before weight
  decay, momentum and learning rate) of chosen flat coordinates at every step. With
  plain SGD this is ``-(theta_{t+1} - theta_t) / lr``.

Flat coordinates are indices into one model's parameter vector in
:meth:`~trainers.fast.ensemble.StackedMLP.flat` order
(:meth:`~trainers.fast.ensemble.MLPShape.weight_coord` and ``bias_coord`` compute them).

Example: Dirac canaries on the weights from an input feature that is always 0, each in
model k's batch with the real records' rate ``q_k`` (the caller's own generator)::

    coords = torch.tensor([[shape.weight_coord(0, j, dead_feature)] for j in range(m)])
    def extra_rows(step):
        present = (torch.rand(K, m, generator=canary_gen) < q[:, None]) & canary_in[:, :]
        model, which = present.nonzero(as_tuple=True)
        return GradientRows(model=model, coords=coords[which],
                            values=torch.full((len(model), 1), C))
    hooks = StepHooks(extra_rows=extra_rows, watch=coords[:, 0])
    result = train(x, y, keep, shape, config, steps=T, generator=g, hooks=hooks)
    result.watched   # float[T, K, m]: the noisy update of every canary coordinate
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from audit.errors import InputError


@dataclass(frozen=True)
class GradientRows:
    """Extra per-sample gradients, sparse: row ``r`` belongs to model ``model[r]`` and
    has value ``values[r, j]`` at flat coordinate ``coords[r, j]`` (distinct within a
    row), zero elsewhere.

    Attributes:
        model: ``long[R]``.
        coords: ``long[R, J]``.
        values: ``float[R, J]``.
    """

    model: torch.Tensor
    coords: torch.Tensor
    values: torch.Tensor

    def validate(self, n_models: int, n_params: int) -> None:
        r = self.model.shape[0]
        if self.model.dim() != 1 or self.coords.dim() != 2 or self.coords.shape[0] != r or self.values.shape != self.coords.shape:
            raise InputError(
                f"GradientRows shapes model {tuple(self.model.shape)}, coords {tuple(self.coords.shape)}, "
                f"values {tuple(self.values.shape)}: expected [R], [R, J], [R, J]"
            )
        if r and (self.model.min() < 0 or self.model.max() >= n_models):
            raise InputError(f"GradientRows.model has values outside [0, {n_models}): expected model indices")
        if self.coords.numel() and (self.coords.min() < 0 or self.coords.max() >= n_params):
            raise InputError(f"GradientRows.coords has values outside [0, {n_params}): expected flat coordinates")
        if self.coords.shape[1] > 1 and (self.coords.sort(1).values.diff(dim=1) == 0).any():
            raise InputError("GradientRows.coords repeats a coordinate within a row: expected distinct coordinates")


ExtraRows = Callable[[int], Optional[GradientRows]]
"""``extra_rows(step) -> rows or None``: called once per step, ``step`` counting from 0."""


@dataclass(frozen=True)
class StepHooks:
    """Canary hooks of a :class:`~trainers.fast.trainer.FastDPSGD`.

    Attributes:
        extra_rows: per-step supplier of extra gradient rows, or None.
        watch: ``long[J]`` flat coordinates whose privatised gradient is recorded at
            every step, or None.
    """

    extra_rows: Optional[ExtraRows] = None
    watch: Optional[torch.Tensor] = None
