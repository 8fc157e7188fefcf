"""From trained models to observations: the per-model x per-record outputs attacks read.

A *model trainer* is any callable ``trainer(train: Dataset, *, seed: int) -> TrainedModel``;
factories below wrap the plain, Opacus DP-SGD, faulty-zoo and black-box (plugin or command) trainers.
:func:`observe_models` trains model k on the records with ``keep[k]`` True and appends its
outputs on *all* records to an ``audit.observations.ObservationRun``, model by model, so
an interrupted run resumes at ``run.n_models_done`` (Carlini et al., "Membership Inference
Attacks From First Principles" (LiRA), S&P 2022: shadow models on random halves, each
queried on every record).

Queries: ``augment`` names the views of each record the model is asked about
(``"none"``; for images ``"mirror"``: the record and its left-right mirror, as LiRA queries
mirrored CIFAR images; ``"shift"``: the record and its four 1-pixel shifts).

Output defences: with ``defence`` (``trainers.output_defences.OutputDefence``) the
observation is what the defended model reveals, stored as log-probabilities
``log(max(p, 1e-30))`` so that ``softmax`` of the stored row gives back the revealed
probabilities (renormalised) and zeros stay finite.

Seeds: model k gets ``np.random.SeedSequence([seed, k])``, independent of which models were
trained before, so resuming or training one model alone reproduces the same model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch
from opacus.optimizers import DPOptimizer

from audit.errors import InputError
from trainers.data import Dataset
from trainers.models import build_model
from trainers.opacus_dp import DPConfig, train_dp
from trainers.output_defences import OutputDefence
from trainers.plain import PlainConfig, predict_logits, train_plain
from trainers.plugins import BlackBoxModel

PROB_FLOOR = 1e-30


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained model as the observer sees it: ``predict_logits(x: float32[n, ...]) -> float[n, classes]``,
    and the (epsilon, delta) its training claims (``inf`` for non-private training).
    ``dpsgd``: for DP-SGD training, the claim's ``noise_multiplier``, ``sample_rate``,
    ``accounting_sample_rate`` and ``steps`` (the curve a black-box audit tests)."""

    predict_logits: Callable[[np.ndarray], np.ndarray]
    epsilon: float
    delta: float
    dpsgd: Mapping[str, Any] | None = None


class ModelTrainer(Protocol):
    def __call__(self, train: Dataset, *, seed: int) -> TrainedModel: ...


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """What one call of :func:`observe_models` learned about model ``index``."""

    index: int
    n_train: int
    train_accuracy: float
    test_accuracy: float | None
    epsilon: float
    delta: float


def _views_none(x: np.ndarray) -> np.ndarray:
    return x[None]


def _require_image(x: np.ndarray, name: str) -> None:
    if x.ndim != 4:
        raise InputError(f"augment={name!r} needs images float[n, c, h, w]; got shape {x.shape}")


def _views_mirror(x: np.ndarray) -> np.ndarray:
    _require_image(x, "mirror")
    return np.stack([x, x[..., ::-1]])


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        x[..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return out


def _views_shift(x: np.ndarray) -> np.ndarray:
    _require_image(x, "shift")
    return np.stack([x] + [_shift(x, dy, dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))])


AUGMENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": _views_none,
    "mirror": _views_mirror,
    "shift": _views_shift,
}


def query_views(x: np.ndarray, *, augment: str = "none") -> np.ndarray:
    """``float32[queries, n, ...]``: the views of every record named by ``augment`` (view 0 is ``x``);
    int64 token ids stay int64."""
    if augment not in AUGMENTATIONS:
        raise InputError(f"augment={augment!r}; expected one of {sorted(AUGMENTATIONS)}")
    x = np.asarray(x)
    x = x if x.dtype == np.int64 else x.astype(np.float32, copy=False)
    return np.ascontiguousarray(AUGMENTATIONS[augment](x))


def observe_outputs(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    *,
    augment: str = "none",
    defence: OutputDefence | None = None,
) -> np.ndarray:
    """``float32[n, queries, classes]``: raw logits, or log of the defended probabilities."""
    outputs = []
    for view in query_views(x, augment=augment):
        logits = np.asarray(predict(view), dtype=np.float64)
        if logits.ndim != 2 or len(logits) != len(view):
            raise InputError(f"model returned shape {logits.shape}; expected [{len(view)}, classes]")
        if defence is not None:
            logits = np.log(np.maximum(defence.apply(logits), PROB_FLOOR))
        outputs.append(logits)
    return np.stack(outputs, axis=1).astype(np.float32)


def _seeds(seed: int) -> tuple[int, int]:
    init, train = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(init >> 1), int(train >> 1)


