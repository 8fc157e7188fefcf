"""Opacus-compatible models and a name -> builder registry.

Every model maps ``x: float32[batch, *in_shape]`` to logits ``float32[batch, n_classes]``,
contains no BatchNorm (per-sample gradients need layers without cross-sample statistics;
checked with ``opacus.validators.ModuleValidator.validate``), and is initialised from a
``torch.Generator`` with PyTorch's default initialisation (``reset_parameters``:
Kaiming-uniform weights with a=sqrt(5), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))), so
that the same seed gives the same weights without touching the global RNG.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Sequence

import torch
from torch import nn

from audit.errors import InputError


def _flat_size(in_shape: Sequence[int]) -> int:
    return int(math.prod(in_shape))


class MLP(nn.Module):
    """Fully connected ReLU network: flatten -> [Linear -> ReLU -> Dropout]* -> Linear."""

    def __init__(self, in_shape: Sequence[int], n_classes: int, *, widths: Sequence[int] = (64,), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = _flat_size(in_shape)
        for width in widths:
            layers += [nn.Linear(width_in, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: flatten -> Linear."""

    def __init__(self, in_shape: Sequence[int], n_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(_flat_size(in_shape), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


class SmallCNN(nn.Module):
    """Two 3x3 conv + average-pool blocks and a linear head, for ``in_shape=(c, h, w)``.

    For digits (1, 8, 8): conv(1->c1) 8x8 -> pool 4x4 -> conv(c1->c2) 4x4 -> pool 2x2 -> Linear.
    """

    def __init__(self, in_shape: Sequence[int], n_classes: int, *, channels: Sequence[int] = (16, 32), dropout: float = 0.0):
        super().__init__()
        if len(in_shape) != 3 or in_shape[1] % 4 or in_shape[2] % 4:
            raise InputError(f"SmallCNN in_shape={tuple(in_shape)}; expected (channels, h, w) with h, w divisible by 4")
        c_in, h, w = in_shape
        c1, c2 = channels
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c1, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(c2 * (h // 4) * (w // 4), n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


Builder = Callable[..., nn.Module]
MODELS: dict[str, Builder] = {}


def register_model(name: str, builder: Builder, *, force: bool = False) -> None:
    """Register ``builder(in_shape, n_classes, **kw) -> nn.Module`` under ``name``."""
    if name in MODELS and not force:
        raise InputError(f"a model named {name!r} is already registered")
    MODELS[name] = builder


register_model("mlp", MLP)
register_model("logreg", LogisticRegression)
register_model("cnn", SmallCNN)


def reset_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every Linear/Conv layer exactly as ``reset_parameters`` does, from ``generator``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(layer.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def build_model(name: str, in_shape: Sequence[int], n_classes: int, *, generator: torch.Generator, **kw) -> nn.Module:
    """Build the registered model ``name`` and initialise it from ``generator``.

    Raises :class:`InputError` for an unknown name, bad sizes, or unknown keywords.
    """
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    in_shape = tuple(int(s) for s in in_shape)
    if not in_shape or min(in_shape) < 1:
        raise InputError(f"in_shape={in_shape}; expected positive sizes")
    if not isinstance(n_classes, int) or n_classes < 2:
        raise InputError(f"n_classes={n_classes!r}; expected an int >= 2")
    if not 0.0 <= float(kw.get("dropout", 0.0)) < 1.0:
        raise InputError(f"dropout={kw['dropout']!r}; expected a probability in [0, 1)")
    try:
        inspect.signature(MODELS[name]).bind(in_shape, n_classes, **kw)
    except TypeError as exc:
        raise InputError(f"model {name!r} does not accept {sorted(kw)}: {exc}") from exc
    # layer constructors draw a throw-away init from the global RNG; keep it unchanged
    with torch.random.fork_rng(devices=[]):
        model = MODELS[name](in_shape, n_classes, **kw)
    reset_parameters(model, generator)
    return model
