"""What sets compared runs apart: the config keys whose values differ among them.

A comparison names each run by its setting of those keys ("noise_multiplier=0.5",
"weight_decay=0.0005"), read from each report's ``config`` (the run's ``config.json``).
Keys that say where or how a run was executed, logged or gated, not what was trained and
attacked, are left out (:data:`IGNORED`).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from audit.report import fields as F
from audit.report import formatting as fmt

# Top-level keys and sections that do not change what a run measures.
IGNORED = ("name", "output_dir", "mlflow", "executor", "gate")
# The most differing keys a label spells out; runs that differ in more are named by their names.
MAX_KEYS = 3
# Short names of keys that defence comparisons vary most (others: their shortest unique suffix).
ALIASES = {"dp.noise_multiplier": "dp σ", "dp.max_grad_norm": "clip C", "dp.target_epsilon": "target ε"}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"dp.noise_multiplier": 1.0, ...}``: the leaves of a nested config, dotted."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def _comparable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Dotted config keys whose values are not the same in every config, in first-seen order.

    A key missing from some configs differs from one that is present; :data:`IGNORED` keys
    are left out.
    """
    flat = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f if k.split(".", 1)[0] not in IGNORED))
    return [k for k in keys if len({_comparable(f[k]) if k in f else None for f in flat}) > 1]


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest suffix that no other key in ``keys`` ends with."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if not any(other != key and (other == name or other.endswith("." + name)) for other in keys):
                break
        out[key] = name
    return out


def value_text(value: Any) -> str:
    """A config value as a label shows it: numbers to 3 significant figures, ``none`` for null."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return fmt.num(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


def setting_labels(reports: Sequence[Mapping[str, Any]], *, max_keys: int = MAX_KEYS) -> list[str]:
    """One label per report naming its values of the keys that differ among the reports.

    ``["noise_multiplier=0.5", "noise_multiplier=1"]`` for two runs that differ only in
    ``dp.noise_multiplier``. When the configs do not differ (or are missing), each run is
    named by its name ("run 1", ... when unnamed), and so is each run when more than
    ``max_keys`` keys differ (a partial list would mislead); when two labels would read the
    same, the run's name leads its label.
    """
    configs = [F.section(F.check_report(r), "config") for r in reports]
    names = [F.run_name(r, f"run {i + 1}") for i, r in enumerate(reports)]
    keys = differing_keys(configs)
    if not keys or len(keys) > max_keys:  # nothing differs, or too much for a label: the names say it
        return names
    short = short_names(keys) | {k: ALIASES[k] for k in keys if k in ALIASES}
    labels = [", ".join(f"{short[k]}={value_text(flatten(c).get(k))}" for k in keys) for c in configs]
    if len(set(labels)) < len(labels):  # runs alike in the keys spelled out
        labels = [f"{name} ({label})" for name, label in zip(names, labels)]
    return labels
