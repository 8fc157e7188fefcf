"""Read the parts of a ``report.json`` dict that the human report shows.

Every part of a report may be missing or null (a non-DP audit has no claimed epsilon and
usually no bounds; a run may have no test set), so each reader returns ``None`` or an
empty container for a missing part. A part of the wrong type (a list where a dict is
expected, text where a number is expected) is a bug upstream: it raises ``InputError``
naming the field rather than rendering something misleading.

Numbers may arrive as the strings ``"inf"``/``"nan"`` (``EpsilonResult.to_dict`` writes
non-finite floats that way, since JSON has no infinity), so :func:`number` accepts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from audit.errors import InputError

SCHEMA = "dpaudit.report/1"

# The operating points of Carlini et al. (2022) that every report tabulates.
STANDARD_FPRS = (0.1, 0.01, 0.001, 0.0001)
# The single operating point used to rank attacks and runs.
HEADLINE_FPR = 0.001


def number(value: Any, field: str) -> float | None:
    """``value`` as a float, ``None`` when missing; ``"inf"``/``"nan"`` strings accepted."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"{field}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in {"inf", "infinity", "+inf", "-inf", "nan"}:
        return float(value.strip().lower().replace("infinity", "inf"))
    raise InputError(f"{field}: expected a number, got {value!r}")


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def section(parent: Mapping[str, Any], key: str, field: str | None = None) -> Mapping[str, Any]:
    """``parent[key]`` as a mapping; ``{}`` when missing or null."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{field or key}: expected an object, got {type(value).__name__}")
    return value


def items(parent: Mapping[str, Any], key: str, field: str | None = None) -> list[Mapping[str, Any]]:
    """``parent[key]`` as a list of mappings; ``[]`` when missing or null."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{field or key}: expected a list, got {type(value).__name__}")
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise InputError(f"{field or key}[{i}]: expected an object, got {type(entry).__name__}")
    return list(value)


def text(value: Any) -> str | None:
    return None if value is None else str(value)


def check_report(report: Any) -> Mapping[str, Any]:
    if not isinstance(report, Mapping):
        raise InputError(f"report: expected a dict, got {type(report).__name__}")
    return report


# --- the parts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """One row of ``bounds`` (guaranteed) or ``estimates`` (not guaranteed)."""

    name: str
    value: float | None
    guaranteed: bool
    method: str | None
    confidence: float | None
    delta: float | None
    power: float | None
    assumption: str | None


def _bound(entry: Mapping[str, Any], field: str, guaranteed: bool, index: int) -> Bound:
    key = "epsilon_lower_bound" if guaranteed else "epsilon_estimate"
    details = section(entry, "details", f"{field}.details")
    return Bound(
        name=text(entry.get("name")) or f"{field}[{index}]",
        value=number(entry.get(key), f"{field}.{key}"),
        guaranteed=guaranteed,
        method=text(entry.get("method")),
        confidence=number(entry.get("confidence"), f"{field}.confidence"),
        delta=number(entry.get("delta"), f"{field}.delta"),
        power=number(details.get("power"), f"{field}.details.power"),
        assumption=text(entry.get("assumption")),
    )


def bounds(report: Mapping[str, Any]) -> list[Bound]:
    """The guaranteed epsilon lower bounds, in report order."""
    return [_bound(e, f"bounds[{i}]", True, i) for i, e in enumerate(items(report, "bounds"))]


def estimates(report: Mapping[str, Any]) -> list[Bound]:
    """The epsilon estimates (they rest on an assumption and never decide a verdict)."""
    return [_bound(e, f"estimates[{i}]", False, i) for i, e in enumerate(items(report, "estimates"))]


def best_bound(report: Mapping[str, Any]) -> float | None:
    """The largest guaranteed lower bound; the verdict's value when there are no bounds."""
    values = [b.value for b in bounds(report) if b.value is not None and not math.isnan(b.value)]
    if values:
        return max(values)
    return number(section(report, "verdict").get("epsilon_lower_bound"), "verdict.epsilon_lower_bound")


def claimed_epsilon(report: Mapping[str, Any]) -> float | None:
    value = number(section(report, "claimed").get("epsilon"), "claimed.epsilon")
    if value is None:
        value = number(section(report, "verdict").get("claimed_epsilon"), "verdict.claimed_epsilon")
    return value


