"""The privacy-utility Pareto front of several runs.

A run is on the front when no other run is at least as useful *and* at most as leaky,
and strictly better in one of the two. Utility is maximised (test accuracy), leakage is
minimised (TPR at low FPR, or an epsilon lower bound).
"""

from __future__ import annotations

import math
from typing import Sequence

from audit.errors import InputError


def _usable(x: float | None) -> bool:
    return x is not None and not math.isnan(x)


def pareto_front(utility: Sequence[float | None], leakage: Sequence[float | None]) -> list[bool]:
    """``front[i]`` is True when run ``i`` is not dominated by any other run.

    Args:
      utility: float[runs], higher is better (e.g. test accuracy).
      leakage: float[runs], lower is better (e.g. TPR at 0.1% FPR).

    A run with a missing (``None``/NaN) coordinate cannot be placed and is never on the
    front; it does not dominate others either. Identical points are all on the front.
    """
    if len(utility) != len(leakage):
        raise InputError(f"utility and leakage differ in length: {len(utility)} != {len(leakage)}")
    usable = [_usable(u) and _usable(v) for u, v in zip(utility, leakage)]
    front = []
    for i, ok in enumerate(usable):
        if not ok:
            front.append(False)
            continue
        ui, li = utility[i], leakage[i]
        dominated = any(
            usable[j] and j != i
            and utility[j] >= ui and leakage[j] <= li
            and (utility[j] > ui or leakage[j] < li)
            for j in range(len(usable))
        )
        front.append(not dominated)
    return front
