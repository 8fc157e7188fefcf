"""Name -> attack factory registry (the opacus ``accountants/registry.py`` pattern).

Attack families register themselves with :func:`register` when ``audit.attacks`` is
imported; callers use :func:`get_attack`, :func:`score_records` (one target) or
:func:`score_targets` (many targets: ``float64[targets, records]``; an attack with its own
``score_targets`` method scores them from arrays, the others one target at a time).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from audit.errors import InputError
from audit.observations import Observations


class Attack(Protocol):
    """A membership-inference attack: scores a target model's records from its shadows."""

    name: str

    def score(self, observations: Observations, target: int) -> np.ndarray:
        """float64[records]; higher = more likely a member of model ``target``.

        Shadows are all models except ``target``; only their outputs and keep columns
        are used, never ``keep[target]``.
        """
        ...


_FACTORIES: dict[str, Callable[..., Attack]] = {}


def register(name: str) -> Callable[[Callable[..., Attack]], Callable[..., Attack]]:
    """Decorator: register an attack factory (usually a frozen dataclass) under ``name``."""

    def decorate(factory: Callable[..., Attack]) -> Callable[..., Attack]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"attack {name!r} registered twice")
        _FACTORIES[name] = factory
        return factory

    return decorate


def available_attacks() -> tuple[str, ...]:
    """Registered attack names, sorted."""
    import audit.attacks  # noqa: F401  (registers the families)

    return tuple(sorted(_FACTORIES))


def get_attack(name: str, **params: Any) -> Attack:
    """Build the attack registered as ``name`` with keyword ``params``."""
    names = available_attacks()
    if name not in _FACTORIES:
        raise InputError(f"unknown attack method {name!r}; expected one of {', '.join(names)}")
    try:
        return _FACTORIES[name](**params)
    except TypeError as err:
        raise InputError(f"attack {name!r}: bad parameters {sorted(params)} ({err})") from err


def score_records(name: str, observations: Observations, target: int, **params: Any) -> np.ndarray:
    """Scores (float64[records]) of attack ``name`` against model ``target``."""
    return get_attack(name, **params).score(observations, target)


def score_targets(attack: "Attack | str", observations: Observations, targets, records=None,
                  **params: Any) -> np.ndarray:
    """Scores float64[targets, records] of ``attack`` (an attack, or a name built with
    ``params``) against each model of ``targets``.

    ``records: bool[targets, records]`` (default: all) are the records each target's attack
    sees, as if the observations held only those (its references, its pooled estimates);
    the other scores are NaN. Attacks that define ``score_targets`` (LiRA, RMIA) score all
    targets from the same arrays; the others score the records of one target at a time.
    """
    from audit.attacks._common import records_seen
    from audit.observations import select_records

    if isinstance(attack, str):
        attack = get_attack(attack, **params)
    if hasattr(attack, "score_targets"):
        return np.asarray(attack.score_targets(observations, targets, records), dtype=np.float64)
    targets = np.atleast_1d(np.asarray(targets))
    seen = records_seen(observations, targets, records, method=attack.name)
    scores = np.full(seen.shape, np.nan)
    for row, target in enumerate(targets.tolist()):
        if records is None:
            scores[row] = attack.score(observations, target)
        else:
            index = np.flatnonzero(seen[row])
            scores[row, index] = attack.score(select_records(observations, index), target)
    return scores
