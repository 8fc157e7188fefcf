"""Boundary checks for the statistics entry points (raise ``InputError``)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from audit.errors import InputError

# Level of the design check below: a correct one-run design (each canary included
# independently with probability 1/2) is refused with probability below this once m >= 21
# (see ``check_one_run_design``). Small, so that a genuine audit is practically never refused.
DESIGN_TEST_LEVEL = 1e-6


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
    if isinstance(value, bool):
        raise InputError(f"{name}={value!r}: expected a non-negative integer")
    if not isinstance(value, numbers.Integral):  # floats: integral values only (no float() of huge ints)
        try:
            ok = float(value).is_integer()
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise InputError(f"{name}={value!r}: expected a non-negative integer")
    if value < 0:
        raise InputError(f"{name}={value!r}: expected a non-negative integer")
    return int(value)


def check_one_run_design(n_members: int, m: int) -> None:
    """Refuse a member count that the one-run design could not plausibly have produced.

    The one-run bound (Steinke, Nasr & Jagielski 2023, Theorem 5.2) holds only if each of
    the m canaries was included independently with probability 1/2, so that the number of
    members is Binomial(m, 1/2). Refused: 0 or m members (every guess of one kind would be
    right whatever the scores), and any count whose two-sided exact binomial test
    (``scipy.stats.binomtest``) against Binomial(m, 1/2) has p < ``DESIGN_TEST_LEVEL``.
    A correct design is therefore refused with probability below ``DESIGN_TEST_LEVEL``
    (1e-6) when m >= 21 (the test itself then rejects 0 and m: p = 2^(1-m) < 1e-6), and
    with probability 2^(1-m) (only the counts 0 and m) when m <= 20.
    A subset of canaries chosen without looking at their membership passes as well: its
    member count is again Binomial(m', 1/2). Refusing only ever withholds a bound, so it
    cannot make a bound unsound.
    """
    from scipy import stats

    what = f"members: {n_members} of {m} canaries are members"
    need = "the one-run bound needs each canary included independently with probability 1/2"
    if n_members == 0 or n_members == m:
        raise InputError(f"{what}: {need}; expected both members and non-members")
    p = stats.binomtest(n_members, m, 0.5).pvalue
    if p < DESIGN_TEST_LEVEL:
        raise InputError(
            f"{what}, implausible under Binomial({m}, 1/2) (two-sided binomial test p = {p:.2g} "
            f"< {DESIGN_TEST_LEVEL:g}, a level a correct design falls below with probability "
            f"< {DESIGN_TEST_LEVEL:g}): {need}"
        )


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
