"""K multilayer perceptrons stored as stacked tensors, one model per leading index.

Layer ``l`` of all K models is one weight ``W_l: float[K, out_l, in_l]`` and one bias
``b_l: float[K, out_l]``, so a forward pass over all models is one batched matmul per
layer. Widths ``(d, h_1, ..., h_m, c)`` give ``m`` hidden ReLU layers; ``(d, c)`` is
multinomial logistic regression.

Parameter order (and hence flat coordinates, see :meth:`StackedMLP.flat_offsets`) is
``W_1, b_1, W_2, b_2, ...`` with each weight flattened row-major: the order of
``nn.Sequential(nn.Linear, nn.ReLU, ..., nn.Linear).parameters()`` and of
``torch.nn.utils.parameters_to_vector``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from audit.errors import InputError
from trainers.fast.shares import ShareRunner, share_slices


@dataclass(frozen=True)
class MLPShape:
    """Layer widths ``(d, h_1, ..., h_m, c)``; ``(d, c)`` is logistic regression."""

    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        widths = tuple(self.widths)
        if len(widths) < 2 or any(int(w) != w or w < 1 for w in widths):
            raise InputError(
                f"widths={self.widths!r}: expected at least two positive integers "
                "(input width, [hidden widths...], number of classes)"
            )
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """``[(out_l, in_l)]`` for each Linear layer."""
        return [(o, i) for i, o in zip(self.widths[:-1], self.widths[1:])]

    @property
    def n_params(self) -> int:
        return sum(o * i + o for o, i in self.layer_shapes)

    def flat_offsets(self) -> list[tuple[int, int]]:
        """Start of ``(W_l, b_l)`` in the flat parameter vector of one model."""
        offsets, at = [], 0
        for o, i in self.layer_shapes:
            offsets.append((at, at + o * i))
            at += o * i + o
        return offsets

    def weight_coord(self, layer: int, row: int, col: int) -> int:
        """Flat coordinate of ``W_layer[row, col]`` (layers count from 0)."""
        o, i = self._check_layer(layer)
        if not (0 <= row < o and 0 <= col < i):
            raise InputError(f"(row, col)=({row}, {col}): expected row in [0, {o}) and col in [0, {i}) for layer {layer}")
        return self.flat_offsets()[layer][0] + row * i + col

    def bias_coord(self, layer: int, row: int) -> int:
        """Flat coordinate of ``b_layer[row]`` (layers count from 0)."""
        o, _ = self._check_layer(layer)
        if not 0 <= row < o:
            raise InputError(f"row={row}: expected row in [0, {o}) for layer {layer}")
        return self.flat_offsets()[layer][1] + row

    def _check_layer(self, layer: int) -> tuple[int, int]:
        if not 0 <= layer < len(self.layer_shapes):
            raise InputError(f"layer={layer}: expected a layer index in [0, {len(self.layer_shapes)})")
        return self.layer_shapes[layer]

    def matmul_flops_per_example(self) -> int:
        """Multiply-add FLOPs (2 per MAC) of one DP-SGD example: forward, input
        gradients of every layer but the first, and weight gradients.

        Per-sample norms (``O(in + out)`` per layer) and the update are not counted.
        """
        macs = [o * i for o, i in self.layer_shapes]
        return 2 * (2 * sum(macs) + sum(macs[1:]))

    def module(self) -> nn.Sequential:
        """An ``nn.Sequential`` of the same architecture (Linear, ReLU, ..., Linear)."""
        layers: list[nn.Module] = []
        for l, (o, i) in enumerate(self.layer_shapes):
            if l:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(i, o))
        return nn.Sequential(*layers)


QUERY_CHUNK_VALUES = 1 << 23
"""Activation values (32 MiB of float32) one chunk of shared queries may hold per layer."""


class StackedMLP:
    """K MLPs of one shape; parameters are plain tensors (no autograd).

    Attributes:
        shape: the architecture.
        weights: ``W_l: float[K, out_l, in_l]`` per layer.
        biases: ``b_l: float[K, out_l]`` per layer.
    """

    def __init__(self, shape: MLPShape, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]):
        if len(weights) != len(shape.layer_shapes) or len(biases) != len(weights):
            raise InputError(
                f"got {len(weights)} weights and {len(biases)} biases: expected "
                f"{len(shape.layer_shapes)} of each for widths {shape.widths}"
            )
        k = weights[0].shape[0]
        for l, ((o, i), w, b) in enumerate(zip(shape.layer_shapes, weights, biases)):
            if tuple(w.shape) != (k, o, i) or tuple(b.shape) != (k, o):
                raise InputError(
                    f"layer {l}: weight {tuple(w.shape)} and bias {tuple(b.shape)}: "
                    f"expected {(k, o, i)} and {(k, o)}"
                )
        self.shape = shape
        self.weights = [w.detach().clone() for w in weights]
        self.biases = [b.detach().clone() for b in biases]

    @property
    def n_models(self) -> int:
        return self.weights[0].shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @classmethod
    def init(
        cls, shape: MLPShape, generators: Sequence[torch.Generator], dtype: torch.dtype = torch.float32
    ) -> "StackedMLP":
        """Initialise model ``k`` from ``generators[k]`` alone, as ``nn.Linear`` does.

        ``nn.Linear.reset_parameters`` (kaiming_uniform with a=sqrt(5), and the bias
        rule) amounts to ``U(-1/sqrt(in), 1/sqrt(in))`` for both weight and bias.
        Model ``k`` does not depend on K or on the other generators.
        """
        weights = [torch.empty(len(generators), o, i, dtype=dtype) for o, i in shape.layer_shapes]
        biases = [torch.empty(len(generators), o, dtype=dtype) for o, _ in shape.layer_shapes]
        for k, g in enumerate(generators):
            for w, b in zip(weights, biases):
                bound = 1.0 / math.sqrt(w.shape[2])
                w[k].uniform_(-bound, bound, generator=g)
                b[k].uniform_(-bound, bound, generator=g)
        return cls(shape, weights, biases)

    @classmethod
    def from_modules(cls, shape: MLPShape, modules: Sequence[nn.Module]) -> "StackedMLP":
        """Stack the Linear layers of K modules built like :meth:`MLPShape.module`."""
        linears = [[m for m in mod.modules() if isinstance(m, nn.Linear)] for mod in modules]
        if any(len(ls) != len(shape.layer_shapes) for ls in linears):
            raise InputError(
                f"modules have {[len(ls) for ls in linears]} Linear layers: expected "
                f"{len(shape.layer_shapes)} each for widths {shape.widths}"
            )
        weights = [torch.stack([ls[l].weight.detach() for ls in linears]) for l in range(len(shape.layer_shapes))]
        biases = [torch.stack([ls[l].bias.detach() for ls in linears]) for l in range(len(shape.layer_shapes))]
        return cls(shape, weights, biases)

    def to_module(self, k: int) -> nn.Sequential:
        """Model ``k`` as an ``nn.Sequential`` (copies)."""
        module = self.shape.module().to(self.dtype)
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin, w, b in zip(linears, self.weights, self.biases):
                lin.weight.copy_(w[k])
                lin.bias.copy_(b[k])
        return module

    def select(self, models: Sequence[int] | slice) -> "StackedMLP":
        """A copy holding only the chosen models."""
        return StackedMLP(self.shape, [w[models] for w in self.weights], [b[models] for b in self.biases])

    def flat(self) -> torch.Tensor:
        """All parameters, ``float[K, n_params]`` in ``parameters_to_vector`` order."""
        parts = []
        for w, b in zip(self.weights, self.biases):
            parts += [w.reshape(self.n_models, -1), b]
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pre-activations of every layer.

        Args:
            x: ``float[K, B, d]`` (one batch per model) or ``float[B, d]`` (shared).
        Returns:
            ``[z_1, ..., z_L]`` with ``z_l: float[K, B, out_l]``; ``z_L`` are the logits.
        """
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_models, -1, -1)
        zs = []
        h = x
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            zs.append(z)
            h = torch.relu(z)
        return zs

    def query_chunk(self, budget: int = QUERY_CHUNK_VALUES) -> int:
        """Queries per chunk of :meth:`logits` and :meth:`predict`: as many as keep one
        layer's activations of all K models (``K x chunk x widest layer`` values) within
        ``budget``, at least 64. The transient then does not grow with K; each query's
        output is computed row by row, so its bits do not depend on the chunk (tested)."""
        return max(64, budget // (self.n_models * max(self.shape.widths[1:])))

    def logits(self, x: torch.Tensor, chunk: int | None = None, *, workers: int = 1) -> torch.Tensor:
        """Logits of every model on shared queries, ``chunk`` queries at a time (default
        :meth:`query_chunk`, the budget split between the workers), written into one output
        tensor: the chunks are never held twice.

        Args:
            x: ``float[N, d]``.
            workers: threads, each computing a contiguous share of the models (the same
                values: every model's products are computed alone, tested).
        Returns:
            ``float[K, N, c]``.
        """
        if not x.shape[0]:  # no queries
            return self._outputs(x)
        out = torch.empty((self.n_models, x.shape[0], self.shape.widths[-1]), dtype=self.dtype, device=self.weights[0].device)
        self._by_shares(x, chunk, workers, lambda models, s, z: out[models, s : s + z.shape[1]].copy_(z))
        return out

    def predict(self, x: torch.Tensor, chunk: int | None = None, *, workers: int = 1) -> torch.Tensor:
        """``int64[K, N]``: each model's predicted class, ``logits(x).argmax(-1)`` computed
        chunk by chunk (the same values, without the ``[K, N, c]`` logits in memory)."""
        if not x.shape[0]:
            return self._outputs(x).argmax(-1)
        out = torch.empty((self.n_models, x.shape[0]), dtype=torch.long, device=self.weights[0].device)
        self._by_shares(x, chunk, workers, lambda models, s, z: out[models, s : s + z.shape[1]].copy_(z.argmax(-1)))
        return out

    def _by_shares(self, x: torch.Tensor, chunk: int | None, workers: int, write) -> None:
        """``write(models, start, logits)`` for every chunk of queries of every contiguous
        share of the models, the shares on up to ``workers`` threads."""
        if int(workers) != workers or workers < 1:
            raise InputError(f"workers={workers!r}: expected an integer >= 1")
        shares = share_slices(self.n_models, workers)

        def run(models: slice) -> None:
            share = self if len(shares) == 1 else self.select(models)
            step = chunk or share.query_chunk(QUERY_CHUNK_VALUES // len(shares))
            for s in range(0, x.shape[0], step):
                write(models, s, share._outputs(x[s : s + step]))

        with ShareRunner(len(shares), "stacked-mlp") as runner:
            runner([lambda models=models: run(models) for models in shares])

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)[-1]`` keeping one layer's activations at a time (ReLU in place): the
        same operations on the same values, a third of the memory of ``forward``'s list."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_models, -1, -1)
        h = x
        last = len(self.weights) - 1
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            h = z if l == last else torch.relu_(z)
        return h
