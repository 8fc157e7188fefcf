"""Per-sample norms and clipped sums against materialised per-sample gradients
(torch.func), and the stacked MLP against nn.Sequential."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, vmap

from audit.errors import InputError
from trainers.fast import MLPShape, StackedMLP, per_sample_sq_norms, weighted_grad_sum
from trainers.fast.batch import RaggedBatch
from trainers.fast.trainer import _forward_backward

torch.set_num_threads(1)


def _naive_per_sample_grads(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Materialised per-sample gradients ``float[B, n_params]`` of the unreduced CE."""
    params = {k: v.detach() for k, v in module.named_parameters()}

    def loss(p, xi, yi):
        return nn.functional.cross_entropy(functional_call(module, p, (xi[None],)), yi[None])

    per = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([per[k].reshape(x.shape[0], -1) for k in params], dim=1)


@settings(max_examples=15, deadline=None)
@given(
    widths=st.lists(st.integers(1, 7), min_size=2, max_size=4),
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    seed=st.integers(0, 2**31),
)
def test_norms_and_weighted_sums_equal_materialised_gradients(widths, counts, seed):
    """Ragged batches: model k's rows only, any batch sizes (empty ones too)."""
    shape = MLPShape(tuple(widths))
    n_models, n = len(counts), sum(counts)
    g = torch.Generator().manual_seed(seed)
    model = StackedMLP.init(shape, [torch.Generator().manual_seed(seed + k) for k in range(n_models)], dtype=torch.float64)
    batch = RaggedBatch(x=torch.randn(n, widths[0], generator=g, dtype=torch.float64),
                        y=torch.randint(0, widths[-1], (n,), generator=g), counts=tuple(counts))
    inputs, grads, _ = _forward_backward(model, batch)
    sq = per_sample_sq_norms(inputs, grads)
    c = torch.rand(n, generator=g, dtype=torch.float64)
    gw, gb = weighted_grad_sum(inputs, grads, c, batch.counts)
    got = torch.cat([t for w, b in zip(gw, gb) for t in (w.reshape(n_models, -1), b)], dim=1)
    for k, (xk, yk, sqk, ck) in enumerate(zip(batch.split(batch.x), batch.split(batch.y), batch.split(sq), batch.split(c))):
        if not len(xk):  # an empty batch sums to zero
            assert not got[k].any()
            continue
        per = _naive_per_sample_grads(model.to_module(k), xk, yk)
        torch.testing.assert_close(sqk, per.square().sum(1), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got[k], (ck[:, None] * per).sum(0), rtol=1e-10, atol=1e-12)


def test_stacked_forward_equals_sequential():
    shape = MLPShape((5, 4, 3, 2))
    model = StackedMLP.init(shape, [torch.Generator().manual_seed(k) for k in range(3)])
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(9))
    logits = model.logits(x, chunk=4)
    for k in range(3):
        torch.testing.assert_close(logits[k], model.to_module(k)(x))
    assert torch.equal(StackedMLP.from_modules(shape, [model.to_module(k) for k in range(3)]).flat(), model.flat())
    assert torch.equal(model.flat()[1], nn.utils.parameters_to_vector(model.to_module(1).parameters()))


def test_init_is_nn_linear_init_per_model_generator():
    """``nn.Linear`` init = kaiming_uniform(a=sqrt 5) for W, U(+-1/sqrt(in)) for b."""
    shape = MLPShape((7, 5, 3))
    model = StackedMLP.init(shape, [torch.Generator().manual_seed(s) for s in (1, 2)])
    g = torch.Generator().manual_seed(2)
    for l, (o, i) in enumerate(shape.layer_shapes):
        w = torch.empty(o, i)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
        b = torch.empty(o).uniform_(-1 / math.sqrt(i), 1 / math.sqrt(i), generator=g)
        torch.testing.assert_close(model.weights[l][1], w)
        torch.testing.assert_close(model.biases[l][1], b)


