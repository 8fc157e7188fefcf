"""Number formatting shared by the Markdown/HTML report and the terminal table.

Missing values print as ``-``; non-finite values as ``inf``/``nan``, so a reader can
tell "not computed" from "unbounded".
"""

from __future__ import annotations

import math

MISSING = "-"


def num(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant figures (0.12 -> "0.12", 1e-05 -> "1e-05")."""
    if value is None:
        return MISSING
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def pct(value: float | None, digits: int = 3) -> str:
    """A rate as a percentage (0.001 -> "0.1%")."""
    if value is None:
        return MISSING
    if not math.isfinite(value):
        return num(value)
    return f"{100 * value:.{digits}g}%"


def pct_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    """``"11% [9%, 13%]"``; the interval is left out when unknown."""
    if interval is None:
        return pct(value)
    return f"{pct(value)} [{pct(interval[0])}, {pct(interval[1])}]"


def confidence(value: float | None) -> str:
    """0.95 -> "95%"."""
    if value is None:
        return MISSING
    return f"{100 * value:.4g}%"


def seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    if not math.isfinite(value):
        return num(value)
    return f"{value:.1f} s"
