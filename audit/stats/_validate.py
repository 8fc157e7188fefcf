"""Boundary checks for the statistics entry points (raise ``InputError``)."""

from __future__ import annotations

import math

import numpy as np

from audit.errors import InputError


def check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence={confidence!r}: expected a number in (0, 1)")
    return confidence


def check_delta(delta: float) -> float:
    delta = float(delta)
    if not 0.0 <= delta < 1.0:
        raise InputError(f"delta={delta!r}: expected a number in [0, 1)")
    return delta


def check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or value < 0:
        raise InputError(f"{name}={value!r}: expected a non-negative integer")
    return int(value)


def check_scores(scores, members) -> tuple[np.ndarray, np.ndarray]:
    """Return ``scores: float64[n]`` and ``members: bool[n]`` or raise ``InputError``."""
    scores = np.asarray(scores)
    members = np.asarray(members)
    if scores.ndim != 1:
        raise InputError(f"scores has shape {scores.shape}: expected a 1-d array")
    if members.ndim != 1:
        raise InputError(f"members has shape {members.shape}: expected a 1-d array")
    if scores.shape != members.shape:
        raise InputError(
            f"scores has {scores.size} entries but members has {members.size}: expected equal lengths"
        )
    if scores.size == 0:
        raise InputError("scores is empty: expected at least one canary")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise InputError(f"scores has dtype {scores.dtype}: expected real numbers")
    scores = scores.astype(np.float64)
    bad = ~np.isfinite(scores)
    if bad.any():
        raise InputError(f"scores has {int(bad.sum())} NaN or infinite values: expected finite numbers")
    if members.dtype != np.bool_:
        if not np.issubdtype(members.dtype, np.number) or not np.isin(members, (0, 1)).all():
            raise InputError(f"members has dtype {members.dtype} with values other than 0/1: expected booleans")
        members = members.astype(bool)
    return scores, members


def check_finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name}={value!r}: expected a finite number")
    return value
