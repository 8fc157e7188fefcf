"""Poisson subsampling for K models at once.

Each model ``k`` trains on its own subset ``{j : keep[k, j]}`` of size ``m_k`` and each
step includes each of its records independently with probability
``q_k = expected_batch_size / m_k`` (Poisson sampling, Abadi et al. 2016, Sec. 3.1;
the sampler Opacus' privacy accounting assumes). The draw for model ``k`` is the one
Opacus' ``UniformWithReplacementSampler`` makes over that subset,
``torch.rand(m_k, generator) < q_k``, from model ``k``'s own generator, so model ``k``'s
batches do not depend on K. :func:`train <trainers.fast.trainer.train>` gathers them
ragged (:class:`trainers.fast.batch.RaggedBatch`); :func:`poisson_batch` pads them to the
largest, the form :meth:`FastDPSGD.step <trainers.fast.trainer.FastDPSGD.step>` takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from audit.errors import InputError


@dataclass(frozen=True)
class Subsets:
    """Each model's training records.

    Attributes:
        members: ``long[K, m_max]``: model ``k``'s record indices in ascending order in
            its first ``counts[k]`` entries, padding after.
        counts: ``long[K]``: subset sizes ``m_k``.
    """

    members: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def from_keep(cls, keep: torch.Tensor) -> "Subsets":
        """From ``keep: bool[K, n]``."""
        if keep.dtype != torch.bool or keep.dim() != 2:
            raise InputError(f"keep has dtype {keep.dtype} and shape {tuple(keep.shape)}: expected bool[models, records]")
        counts = keep.sum(1)
        # A stable sort puts each row's True positions first, in ascending order.
        members = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, : int(counts.max())]
        return cls(members=members, counts=counts)

    def sample_rates(self, expected_batch_size: int) -> torch.Tensor:
        """``q_k = expected_batch_size / m_k``: ``float64[K]``; every ``q_k`` must be <= 1."""
        if (self.counts < expected_batch_size).any():
            raise InputError(
                f"expected_batch_size={expected_batch_size}: expected at most the smallest "
                f"training subset, {int(self.counts.min())} records"
            )
        return expected_batch_size / self.counts.to(torch.float64)


@dataclass(frozen=True)
class PoissonBatch:
    """One step's batches for K models.

    Attributes:
        index: ``long[K, B]``: record indices, padded with 0 beyond each batch.
        mask: ``bool[K, B]``: True for real entries; ``B`` is the largest batch.
    """

    index: torch.Tensor
    mask: torch.Tensor

    @property
    def sizes(self) -> torch.Tensor:
        """``long[K]``: actual batch sizes."""
        return self.mask.sum(1)


def poisson_batch(subsets: Subsets, rates: torch.Tensor, generators: Sequence[torch.Generator]) -> PoissonBatch:
    """Draw one Poisson batch per model.

    Args:
        subsets: the models' training records.
        rates: ``float[K]`` inclusion probabilities ``q_k``.
        generators: one per model; model ``k`` consumes ``m_k`` uniforms from its own.
    """
    index, counts = draw_ragged(subsets, rates, generators)
    return pad_batches(index.split(list(counts)))


def draw_ragged(
    subsets: Subsets, rates: torch.Tensor, generators: Sequence[torch.Generator], uniforms: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Each model's Poisson batch (``torch.rand(m_k, generator_k) < q_k`` over its subset,
    as Opacus' sampler draws it), returned ragged: ``(index: long[N], counts)``, model ``k``'s records in
    ``index[sum(counts[:k]) : sum(counts[:k + 1])]``. Each model's uniforms are drawn into
    row ``k`` of ``uniforms`` (``float32[K, >= m_max]``, kept across steps; entries beyond
    ``m_k`` must hold ``inf``, which no rate exceeds), so that one comparison and one
    gather serve all K models."""
    k, m_max = subsets.members.shape
    if uniforms is None:
        uniforms = empty_uniforms(subsets)
    if uniforms.shape[0] != k or uniforms.shape[1] < m_max or uniforms.dtype != torch.float32:
        raise InputError(f"uniforms {tuple(uniforms.shape)} {uniforms.dtype}: expected float32[{k}, >= {m_max}]")
    for row, g, m in zip(uniforms, generators, subsets.counts.tolist()):
        torch.rand(m, generator=g, out=row[:m])
    # a float32 tensor against a Python float compares in float32: so do the rows
    chosen = uniforms[:, :m_max] < rates.to(torch.float32).unsqueeze(1)
    return subsets.members[chosen], tuple(chosen.sum(1).tolist())


def empty_uniforms(subsets: Subsets) -> torch.Tensor:
    """A buffer for :func:`draw_ragged`: ``float32[K, m_max]`` filled with ``inf`` (the
    entries beyond a model's subset are never drawn, whatever the rate)."""
    return torch.full(tuple(subsets.members.shape), math.inf, dtype=torch.float32)


def pad_batches(picked: Sequence[torch.Tensor], width: int | None = None) -> PoissonBatch:
    """The batches ``picked`` padded to ``width`` (default: the largest, at least 1)."""
    sizes = torch.tensor([len(p) for p in picked], dtype=torch.long)
    largest = int(sizes.max()) if len(picked) else 0
    if width is None:
        width = max(1, largest)
    elif width < largest:
        raise InputError(f"width={width}: expected at least the largest batch, {largest}")
    mask = torch.arange(width).unsqueeze(0) < sizes.unsqueeze(1)
    index = torch.zeros(len(picked), width, dtype=torch.long)
    index[mask] = torch.cat(picked) if picked else index[mask]  # row-major, as cat
    return PoissonBatch(index=index, mask=mask)
