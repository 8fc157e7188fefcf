"""Input-space (black-box) canaries: records inserted into the training set.

Each constructor returns a :class:`CanarySet`: the canaries' inputs and labels, their
kind, and the score an attack should read them by. All randomness comes from the
``np.random.Generator`` passed in.

* :func:`held_out` - real records from a pool kept out of training (the natural
  membership-inference target; Carlini et al. 2022 read them with LiRA).
* :func:`mislabeled` - real records with a random wrong label, uniform over the other
  classes and never the true one (a common audit canary: a model must memorise it to fit
  it, so its loss separates IN from OUT; Nasr et al. 2023, Section 4).
* :func:`out_of_distribution` - inputs drawn independently per feature, uniformly over
  each feature's observed range: the marginal ranges of the data, none of its correlations
  (for images, structureless noise), with a random label.
* :func:`clipbkd` - crafted canaries after ClipBKD (Jagielski, Ullman & Oprea 2020,
  "Auditing differentially private machine learning: how private is private SGD?",
  Algorithm 2): the direction of least variance of the data (the last right-singular
  vector of the centred data matrix, numpy SVD), scaled to a large norm, with an unlikely
  label. Along that direction real records barely move, so a canary there has a gradient
  that real records do not cancel.

Inputs are ``x: float[records, *features]`` and labels ``y: int[records]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from audit.errors import InputError

SCORES = ("loss", "lira")


@dataclasses.dataclass(frozen=True)
class CanarySet:
    """A set of input-space canaries.

    Attributes:
      x: float[canaries, *features]; canary inputs.
      y: int[canaries]; canary labels (the label trained on when IN).
      kind: "held-out", "mislabeled", "out-of-distribution" or "clipbkd".
      score: the score to read them by: "loss" (the target's loss) or "lira"
        (Carlini et al. 2022 likelihood ratio over shadow models).
      source_index: int[canaries] or None; row of each canary in the array it was
        taken from (None for synthetic inputs).
    """

    x: np.ndarray
    y: np.ndarray
    kind: str
    score: str
    source_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise InputError(f"score={self.score!r}: expected one of {SCORES}")
        if self.x.shape[0] != self.y.shape[0]:
            raise InputError(f"x has {self.x.shape[0]} rows and y {self.y.shape[0]}: expected one label per canary")

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _check_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2:
        raise InputError(f"x with shape {x.shape}: expected float[records, *features]")
    if y.shape != (x.shape[0],):
        raise InputError(f"y with shape {y.shape}: expected int[{x.shape[0]}] (one label per record)")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"y with dtype {y.dtype}: expected integer class labels")
    return x, y


def _check_n(n, available: int | None = None) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n={n!r}: expected an integer >= 1")
    if available is not None and n > available:
        raise InputError(f"n={n}: expected at most {available} (the records available)")
    return int(n)


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng={rng!r}: expected a numpy.random.Generator")
    return rng


def _check_classes(n_classes, y: np.ndarray | None = None) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise InputError(f"n_classes={n_classes!r}: expected an integer >= 2")
    if y is not None and y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"labels in [{y.min()}, {y.max()}]: expected labels in [0, {n_classes - 1}]")
    return int(n_classes)


def held_out(x_pool, y_pool, n: int, rng: np.random.Generator, *, score: str = "lira") -> CanarySet:
    """``n`` distinct records drawn uniformly from a pool of records never trained on.

    Args:
      x_pool: float[pool, *features]; records kept out of every training set.
      y_pool: int[pool].
    """
    x_pool, y_pool = _check_xy(x_pool, y_pool)
    n = _check_n(n, x_pool.shape[0])
    idx = _check_rng(rng).choice(x_pool.shape[0], size=n, replace=False)
    return CanarySet(x=x_pool[idx].copy(), y=y_pool[idx].copy(), kind="held-out", score=score, source_index=idx)


def mislabeled(x_pool, y_pool, n: int, rng: np.random.Generator, *, n_classes: int, score: str = "lira") -> CanarySet:
    """``n`` distinct records with their label replaced by a uniformly random wrong one.

    The new label is ``(y + k) mod n_classes`` with k uniform on {1, ..., n_classes - 1}:
    uniform over the other classes, never the true label.
    """
    x_pool, y_pool = _check_xy(x_pool, y_pool)
    n_classes = _check_classes(n_classes, y_pool)
    n = _check_n(n, x_pool.shape[0])
    rng = _check_rng(rng)
    idx = rng.choice(x_pool.shape[0], size=n, replace=False)
    shift = rng.integers(1, n_classes, size=n)
    y = (y_pool[idx] + shift) % n_classes
    return CanarySet(x=x_pool[idx].copy(), y=y.astype(y_pool.dtype), kind="mislabeled", score=score, source_index=idx)


def out_of_distribution(x_ref, n: int, rng: np.random.Generator, *, n_classes: int, score: str = "loss") -> CanarySet:
    """``n`` inputs with each feature uniform over its observed range, independently.

    Args:
      x_ref: float[records, *features]; data whose per-feature range is used.
      n_classes: labels are uniform on {0, ..., n_classes - 1}.
    """
    x_ref = np.asarray(x_ref, dtype=np.float64)
    if x_ref.ndim < 2 or x_ref.shape[0] < 1:
        raise InputError(f"x_ref with shape {x_ref.shape}: expected float[records, *features] with records >= 1")
    n = _check_n(n)
    n_classes = _check_classes(n_classes)
    rng = _check_rng(rng)
    lo, hi = x_ref.min(axis=0), x_ref.max(axis=0)
    x = lo + (hi - lo) * rng.random((n,) + x_ref.shape[1:])
    y = rng.integers(0, n_classes, size=n)
    return CanarySet(x=x, y=y, kind="out-of-distribution", score=score)


def least_variance_directions(x_ref, k: int) -> np.ndarray:
    """The ``k`` directions of least variance of ``x_ref``, least first.

    The last ``k`` right-singular vectors of the centred, flattened data matrix (numpy SVD),
    in order of increasing singular value.

    Returns:
      float[k, features] with orthonormal rows (features = product of the feature shape).
    """
    x_ref = np.asarray(x_ref, dtype=np.float64)
    flat = x_ref.reshape(x_ref.shape[0], -1)
    d = flat.shape[1]
    if not 1 <= k <= d:
        raise InputError(f"k={k}: expected between 1 and the number of features ({d})")
    centred = flat - flat.mean(axis=0)
    # full_matrices=True so that directions with zero variance (d > records) are included.
    _, _, vt = np.linalg.svd(centred, full_matrices=flat.shape[0] < d)
    return vt[::-1][:k]


def clipbkd(
    x_ref,
    y_ref,
    n: int,
    rng: np.random.Generator,
    *,
    n_classes: int,
    norm: float | None = None,
    label: int | None = None,
    score: str = "loss",
) -> CanarySet:
    """ClipBKD-style crafted canaries (Jagielski, Ullman & Oprea 2020, Algorithm 2).

    Canary i is ``mean + s_i * norm * v_i``, where v_1, v_2, ... are the directions of least
    variance of the data (:func:`least_variance_directions`; distinct canaries take
    distinct, orthogonal directions, so ``n`` is at most the number of features), s_i a
    random sign, and the label is ``label`` or, by default, the least frequent class in
    ``y_ref`` (smallest index on ties).

    Args:
      x_ref: float[records, *features]; the training data (or a sample of it).
      y_ref: int[records].
      norm: distance of each canary from the data mean; default 10 times the largest
        distance of a real record from the mean.
    """
    x_ref, y_ref = _check_xy(x_ref, y_ref)
    x_ref = x_ref.astype(np.float64)
    n_classes = _check_classes(n_classes, y_ref)
    n = _check_n(n, int(np.prod(x_ref.shape[1:])))
    rng = _check_rng(rng)
    flat = x_ref.reshape(x_ref.shape[0], -1)
    mean = flat.mean(axis=0)
    if norm is None:
        norm = 10.0 * float(np.linalg.norm(flat - mean, axis=1).max())
        if norm == 0.0:
            raise InputError("x_ref: all records are identical; expected data with some spread (or pass norm=)")
    elif not np.isfinite(norm) or norm <= 0:
        raise InputError(f"norm={norm!r}: expected a finite number > 0")
    if label is None:
        label = int(np.argmin(np.bincount(y_ref, minlength=n_classes)))
    elif isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < n_classes:
        raise InputError(f"label={label!r}: expected a class in [0, {n_classes - 1}]")
    directions = least_variance_directions(x_ref, n)
    signs = rng.choice(np.array([-1.0, 1.0]), size=n)
    x = mean + norm * signs[:, None] * directions
    y = np.full(n, label, dtype=y_ref.dtype)
    return CanarySet(x=x.reshape((n,) + x_ref.shape[1:]), y=y, kind="clipbkd", score=score)
