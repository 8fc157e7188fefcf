"""Output-side defences applied at query time, as pure functions on logits or probabilities.

These change what an attacker observes, not the trained weights:

- temperature scaling: ``softmax(logits / T)``;
- top-k: keep the k largest probabilities, zero the rest (Shokri et al., "Membership Inference Attacks
  against Machine Learning Models", S&P 2017, mitigation: restrict the prediction vector
  to the top k classes);
- rounding: round probabilities to ``d`` decimals (same paper: coarsen the precision);
- label-only: reveal only the arg-max label, as a one-hot vector (Choquette-Choo et al.,
  "Label-Only Membership Inference Attacks", ICML 2021).

Inputs/outputs are ``float[n, classes]`` numpy arrays. Ties in top-k and label-only are
broken towards the lower class index (``np.argsort(..., kind="stable")`` order).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import softmax

from audit.errors import InputError


def _check_2d(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise InputError(f"{what} has shape {a.shape}; expected [n, classes] with classes >= 2")
    return a


def temperature(logits: np.ndarray, t: float) -> np.ndarray:
    """``probs[n, classes] = softmax(logits / t)``; t > 1 flattens, t < 1 sharpens."""
    if not t > 0:
        raise InputError(f"temperature t={t!r}; expected t > 0")
    return softmax(_check_2d(logits, "logits") / t, axis=1)


def _top_indices(probs: np.ndarray, k: int) -> np.ndarray:
    # stable sort of -p keeps lower indices first among ties
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Keep each row's ``k`` largest probabilities, set the others to 0 (no renormalisation)."""
    probs = _check_2d(probs, "probs")
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= probs.shape[1]:
        raise InputError(f"top_k k={k!r}; expected an int in 1..{probs.shape[1]}")
    out = np.zeros_like(probs)
    idx = _top_indices(probs, int(k))
    np.put_along_axis(out, idx, np.take_along_axis(probs, idx, axis=1), axis=1)
    return out


def round_probs(probs: np.ndarray, decimals: int) -> np.ndarray:
    """Round probabilities to ``decimals`` decimal places (half to even, as ``np.round``)."""
    if not isinstance(decimals, (int, np.integer)) or decimals < 0:
        raise InputError(f"decimals={decimals!r}; expected a non-negative int")
    return np.round(_check_2d(probs, "probs"), int(decimals))


def label_only(probs: np.ndarray) -> np.ndarray:
    """One-hot ``float[n, classes]`` of each row's arg-max."""
    probs = _check_2d(probs, "probs")
    out = np.zeros_like(probs)
    np.put_along_axis(out, _top_indices(probs, 1), 1.0, axis=1)
    return out


@dataclasses.dataclass(frozen=True)
class OutputDefence:
    """A composition of output defences, applied in the order temperature, top-k, rounding, label-only.

    The default (T=1, nothing else) returns plain softmax probabilities.
    """

    temperature: float = 1.0
    top_k: int | None = None
    decimals: int | None = None
    label_only: bool = False

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise InputError(f"temperature={self.temperature!r}; expected > 0")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise InputError(f"top_k={self.top_k!r}; expected None or an int >= 1")
        if self.decimals is not None and (not isinstance(self.decimals, int) or self.decimals < 0):
            raise InputError(f"decimals={self.decimals!r}; expected None or an int >= 0")

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """What the defended model reveals for ``logits: float[n, classes]``: ``float[n, classes]``."""
        probs = temperature(logits, self.temperature)
        if self.label_only:
            return label_only(probs)
        if self.top_k is not None:
            probs = top_k(probs, min(self.top_k, probs.shape[1]))
        if self.decimals is not None:
            probs = round_probs(probs, self.decimals)
        return probs
