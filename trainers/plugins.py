"""User plugins loaded from an import path ``package.module:Name``.

Two contracts, following Opacus' idea that users hand over what they already have:

White-box: a DP optimizer class (:func:`load_optimizer_plugin`).
    ``Name`` is a subclass of ``opacus.optimizers.DPOptimizer`` whose constructor accepts
    Opacus' arguments ``(optimizer, *, noise_multiplier, max_grad_norm,
    expected_batch_size, loss_reduction, generator, secure_mode, **extra)``. Each step it
    reads per-sample gradients ``p.grad_sample: float[batch, *p.shape]``, clips, adds
    noise and leaves the update in ``p.grad`` (usually by overriding
    ``clip_and_accumulate``, ``add_noise`` or ``scale_grad``). It is trained with
    ``trainers.opacus_dp.train_dp(..., optimizer_class=Name, optimizer_kwargs=extra)``;
    the accountant records the optimizer's ``noise_multiplier`` at the true sample rate.

Black-box: a training function and its claim (:func:`load_blackbox_plugin`).
    ``Name`` is a function ``train(x, y, *, seed) -> model`` with
    ``x: float32[n, ...]``, ``y: int64[n]`` and ``seed: int``; it returns either a callable
    ``predict_proba(x) -> float[m, classes]`` or an object with a ``predict_proba`` method
    (scikit-learn style). The claimed guarantee is declared in the same module::

        CLAIMED_EPSILON = 2.0     # float('inf') for a non-private trainer
        CLAIMED_DELTA = 1e-5

    or passed to the loader (``epsilon=``, ``delta=``; these override the module's).
    Outputs are checked at query time: finite, non-negative, rows summing to 1.

The module part is either an importable dotted name (on ``sys.path``/``PYTHONPATH``) or
a path to a ``.py`` file, e.g. ``./my_plugins.py:train``; a file is imported as module
``dpaudit_plugin_<stem>``.

Every failure (malformed path, missing module or attribute, wrong type or signature, bad
claim) raises :class:`audit.errors.InputError` naming the path and what was expected.

A plugin path is code: loading it imports and runs the module, with this process's rights.
A config that names a plugin must be reviewed like the code it runs. The audit records the
plugin's path, its module file and the file's SHA-256 (:func:`plugin_source`) in the report
and the MLflow tags, so a gate decision can be traced to the exact file it audited (the
hash covers that one file, not the modules it imports).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
from opacus.optimizers import DPOptimizer

from audit.config import PLUGIN_FILE_PATH, PLUGIN_MODULE_PATH
from audit.errors import InputError

_OPACUS_KWARGS = dict(
    noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=1, loss_reduction="mean",
    generator=None, secure_mode=False,
)


# (resolved file, SHA-256 of its bytes) of a plugin module loaded from a file.
_SHA256 = "__dpaudit_source__"


def _split(path: Any) -> tuple[str, str]:
    if isinstance(path, str) and PLUGIN_FILE_PATH.match(path):
        module, attr = path.rsplit(":", 1)
        return module, attr
    if not isinstance(path, str) or not PLUGIN_MODULE_PATH.match(path):
        raise InputError(f"plugin path {path!r} is malformed; expected 'package.module:Name' or 'file.py:Name'")
    module, attr = path.split(":")
    return module, attr


def _import_module(path: str, module_name: str) -> ModuleType:
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise InputError(f"plugin {path!r}: no such file {module_name!r}")
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            name = f"dpaudit_plugin_{file.stem}"
            cached = sys.modules.get(name)
            # As for imports, a file runs once per process (the claim, the provenance and
            # the trainer all read the same module); an edited file is run again.
            if cached is not None and getattr(cached, _SHA256, None) == (str(file.resolve()), digest):
                return cached
            spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(spec)
            # registered as imports are, so dataclasses and typing in the plugin resolve
            sys.modules[spec.name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[spec.name]
                raise
            setattr(module, _SHA256, (str(file.resolve()), digest))
            return module
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InputError(f"plugin {path!r}: module {exc.name!r} not found ({exc})") from exc
    except ImportError as exc:
        raise InputError(f"plugin {path!r}: importing {module_name!r} failed: {exc}") from exc
    except SyntaxError as exc:
        raise InputError(f"plugin {path!r}: {module_name!r} has a syntax error: {exc}") from exc


def load_object(path: str) -> Any:
    """Import ``package.module:Name`` or ``file.py:Name`` (``Name`` may be dotted) and return it."""
    return _load(path)[1]


def _load(path: str) -> tuple[ModuleType, Any]:
    module_name, attr = _split(path)
    module = obj = _import_module(path, module_name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"plugin {path!r}: {obj.__name__ if hasattr(obj, '__name__') else obj!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    return module, obj


def plugin_source(path: str) -> dict[str, Any]:
    """``{"path", "module", "file", "sha256"}`` of the plugin ``path`` (importing it): what the
    audit records so that a verdict names the exact file it audited. ``file`` and ``sha256``
    are None for a module without a source file."""
    module, _ = _load(path)
    file = getattr(module, "__file__", None)
    digest = None
    if hasattr(module, _SHA256):  # the bytes that ran, hashed when they were loaded
        digest = getattr(module, _SHA256)[1]
    elif file and Path(file).is_file():
        digest = hashlib.sha256(Path(file).read_bytes()).hexdigest()
    return {"path": path, "module": module.__name__, "file": str(Path(file).resolve()) if file else None,
            "sha256": digest}


def declared_claim(path: str) -> tuple[Any, Any]:
    """The module constants ``(CLAIMED_EPSILON, CLAIMED_DELTA)`` of the plugin ``path``
    (None where absent), unchecked; :func:`load_blackbox_plugin` checks them."""
    module, _ = _load(path)
    return getattr(module, "CLAIMED_EPSILON", None), getattr(module, "CLAIMED_DELTA", None)


def load_optimizer_plugin(path: str, **extra_kwargs: Any) -> type[DPOptimizer]:
    """Load a white-box DP optimizer class; ``extra_kwargs`` are checked against its constructor."""
    cls = load_object(path)
    if not (isinstance(cls, type) and issubclass(cls, DPOptimizer)):
        raise InputError(f"plugin {path!r} is {cls!r}; expected a subclass of opacus.optimizers.DPOptimizer")
    try:
        inspect.signature(cls).bind(object(), **_OPACUS_KWARGS, **extra_kwargs)
    except TypeError as exc:
        raise InputError(
            f"plugin {path!r}: constructor does not accept Opacus' DPOptimizer arguments "
            f"plus {sorted(extra_kwargs)}: {exc}"
        ) from exc
    return cls


def checked_probabilities(probs: Any, n_rows: int, *, what: str) -> np.ndarray:
    """``probs`` as ``float64[n_rows, classes >= 2]`` if it is a table of probabilities
    (finite, non-negative, rows summing to 1 within 1e-3); else InputError saying what
    ``what`` (e.g. ``"plugin 'my.py:train'"``) returned."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != n_rows or probs.shape[1] < 2:
        raise InputError(f"{what} returned shape {probs.shape}; expected [{n_rows}, classes>=2]")
    if not np.all(np.isfinite(probs)) or probs.min(initial=0.0) < 0:
        raise InputError(f"{what} returned negative or non-finite probabilities")
    worst = float(np.abs(probs.sum(axis=1) - 1).max()) if len(probs) else 0.0
    if worst > 1e-3:
        raise InputError(f"{what} returned rows summing to 1 +- {worst:.3g}; expected probabilities")
    return probs


