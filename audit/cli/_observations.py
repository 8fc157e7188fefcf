"""Shared by the subcommands that read observations: loading with one-line warnings,
and naming the LiRA layout directory behind each model index."""

from __future__ import annotations

import sys
import warnings


def load(path: str):
    """:func:`audit.observations.load_observations`, its warnings printed as one stderr line each."""
    from audit.observations import load_observations

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        observations = load_observations(path)
    for warning in caught:
        print(f"dpaudit: warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    return observations


def layout_names(observations) -> list[str] | None:
    """Directory of each model when the observations came from a LiRA layout, else None."""
    names = observations.metadata.get("lira_experiments")
    if isinstance(names, list) and len(names) == observations.n_models and all(isinstance(n, str) for n in names):
        return names
    return None


def describe_layout(names: list[str]) -> str:
    """``model k = experiment-k_N (k = 0..N-1)`` when the names say so, else each pair."""
    n = len(names)
    if all(name == f"experiment-{k}_{n}" for k, name in enumerate(names)):
        return f"model k = experiment-k_{n} (k = 0..{n - 1})"
    return ", ".join(f"model {k} = {name}" for k, name in enumerate(names))
