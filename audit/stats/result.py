"""Result objects shared by every estimator in ``audit.stats``.

A bound is a result object, never a bare float (ARCHITECTURE.md): it carries its value,
the confidence it holds at, the method, whether it is a guaranteed bound or an estimate
that rests on an assumption, and the inputs it came from, so a caller never recomputes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Mapping

Kind = Literal["bound", "estimate"]

GUARANTEED = "bound"
ESTIMATE = "estimate"


def jsonable(value: Any) -> Any:
    """JSON-friendly copy: numpy scalars to Python, tuples to lists, inf/nan to strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclasses.dataclass(frozen=True)
class EpsilonResult:
    """An empirical epsilon: a guaranteed lower bound, or an estimate.

    Attributes:
      value: epsilon (>= 0).
      kind: ``"bound"`` holds with probability at least ``confidence`` whatever the
        mechanism; ``"estimate"`` holds only under ``assumption`` and must never decide
        a verdict.
      method: short name of the estimator (e.g. ``"one-run"``, ``"clopper-pearson"``).
      confidence: the confidence level the value is stated at.
      delta: the delta of the (epsilon, delta) claim that was tested.
      inputs: what the value was computed from (counts, sizes, strategy).
      details: by-products (chosen threshold or guess counts, interval ends, power).
      assumption: for estimates, the assumption they rest on; ``None`` for bounds.
    """

    value: float
    kind: Kind
    method: str
    confidence: float
    delta: float
    inputs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    assumption: str | None = None

    @property
    def is_guaranteed(self) -> bool:
        return self.kind == GUARANTEED

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "epsilon_lower_bound" if self.is_guaranteed else "epsilon_estimate": self.value,
                "kind": self.kind,
                "method": self.method,
                "confidence": self.confidence,
                "delta": self.delta,
                "inputs": dict(self.inputs),
                "details": dict(self.details),
                "assumption": self.assumption,
            }
        )
