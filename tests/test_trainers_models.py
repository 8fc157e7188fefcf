"""Tests for trainers.models: shapes, Opacus compatibility, seeded initialisation."""

import copy

import numpy as np
import pytest
import torch
from opacus.grad_sample import GradSampleModule
from opacus.validators import ModuleValidator

from audit.errors import InputError
from trainers.models import build_model

torch.set_num_threads(1)

CASES = [
    ("mlp", (10,), {"widths": (16, 8)}),
    ("logreg", (10,), {}),
    ("cnn", (1, 8, 8), {}),
]


@pytest.mark.parametrize("name,in_shape,kw", CASES)
def test_shapes_and_opacus_compatible(name, in_shape, kw):
    model = build_model(name, in_shape, 5, generator=torch.Generator().manual_seed(0), **kw)
    ModuleValidator.validate(model, strict=True)
    x = torch.randn(7, *in_shape, generator=torch.Generator().manual_seed(1))
    assert model(x).shape == (7, 5)
    # per-sample gradients from Opacus hooks equal gradients computed one example at a time
    reference = copy.deepcopy(model).eval()
    gsm = GradSampleModule(model, loss_reduction="sum")
    gsm.train()  # Opacus captures activations only in training mode
    y = torch.arange(7) % 5
    torch.nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    for i in (0, 6):
        reference.zero_grad()
        torch.nn.functional.cross_entropy(reference(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        for p, q in zip(gsm.parameters(), reference.parameters()):
            np.testing.assert_allclose(p.grad_sample[i].numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_seeded_init_matches_default_bounds():
    a = build_model("mlp", (20,), 3, generator=torch.Generator().manual_seed(5), widths=(30,))
    b = build_model("mlp", (20,), 3, generator=torch.Generator().manual_seed(5), widths=(30,))
    c = build_model("mlp", (20,), 3, generator=torch.Generator().manual_seed(6), widths=(30,))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    # PyTorch default init bounds: weight and bias within 1/sqrt(fan_in)
    w = a.net[1].weight
    assert w.abs().max() <= 1 / np.sqrt(20) and w.abs().max() > 0.9 / np.sqrt(20)


def test_errors():
    g = torch.Generator()
    with pytest.raises(InputError, match="unknown model 'resnet'"):
        build_model("resnet", (3,), 2, generator=g)
    with pytest.raises(InputError, match="n_classes=1"):
        build_model("mlp", (3,), 1, generator=g)
    with pytest.raises(InputError, match="does not accept"):
        build_model("logreg", (3,), 2, generator=g, widths=(3,))
    with pytest.raises(InputError, match="SmallCNN in_shape"):
        build_model("cnn", (1, 7, 7), 2, generator=g)
    with pytest.raises(InputError, match="dropout"):
        build_model("mlp", (3,), 2, generator=g, dropout=1.0)


def test_dropout_is_active_in_training_only():
    model = build_model("mlp", (10,), 3, generator=torch.Generator().manual_seed(0), widths=(64,), dropout=0.5)
    ModuleValidator.validate(model, strict=True)
    x = torch.ones(4, 10)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))
