"""Per-sample gradient norms and clipped gradient sums for stacked Linear layers,
without materialising per-sample gradients.

For a Linear layer ``z = W a + b`` and one example ``i`` with input ``a_i`` and output
gradient ``g_i = dL_i/dz_i``, the per-sample gradients are ``g_i a_i^T`` and ``g_i``, so

    ||dL_i/dW||_F^2 = ||a_i||^2 ||g_i||^2,      ||dL_i/db||^2 = ||g_i||^2

(Goodfellow 2015, "Efficient per-example gradient computations", eq. for fully
connected layers; the same identity is "ghost clipping" for non-sequential inputs in
Li et al. 2022, "Large language models can be strong differentially private
learners", Sec. 4). Given clip weights ``c_i`` the clipped sum is one weighted matmul,
``sum_i c_i g_i a_i^T = (c * G)^T A``, batched over the K models.
"""

from __future__ import annotations

from typing import Sequence

import torch


def per_sample_sq_norms(inputs: Sequence[torch.Tensor], output_grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared L2 norm of each example's full gradient (all weights and biases).

    Args:
        inputs: ``a_l: float[K, B, in_l]``, the input of each Linear layer.
        output_grads: ``g_l: float[K, B, out_l]``, per-sample loss gradients w.r.t.
            each layer's output.
    Returns:
        ``float[K, B]``: ``sum_l (||a_l||^2 + 1) ||g_l||^2`` per example.
    """
    total = None
    for a, g in zip(inputs, output_grads):
        # vector_norm is one fused reduction (vecdot multiplies, then sums)
        term = (torch.linalg.vector_norm(a, dim=-1).square_() + 1.0) * torch.linalg.vector_norm(g, dim=-1).square_()
        total = term if total is None else total + term
    return total


def weighted_grad_sum(
    inputs: Sequence[torch.Tensor], output_grads: Sequence[torch.Tensor], weights: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``sum_i w_i * grad_i`` for every layer, one ``bmm`` per layer.

    Args:
        inputs: ``a_l: float[K, B, in_l]``.
        output_grads: ``g_l: float[K, B, out_l]``.
        weights: ``w: float[K, B]`` (clip factor times the padding mask).
    Returns:
        ``([dW_l: float[K, out_l, in_l]], [db_l: float[K, out_l]])``.
    """
    grad_w, grad_b = [], []
    w = weights.unsqueeze(-1)
    for a, g in zip(inputs, output_grads):
        wg = g * w
        grad_w.append(torch.bmm(wg.transpose(1, 2), a))
        grad_b.append(wg.sum(1))
    return grad_w, grad_b
