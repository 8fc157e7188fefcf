"""Name -> attack factory registry (the opacus ``accountants/registry.py`` pattern).

Attack families register themselves with :func:`register` when ``audit.attacks`` is
imported; callers use :func:`get_attack` or :func:`score_records`.
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