def test_flat_offsets_and_flops():
    shape = MLPShape((600, 256, 100))
    assert shape.n_params == 600 * 256 + 256 + 256 * 100 + 100
    assert shape.flat_offsets() == [(0, 153600), (153856, 153856 + 25600)]
    # forward 2*(600*256+256*100), backward input grads 2*256*100, weight grads as forward
    assert shape.matmul_flops_per_example() == 2 * (2 * (153600 + 25600) + 25600)


def test_flat_coordinates_index_parameters_to_vector():
    shape = MLPShape((4, 3, 2))
    model = StackedMLP.init(shape, [torch.Generator().manual_seed(0)])
    flat = model.flat()[0]
    assert flat[shape.weight_coord(0, 2, 3)] == model.weights[0][0, 2, 3]
    assert flat[shape.weight_coord(1, 1, 0)] == model.weights[1][0, 1, 0]
    assert flat[shape.bias_coord(0, 2)] == model.biases[0][0, 2]
    assert flat[shape.bias_coord(1, 1)] == model.biases[1][0, 1]
    assert shape.bias_coord(1, 1) == shape.n_params - 1
    with pytest.raises(InputError, match="layer=2"):
        shape.weight_coord(2, 0, 0)
    with pytest.raises(InputError, match="col"):
        shape.weight_coord(0, 0, 4)


@pytest.mark.parametrize("widths", [(3,), (3, 0), (2, 2.5), ()])
def test_bad_widths_are_rejected(widths):
    with pytest.raises(InputError, match="widths"):
        MLPShape(widths)


def test_bad_stacked_shapes_are_rejected():
    shape = MLPShape((3, 2))
    with pytest.raises(InputError, match="expected"):
        StackedMLP(shape, [torch.zeros(1, 3, 2)], [torch.zeros(1, 2)])


def test_logits_and_predict_are_the_same_in_any_chunking():
    """logits() writes its chunks into one tensor and predict() takes the argmax chunk by
    chunk: both equal the unchunked forward exactly."""
    model = StackedMLP.init(MLPShape((4, 5, 3)), [torch.Generator().manual_seed(k) for k in range(3)])
    x = torch.randn(11, 4, generator=torch.Generator().manual_seed(3))
    full = model.forward(x)[-1]
    for chunk in (1, 4, 11, 64):
        assert torch.equal(model.logits(x, chunk=chunk), full)
        assert torch.equal(model.predict(x, chunk=chunk), full.argmax(-1))
    assert model.logits(x[:0]).shape == (3, 0, 3) and model.predict(x[:0]).shape == (3, 0)


def test_query_chunks_shrink_with_k_and_leave_the_bits_alone():
    """The default chunk keeps K x chunk x widest-layer activations within the budget (so
    observing's transient does not grow with K), and at the audit's shapes (600 -> 128 ->
    100, gemm kernels for large and small row counts) every chunking gives the same bits."""
    from trainers.fast.ensemble import QUERY_CHUNK_VALUES

    shape = MLPShape((600, 128, 100))
    for k in (1, 18, 64, 1000):
        model = StackedMLP.init(shape, [torch.Generator().manual_seed(j) for j in range(k)])
        chunk = model.query_chunk()
        assert chunk == 64 or k * chunk * 128 <= QUERY_CHUNK_VALUES < k * (chunk + 1) * 128
    model = StackedMLP.init(shape, [torch.Generator().manual_seed(j) for j in range(6)])
    x = torch.randn(2_500, 600, generator=torch.Generator().manual_seed(4))
    ref = model.logits(x, chunk=4096)
    for chunk in (model.query_chunk(512 * 6 * 128), 1000, 333, 64):
        assert torch.equal(model.logits(x, chunk=chunk), ref), chunk
        assert torch.equal(model.predict(x, chunk=chunk), ref.argmax(-1)), chunk