def power(report: Mapping[str, Any]) -> float | None:
    """The largest epsilon this audit could have shown (the verdict's, else the best bound's)."""
    value = number(section(report, "verdict").get("power"), "verdict.power")
    if value is not None:
        return value
    powers = [b.power for b in bounds(report) if b.power is not None]
    return max(powers) if powers else None


def run_name(report: Mapping[str, Any], default: str = "run") -> str:
    return text(report.get("name")) or default


@dataclass(frozen=True)
class OperatingPoint:
    """One row of an attack's ``tpr_at_fpr``."""

    target_fpr: float
    tpr: float | None
    fpr: float | None
    interval: tuple[float, float] | None


@dataclass(frozen=True)
class Attack:
    name: str
    auc: float | None
    n_members: int | None
    n_nonmembers: int | None
    points: tuple[OperatingPoint, ...]
    roc_fpr: tuple[float, ...]
    roc_tpr: tuple[float, ...]
    warnings: tuple[str, ...] = ()

    def at(self, target_fpr: float) -> OperatingPoint | None:
        for p in self.points:
            if math.isclose(p.target_fpr, target_fpr, rel_tol=1e-6):
                return p
        return None

    def tpr_at(self, target_fpr: float) -> float | None:
        p = self.at(target_fpr)
        return None if p is None else p.tpr

    def measurable(self, target_fpr: float) -> bool:
        """Whether enough non-members were scored to measure an FPR of ``target_fpr`` at all
        (at least 1/target_fpr); below that the "TPR at target_fpr" is the TPR at zero false
        positives, and no headline quotes it."""
        from audit.stats.roc import fpr_measurable

        return self.n_nonmembers is None or fpr_measurable(self.n_nonmembers, target_fpr)


def _count(value: Any, field: str) -> int | None:
    x = number(value, field)
    return None if x is None or not math.isfinite(x) else int(x)


def _size(entry: Mapping[str, Any], keys: tuple[str, ...], field: str) -> int | None:
    """A sample size under its report name or the name ``AttackEvaluation.to_dict`` uses;
    else from the first operating point, which carries the same denominators."""
    for key in keys:
        n = _count(entry.get(key), f"{field}.{key}")
        if n is not None:
            return n
    points = entry.get("tpr_at_fpr")
    if isinstance(points, (list, tuple)) and points and isinstance(points[0], Mapping):
        return _count(points[0].get(keys[0]), f"{field}.tpr_at_fpr[0].{keys[0]}")
    return None