@dataclasses.dataclass(frozen=True)
class BlackBoxModel:
    """A trained black-box model: ``predict_proba(x: float32[m, ...]) -> float64[m, classes]``."""

    source: str
    _predict: Callable[[np.ndarray], Any]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return checked_probabilities(self._predict(x), len(x), what=f"plugin {self.source!r}")


@dataclasses.dataclass(frozen=True)
class BlackBoxTrainer:
    """A user's training function with its claimed (epsilon, delta)."""

    source: str
    train_fn: Callable[..., Any]
    epsilon: float
    delta: float

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> BlackBoxModel:
        """Train on ``x: float32[n, ...]``, ``y: int64[n]``; returns the wrapped model."""
        model = self.train_fn(x, y, seed=seed)
        predict = getattr(model, "predict_proba", model)
        if not callable(predict):
            raise InputError(
                f"plugin {self.source!r} returned {type(model).__name__}; expected a predict_proba "
                "callable or an object with a predict_proba method"
            )
        return BlackBoxModel(source=self.source, _predict=predict)


def _check_claim(path: str, epsilon: Any, delta: Any) -> tuple[float, float]:
    if epsilon is None or delta is None:
        raise InputError(
            f"plugin {path!r} declares no claim; expected module constants CLAIMED_EPSILON and "
            "CLAIMED_DELTA or epsilon=/delta= arguments"
        )
    try:
        epsilon, delta = float(epsilon), float(delta)
    except (TypeError, ValueError) as exc:
        raise InputError(f"plugin {path!r}: claim ({epsilon!r}, {delta!r}) is not numeric") from exc
    if math.isnan(epsilon) or epsilon < 0:
        raise InputError(f"plugin {path!r}: claimed epsilon={epsilon!r}; expected >= 0 (inf allowed)")
    if not 0 <= delta < 1:
        raise InputError(f"plugin {path!r}: claimed delta={delta!r}; expected in [0, 1)")
    return epsilon, delta


def load_blackbox_plugin(path: str, *, epsilon: float | None = None, delta: float | None = None) -> BlackBoxTrainer:
    """Load a black-box training function and its claim (arguments override module constants)."""
    module, fn = _load(path)
    if not callable(fn) or isinstance(fn, type):
        raise InputError(f"plugin {path!r} is {fn!r}; expected a function train(x, y, *, seed)")
    try:
        inspect.signature(fn).bind(np.zeros((1, 1)), np.zeros(1), seed=0)
    except TypeError as exc:
        raise InputError(f"plugin {path!r}: signature {inspect.signature(fn)} cannot be called as train(x, y, seed=...)") from exc
    eps = epsilon if epsilon is not None else getattr(module, "CLAIMED_EPSILON", None)
    dlt = delta if delta is not None else getattr(module, "CLAIMED_DELTA", None)
    eps, dlt = _check_claim(path, eps, dlt)
    return BlackBoxTrainer(source=path, train_fn=fn, epsilon=eps, delta=dlt)
