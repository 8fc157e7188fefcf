"""Opacus-compatible models and a name -> builder registry.

Every model maps ``x: float32[batch, *in_shape]`` to logits ``float32[batch, n_classes]``,
contains no BatchNorm (per-sample gradients need layers without cross-sample statistics;
checked with ``opacus.validators.ModuleValidator.validate``), and is initialised from a
``torch.Generator`` with PyTorch's default initialisation (``reset_parameters``:
Kaiming-uniform weights with a=sqrt(5), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))), so
that the same seed gives the same weights without touching the global RNG.

The user's own model (``model.plugin = "file.py:build_model"``): :func:`load_model_plugin`
loads a factory, the same way ``trainers.plugins`` loads ``trainer.plugin``, and
:func:`build_model` accepts the resulting :class:`ModelPlugin` wherever it accepts a name.
The factory contract::

    def build_model(in_shape: tuple[int, ...], n_classes: int, **options) -> torch.nn.Module

``in_shape`` is one record's shape (``x.shape[1:]``: ``(d,)``, ``(1, 8, 8)``, ``(seq_len,)``),
``n_classes`` the number of labels; ``options`` are the config's ``[model.options]`` table
(e.g. ``vocab_size``). The module maps a batch ``x[batch, *in_shape]`` (float32, or int64
token ids) to logits ``[batch, n_classes]``. A class (an ``nn.Module`` subclass taking
those arguments) is a factory too. It is built with PyTorch's global RNG seeded from the
caller's generator inside ``torch.random.fork_rng``, so its own default initialisation is
reproducible from the audit's seed and the caller's global RNG is left as it was.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

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


@dataclasses.dataclass(frozen=True)
class ModelPlugin:
    """A user's model factory ``factory(in_shape, n_classes, **options) -> nn.Module``
    (module docstring), loaded from ``source`` (``"file.py:Name"`` or ``"package.module:Name"``)."""

    source: str
    factory: Callable[..., nn.Module]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def build(self, in_shape: tuple[int, ...], n_classes: int, *, generator: torch.Generator) -> nn.Module:
        """Call the factory with torch's global RNG seeded from ``generator`` (and restored
        afterwards); InputError when it returns anything but a CPU ``nn.Module`` with
        trainable parameters. Exceptions the factory raises pass through."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.factory(tuple(in_shape), n_classes, **self.options)
        what = f"model.plugin {self.source!r}"
        if not isinstance(model, nn.Module):
            shown = repr(model)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise InputError(f"{what} returned {type(model).__name__} {shown}; expected a torch.nn.Module")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise InputError(f"{what} returned {type(model).__name__} without trainable parameters; expected a model to train")
        devices = sorted({str(p.device) for p in model.parameters()} - {"cpu"})
        if devices:
            raise InputError(f"{what} returned a model with parameters on {', '.join(devices)}; expected CPU "
                             "(the audit feeds CPU tensors)")
        return model


class CanaryHost(nn.Module):
    """``model`` with gradient canary slots registered beside it (``canary_slots``), never
    called by ``forward``. A user's model may be an ``nn.Sequential``, whose forward runs
    every child, so the slots cannot be registered on the model itself."""

    def __init__(self, model: nn.Module, canary_slots: nn.Module):
        super().__init__()
        self.model = model
        self.canary_slots = canary_slots

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


def load_model_plugin(path: str, options: Mapping[str, Any] | None = None) -> ModelPlugin:
    """Load the model factory ``path`` (``trainers.plugins.load_object``: "package.module:Name"
    or "file.py:Name") and check that it can be called as ``factory(in_shape, n_classes,
    **options)``. InputError naming the path and what was expected otherwise."""
    from trainers.plugins import load_object

    options = dict(options or {})
    try:
        factory = load_object(path)
    except InputError as err:  # "plugin 'x.py:f': ..." -> which plugin it is
        raise InputError(f"model.{err}") from None
    if isinstance(factory, nn.Module) or not callable(factory):
        raise InputError(f"model.plugin {path!r} is {type(factory).__name__}; expected a function (or nn.Module "
                         "class) build(in_shape, n_classes, **options) returning a torch.nn.Module")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return ModelPlugin(path, factory, options)
    try:
        signature.bind((1,), 2, **options)
    except TypeError as exc:
        given = f" with [model.options] {sorted(options)}" if options else ""
        raise InputError(f"model.plugin {path!r}: signature {signature} cannot be called as "
                         f"build(in_shape, n_classes{', **options' if options else ''}){given}: {exc}") from None
    return ModelPlugin(path, factory, options)


def build_model(name: str | ModelPlugin, in_shape: Sequence[int], n_classes: int, *, generator: torch.Generator,
                **kw) -> nn.Module:
    """Build the registered model ``name`` (or a user's :class:`ModelPlugin`) and
    initialise it from ``generator``.

    Raises :class:`InputError` for an unknown name, bad sizes, or unknown keywords.
    """
    in_shape = tuple(int(s) for s in in_shape)
    if not in_shape or min(in_shape) < 1:
        raise InputError(f"in_shape={in_shape}; expected positive sizes")
    if not isinstance(n_classes, int) or n_classes < 2:
        raise InputError(f"n_classes={n_classes!r}; expected an int >= 2")
    if isinstance(name, ModelPlugin):
        if kw:
            raise InputError(f"model.plugin {name.source!r} takes its keywords from [model.options]; got {sorted(kw)}")
        return name.build(in_shape, n_classes, generator=generator)
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
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