def _interval(value: Any, field: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InputError(f"{field}: expected [low, high], got {value!r}")
    low, high = number(value[0], field), number(value[1], field)
    return None if low is None or high is None else (low, high)


def _curve(roc: Mapping[str, Any], field: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    fpr, tpr = roc.get("fpr") or [], roc.get("tpr") or []
    if not isinstance(fpr, (list, tuple)) or not isinstance(tpr, (list, tuple)) or len(fpr) != len(tpr):
        raise InputError(f"{field}: expected lists fpr and tpr of equal length")
    xs = [number(v, f"{field}.fpr") for v in fpr]
    ys = [number(v, f"{field}.tpr") for v in tpr]
    pairs = [(x, y) for x, y in zip(xs, ys) if finite(x) and finite(y)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def _messages(value: Any, field: str) -> tuple[str, ...]:
    """A list of warning sentences; ``()`` when missing or null."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{field}: expected a list of messages, got {value!r}")
    return tuple(value)


def attacks(report: Mapping[str, Any]) -> list[Attack]:
    """Every attack in the report, in report order."""
    out = []
    for name, entry in section(report, "attacks").items():
        field = f"attacks.{name}"
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            raise InputError(f"{field}: expected an object, got {type(entry).__name__}")
        points = []
        for i, p in enumerate(items(entry, "tpr_at_fpr", f"{field}.tpr_at_fpr")):
            f = f"{field}.tpr_at_fpr[{i}]"
            target = number(p.get("target_fpr"), f"{f}.target_fpr")
            if target is None:
                continue
            points.append(OperatingPoint(
                target_fpr=target,
                tpr=number(p.get("tpr"), f"{f}.tpr"),
                fpr=number(p.get("fpr"), f"{f}.fpr"),
                interval=_interval(p.get("tpr_interval"), f"{f}.tpr_interval"),
            ))
        roc_fpr, roc_tpr = _curve(section(entry, "roc", f"{field}.roc"), f"{field}.roc")
        out.append(Attack(
            name=str(name),
            auc=number(entry.get("auc"), f"{field}.auc"),
            n_members=_size(entry, ("n_members", "members"), field),
            n_nonmembers=_size(entry, ("n_nonmembers", "non_members"), field),
            points=tuple(points),
            roc_fpr=roc_fpr,
            roc_tpr=roc_tpr,
            warnings=_messages(entry.get("warnings"), f"{field}.warnings"),
        ))
    return out


@dataclass(frozen=True)
class Effective:
    """The effective noise of one claim test: sigma_eff (None: no level rejected), the
    effective epsilon, and the claimed sigma."""

    name: str
    epsilon: float | None
    sigma: float | None
    claimed_sigma: float | None


def effective(report: Mapping[str, Any]) -> list[Effective]:
    """The effective noise of each test of the claimed curve (``claim_tests[].effective``)."""
    out = []
    for i, test in enumerate(report.get("claim_tests") or []):
        if not isinstance(test, Mapping) or not isinstance(test.get("effective"), Mapping):
            continue
        e, field = test["effective"], f"claim_tests[{i}].effective"
        out.append(Effective(text(test.get("name")) or f"claim test {i}", number(e.get("epsilon"), f"{field}.epsilon"),
                             number(e.get("noise_multiplier"), f"{field}.noise_multiplier"),
                             number(e.get("claimed_noise_multiplier"), f"{field}.claimed_noise_multiplier")))
    return out


def attack_warnings(report: Mapping[str, Any]) -> list[str]:
    """The attacks' warnings (each message names its attack), in report order, without repeats."""
    return list(dict.fromkeys(w for a in attacks(report) for w in a.warnings))


def strongest_attack(report: Mapping[str, Any], target_fpr: float = HEADLINE_FPR) -> Attack | None:
    """The attack with the highest TPR at ``target_fpr`` (ties: higher AUC); ``None`` if none
    reports it with enough non-members to measure that FPR."""
    candidates = [a for a in attacks(report) if finite(a.tpr_at(target_fpr)) and a.measurable(target_fpr)]
    if not candidates:
        return None
    return max(candidates, key=lambda a: (a.tpr_at(target_fpr), a.auc if finite(a.auc) else -math.inf))


def accuracy(report: Mapping[str, Any], split: str) -> float | None:
    """``utility.train_accuracy`` or ``utility.test_accuracy`` (``split`` is "train" or "test")."""
    return number(section(report, "utility").get(f"{split}_accuracy"), f"utility.{split}_accuracy")


def decision(report: Mapping[str, Any]) -> str | None:
    return text(section(report, "verdict").get("decision"))


@dataclass(frozen=True)
class RunSummary:
    """The headline numbers of one run, as compared across runs."""

    name: str
    mode: str | None
    claimed_epsilon: float | None
    epsilon_lower_bound: float | None
    attack: str | None  # the strongest attack at HEADLINE_FPR
    tpr: float | None  # its TPR at HEADLINE_FPR
    tpr_interval: tuple[float, float] | None
    auc: float | None  # the same attack's AUC
    test_accuracy: float | None
    decision: str | None


def summarize(report: Mapping[str, Any], default_name: str = "run") -> RunSummary:
    report = check_report(report)
    strongest = strongest_attack(report)
    point = strongest.at(HEADLINE_FPR) if strongest else None
    return RunSummary(
        name=run_name(report, default_name),
        mode=text(report.get("mode")),
        claimed_epsilon=claimed_epsilon(report),
        epsilon_lower_bound=best_bound(report),
        attack=strongest.name if strongest else None,
        tpr=point.tpr if point else None,
        tpr_interval=point.interval if point else None,
        auc=strongest.auc if strongest else None,
        test_accuracy=accuracy(report, "test"),
        decision=decision(report),
    )


def summarize_all(reports: Sequence[Mapping[str, Any]]) -> list[RunSummary]:
    """One summary per report; runs without a name are called "run 1", "run 2", ..."""
    return [summarize(r, f"run {i + 1}") for i, r in enumerate(reports)]