def plain_trainer(model: str, *, config: PlainConfig, **model_kw: Any) -> ModelTrainer:
    """Non-private training (``trainers.plain.train_plain``) of a fresh ``build_model(model, ...)``."""

    def trainer(train: Dataset, *, seed: int) -> TrainedModel:
        init_seed, train_seed = _seeds(seed)
        net = build_model(model, train.in_shape, train.n_classes, generator=torch.Generator().manual_seed(init_seed), **model_kw)
        train_plain(net, train, config=config, seed=train_seed)
        return TrainedModel(lambda x: predict_logits(net, x), float("inf"), 0.0)

    return trainer


def dp_trainer(
    model: str,
    *,
    config: DPConfig,
    zoo: str | None = None,
    optimizer_class: type[DPOptimizer] | None = None,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    **model_kw: Any,
) -> ModelTrainer:
    """DP-SGD (``trainers.opacus_dp.train_dp``), a faulty ``zoo`` variant, or a plugin ``optimizer_class``."""
    if zoo is not None and optimizer_class is not None:
        raise InputError(f"zoo={zoo!r} and optimizer_class={optimizer_class!r}; expected at most one")
    if zoo is not None:
        from trainers.zoo import get_variant

        get_variant(zoo)  # fail early on an unknown name

    def trainer(train: Dataset, *, seed: int) -> TrainedModel:
        init_seed, train_seed = _seeds(seed)
        net = build_model(model, train.in_shape, train.n_classes, generator=torch.Generator().manual_seed(init_seed), **model_kw)
        if zoo is not None:
            from trainers.zoo import train_faulty

            res = train_faulty(zoo, net, train, config=config, seed=train_seed, optimizer_kwargs=optimizer_kwargs)
        else:
            res = train_dp(net, train, config=config, seed=train_seed, optimizer_class=optimizer_class or DPOptimizer,
                           optimizer_kwargs=optimizer_kwargs)
        dpsgd = {"noise_multiplier": res.noise_multiplier, "sample_rate": res.sample_rate,
                 "accounting_sample_rate": res.accounting_sample_rate, "steps": res.steps}
        return TrainedModel(lambda x: predict_logits(net, x), res.epsilon, res.delta, dpsgd)

    return trainer


class BlackBoxFit(Protocol):
    """A black-box trainer and its claim: ``trainers.plugins.BlackBoxTrainer`` (a function)
    or ``trainers.command.CommandTrainer`` (a command line)."""

    epsilon: float
    delta: float

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> BlackBoxModel: ...


def blackbox_trainer(plugin: BlackBoxFit) -> ModelTrainer:
    """A user's black-box trainer (a plugin function or a command); its logits are
    ``log(max(p, 1e-30))``."""

    def trainer(train: Dataset, *, seed: int) -> TrainedModel:
        model = plugin.fit(train.x, train.y, seed=seed)
        return TrainedModel(lambda x: np.log(np.maximum(model.predict_proba(x), PROB_FLOOR)), plugin.epsilon, plugin.delta)

    return trainer


def _accuracy(trained: TrainedModel, ds: Dataset) -> float:
    return float((np.asarray(trained.predict_logits(ds.x)).argmax(axis=1) == ds.y).mean())


def observe_models(
    run,
    trainer: ModelTrainer,
    records: Dataset,
    keep: np.ndarray,
    *,
    seed: int,
    augment: str = "none",
    defence: OutputDefence | None = None,
    test: Dataset | None = None,
    progress: bool = False,
) -> tuple[ModelRecord, ...]:
    """Train models ``run.n_models_done .. K-1`` and append their outputs on all ``records`` to ``run``.

    run: an ``audit.observations.ObservationRun`` (created with ``labels=records.y``).
    keep: bool[K, records]; model k trains on ``records.subset(keep[k])``.
    Returns one :class:`ModelRecord` (utility, claim) per model trained in this call.
    """
    keep = np.asarray(keep)
    if keep.dtype != bool or keep.ndim != 2 or keep.shape[1] != len(records):
        raise InputError(f"keep is {keep.dtype}{list(keep.shape)}; expected bool[models, {len(records)}]")
    start = run.n_models_done
    if start > len(keep):
        raise InputError(f"run already holds {start} models; keep has only {len(keep)}")
    indices = range(start, len(keep))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="models", initial=start, total=len(keep))
    out = []
    for k in indices:
        train = records.subset(keep[k])
        if len(train) == 0:
            raise InputError(f"keep[{k}] selects no records; expected at least one training record")
        model_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        trained = trainer(train, seed=model_seed)
        outputs = observe_outputs(trained.predict_logits, records.x, augment=augment, defence=defence)
        run.append(keep=keep[k], logits=outputs)
        # utility of the model itself, not of its (possibly defended) outputs
        train_acc = _accuracy(trained, train)
        test_acc = _accuracy(trained, test) if test is not None and len(test) else None
        out.append(ModelRecord(k, len(train), train_acc, test_acc, trained.epsilon, trained.delta))
    return tuple(out)
