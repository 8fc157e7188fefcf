"""Per-sample gradient norms and clipped gradient sums for stacked Linear layers,
without materialising per-sample gradients.

For a Linear layer ``z = W a + b`` and one example ``i`` with input ``a_i`` and output
gradient ``g_i = dL_i/dz_i``, the per-sample gradients are ``g_i a_i^T`` and ``g_i``, so

    ||dL_i/dW||_F^2 = ||a_i||^2 ||g_i||^2,      ||dL_i/db||^2 = ||g_i||^2

(Goodfellow 2015, "Efficient per-example gradient computations", eq. for fully
connected layers; the same identity is "ghost clipping" for non-sequential inputs in
Li et al. 2022, "Large language models can be strong differentially private
learners", Sec. 4). Given clip weights ``c_i`` the clipped sum is one weighted matmul
per model, ``sum_i c_i g_i a_i^T = (c * G)^T A`` over that model's rows of a ragged
batch (:class:`trainers.fast.batch.RaggedBatch`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def per_sample_sq_norms(
    inputs: Sequence[torch.Tensor], output_grads: Sequence[torch.Tensor], first_input_sq: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Squared L2 norm of each example's full gradient (all weights and biases).

    Args:
        inputs: ``a_l: float[..., in_l]``, the input of each Linear layer (one row per
            example: ``[N, in_l]`` ragged, or ``[K, B, in_l]``).
        output_grads: ``g_l: float[..., out_l]``, per-sample loss gradients w.r.t.
            each layer's output, rows as ``inputs``.
        first_input_sq: ``||a_1||^2`` per example when known (the data's rows do not
            change between steps, so a trainer computes them once), else None.
    Returns:
        ``float[...]``: ``sum_l (||a_l||^2 + 1) ||g_l||^2`` per example.
    """
    total = None
    for l, (a, g) in enumerate(zip(inputs, output_grads)):
        # vector_norm is one fused reduction (vecdot multiplies, then sums)
        a_sq = first_input_sq if l == 0 and first_input_sq is not None else torch.linalg.vector_norm(a, dim=-1).square_()
        term = (a_sq + 1.0) * torch.linalg.vector_norm(g, dim=-1).square_()
        total = term if total is None else total + term
    return total


def weighted_grad_sum(
    inputs: Sequence[torch.Tensor], output_grads: Sequence[torch.Tensor], weights: torch.Tensor,
    counts: Sequence[int],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``sum_i w_i * grad_i`` of each model for every layer, one ``mm`` per model and layer
    on the model's own rows.

    Args:
        inputs: ``a_l: float[N, in_l]``, the K models' examples one model after another.
        output_grads: ``g_l: float[N, out_l]``, rows as ``inputs``.
        weights: ``w: float[N]`` (e.g. clip factors).
        counts: model ``k``'s number of rows (``sum(counts) == N``).
    Returns:
        ``([dW_l: float[K, out_l, in_l]], [db_l: float[K, out_l]])``.
    """
    grad_w, grad_b = [], []
    w = weights.unsqueeze(-1)
    parts = list(counts)
    for a, g in zip(inputs, output_grads):
        wg = g * w
        dw = a.new_empty(len(parts), g.shape[-1], a.shape[-1])
        db = a.new_empty(len(parts), g.shape[-1])
        for k, (ak, gk) in enumerate(zip(a.split(parts), wg.split(parts))):
            torch.mm(gk.t(), ak, out=dw[k])
            torch.sum(gk, 0, out=db[k])
        grad_w.append(dw)
        grad_b.append(db)
    return grad_w, grad_b
