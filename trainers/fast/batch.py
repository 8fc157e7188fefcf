"""One step's batches of K models, stored ragged: the models' examples one after another.

Model ``k``'s examples are rows ``sum(counts[:k]) .. sum(counts[:k + 1])`` of
``x: float[N, d]`` and ``y: long[N]``, with ``N`` the sum of the batch sizes. Nothing is padded: every
matmul of model ``k`` reads exactly its own rows (:meth:`RaggedBatch.split`), so its
results do not depend on the other models' batches, on K or on the workers that step
the models, and no product is spent on padding (Poisson batches of the largest of
K models are about 10% above the expected size at K = 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from audit.errors import InputError


@dataclass(frozen=True)
class RaggedBatch:
    """Attributes:
        x: ``float[N, d]``: the K models' examples, model by model.
        y: ``long[N]``: their labels.
        counts: model ``k``'s number of examples, ``sum(counts) == N``.
        x_sq: ``float[N]``: the squared norms of ``x``'s rows when known, else None.
    """

    x: torch.Tensor
    y: torch.Tensor
    counts: tuple[int, ...]
    x_sq: Optional[torch.Tensor] = None

    @classmethod
    def from_padded(cls, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> "RaggedBatch":
        """From padded ``x: float[K, B, d]``, ``y: long[K, B]`` and ``mask: bool[K, B]``
        (True for real entries, anywhere in a row): each model's real rows in order."""
        return cls(x=x[mask], y=y[mask], counts=tuple(mask.sum(1).tolist()))

    @classmethod
    def gather(cls, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, counts: Sequence[int],
               buffer: Optional[torch.Tensor] = None, x_sq: Optional[torch.Tensor] = None) -> "RaggedBatch":
        """Records ``index: long[N]`` of ``x: float[n, d]``, ``y: long[n]`` (and of the rows'
        squared norms ``x_sq: float[n]`` when given), the first ``counts[0]`` model 0's
        and so on; the features are copied into ``buffer`` (``float[>= N, d]``) when given."""
        out = None if buffer is None else buffer[: len(index)]
        # index_select: the same copy as x[index] without the advanced-indexing path
        rows = torch.index_select(x, 0, index) if out is None else torch.index_select(x, 0, index, out=out)
        return cls(x=rows, y=y[index], counts=tuple(counts), x_sq=None if x_sq is None else x_sq[index])

    def __post_init__(self) -> None:
        if (self.x.dim() != 2 or self.y.shape != self.x.shape[:1] or sum(self.counts) != len(self.x)
                or (self.x_sq is not None and self.x_sq.shape != self.y.shape)):
            raise InputError(
                f"x {tuple(self.x.shape)}, y {tuple(self.y.shape)}, counts summing to {sum(self.counts)}: "
                "expected float[N, d], long[N] and batch sizes summing to N (and x_sq float[N])"
            )

    @property
    def n_models(self) -> int:
        return len(self.counts)

    @property
    def sizes(self) -> torch.Tensor:
        """``long[K]``: the batch sizes."""
        return torch.tensor(self.counts, dtype=torch.long)

    def split(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Model by model views of a ``[N, ...]`` tensor laid out like ``x``."""
        return t.split(list(self.counts))

    def per_model_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``float[K]``: the sum of each model's entries of ``t: float[N]`` (0 if none)."""
        if not self.counts:
            return t.new_zeros(0)
        return torch.stack([part.sum() for part in self.split(t)])


class Workspace:
    """Activation buffers kept across steps: ``take(name, rows, cols)`` is a ``[rows,
    cols]`` view of a buffer that grows (by a quarter more than asked) only when a batch
    is larger than any before, so a step reuses the memory of the last one instead of
    allocating its activations afresh."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, rows: int, cols: int) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.shape[1] != cols or buf.shape[0] < rows:
            buf = torch.empty(int(rows * 1.25) + 1, cols, dtype=self.dtype)
            self._buffers[name] = buf
        return buf[:rows]
