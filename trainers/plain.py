"""Non-private training with the defences users compare against DP-SGD.

Training-time defences (all in :class:`PlainConfig`): weight decay (L2 penalty added to the
gradient by the torch optimizer), dropout (a model option, see ``trainers.models``),
early stopping on a validation set (stop after ``patience`` epochs without a lower
validation loss and restore the best weights), label smoothing (Szegedy et al., "Rethinking
the Inception Architecture", CVPR 2016), and knowledge distillation
(:func:`train_distilled`; Hinton et al., "Distilling the Knowledge in a Neural Network",
2015: the student minimises ``T^2 * CE(softmax(z_teacher / T), softmax(z_student / T))`` on
reference data the teacher labels, so it never sees the private labels; used as a
membership-inference defence by Shejwalkar & Houmansadr, AAAI 2021).

Output-side defences live in ``trainers.output_defences``.

Every training function returns a :class:`TrainResult` holding the model and its utility
(train and test accuracy). Randomness (initial shuffling, dropout masks) comes from
``seed``: minibatch order from a ``torch.Generator``, and dropout, which only reads torch's
global generator, runs inside ``torch.random.fork_rng`` seeded with ``seed`` so the caller's
global state is left as it was.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audit.errors import InputError
from trainers.data import Dataset

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


@dataclasses.dataclass(frozen=True)
class PlainConfig:
    """Hyper-parameters of minibatch training; ``patience=None`` disables early stopping."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer={self.optimizer!r}; expected one of {sorted(OPTIMIZERS)}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name}={value!r}; expected an int >= 1")
        if not self.lr > 0:
            raise InputError(f"lr={self.lr!r}; expected > 0")
        if self.weight_decay < 0 or self.momentum < 0:
            raise InputError(f"weight_decay={self.weight_decay!r}, momentum={self.momentum!r}; expected >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InputError(f"label_smoothing={self.label_smoothing!r}; expected in [0, 1)")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise InputError(f"patience={self.patience!r}; expected None or an int >= 1")


@dataclasses.dataclass(frozen=True, eq=False)
class TrainResult:
    """A trained model with its utility.

    ``val_losses: float[epochs_run]`` is empty without early stopping; ``best_epoch`` is the
    (1-based) epoch whose weights were kept.
    """

    model: nn.Module
    train_accuracy: float
    test_accuracy: float | None
    epochs_run: int
    best_epoch: int
    val_losses: tuple[float, ...] = ()


def predict_logits(model: nn.Module, x: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    """``logits: float32[n, classes]`` of ``model`` (eval mode, no gradients) on ``x: float32[n, ...]``."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(model(torch.as_tensor(x[start : start + batch_size])).numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def accuracy(model: nn.Module, ds: Dataset) -> float:
    """Fraction of ``ds`` whose arg-max logit equals the label."""
    if len(ds) == 0:
        raise InputError(f"dataset {ds.name!r} is empty; cannot compute accuracy")
    return float((predict_logits(model, ds.x).argmax(axis=1) == ds.y).mean())


def _mean_loss(model: nn.Module, ds: Dataset) -> float:
    logits = torch.as_tensor(predict_logits(model, ds.x))
    return float(F.cross_entropy(logits, torch.as_tensor(ds.y)))


def _fit(
    model: nn.Module,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    config: PlainConfig,
    seed: int,
    val: Dataset | None,
    logit_scale: float = 1.0,
    loss_scale: float = 1.0,
) -> tuple[int, int, tuple[float, ...]]:
    """Minibatch training on ``targets``: int64[n] labels or float32[n, classes] soft labels.

    The loss is ``loss_scale * CE(targets, softmax(logits / logit_scale))`` with label smoothing.
    Returns (epochs run, best epoch, validation losses).
    """
    if config.patience is not None and (val is None or len(val) == 0):
        raise InputError("early stopping (patience set) needs a non-empty validation dataset")
    if len(x) == 0:
        raise InputError("training set is empty")
    opt_kwargs = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        opt_kwargs["momentum"] = config.momentum
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), **opt_kwargs)
    x_t, t_t = torch.as_tensor(x), torch.as_tensor(targets)
    order_rng = torch.Generator().manual_seed(seed)
    best = (float("inf"), 0, None)
    val_losses: list[float] = []
    epoch = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout masks; scoped by fork_rng
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(len(x_t), generator=order_rng)
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                optimizer.zero_grad()
                logits = model(x_t[idx]) / logit_scale
                loss = loss_scale * F.cross_entropy(logits, t_t[idx], label_smoothing=config.label_smoothing)
                loss.backward()
                optimizer.step()
            if config.patience is None:
                continue
            val_losses.append(_mean_loss(model, val))
            if val_losses[-1] < best[0]:
                best = (val_losses[-1], epoch, copy.deepcopy(model.state_dict()))
            elif epoch - best[1] >= config.patience:
                break
    model.eval()
    if best[2] is not None:
        model.load_state_dict(best[2])
        return epoch, best[1], tuple(val_losses)
    return epoch, epoch, tuple(val_losses)


def train_plain(
    model: nn.Module,
    train: Dataset,
    *,
    config: PlainConfig,
    seed: int,
    val: Dataset | None = None,
    test: Dataset | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train`` with cross-entropy; returns it with its utility."""
    epochs, best_epoch, val_losses = _fit(model, train.x, train.y, config=config, seed=seed, val=val)
    return TrainResult(
        model=model,
        train_accuracy=accuracy(model, train),
        test_accuracy=accuracy(model, test) if test is not None else None,
        epochs_run=epochs,
        best_epoch=best_epoch,
        val_losses=val_losses,
    )


def train_distilled(
    student: nn.Module,
    transfer_x: np.ndarray,
    teacher_logits: np.ndarray,
    *,
    temperature: float,
    config: PlainConfig,
    seed: int,
    train: Dataset,
    test: Dataset | None = None,
    val: Dataset | None = None,
) -> TrainResult:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015): fit ``student`` to the teacher's soft labels.

    transfer_x: float32[m, ...] reference/population records (no private labels used).
    teacher_logits: float[m, classes] the teacher's logits on ``transfer_x``
        (e.g. ``predict_logits(teacher, transfer_x)``).
    Loss per record: ``T^2 * CE(softmax(teacher / T), softmax(student / T))``; the T^2 keeps
    gradient magnitudes comparable across temperatures. ``train`` is the teacher's private
    training set, used only to report the student's train accuracy.
    """
    teacher_logits = np.asarray(teacher_logits, dtype=np.float64)
    if teacher_logits.ndim != 2 or len(teacher_logits) != len(transfer_x):
        raise InputError(
            f"teacher_logits has shape {teacher_logits.shape}; expected [{len(transfer_x)}, classes]"
        )
    if not temperature > 0:
        raise InputError(f"temperature={temperature!r}; expected > 0")
    z = teacher_logits / temperature
    soft = np.exp(z - z.max(axis=1, keepdims=True))
    soft = (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32)
    epochs, best_epoch, val_losses = _fit(
        student, np.asarray(transfer_x, dtype=np.float32), soft, config=config, seed=seed, val=val,
        logit_scale=temperature, loss_scale=temperature**2,
    )
    return TrainResult(
        model=student,
        train_accuracy=accuracy(student, train),
        test_accuracy=accuracy(student, test) if test is not None else None,
        epochs_run=epochs,
        best_epoch=best_epoch,
        val_losses=val_losses,
    )
