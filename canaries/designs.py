"""Inclusion designs: which records each of K models is trained on.

Every design is a pure function ``(n_models, n_records, rng) -> keep`` with
``keep: bool[models, records]`` (``keep[k, j]`` is True when record j is IN model k's
training set). Randomness comes only from the ``np.random.Generator`` passed in, so
a design is reproduced exactly from its seed.

* :func:`one_run` - Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1)
  training run", Section 3: each canary is included independently with probability
  1/2 (for K models, K independent draws). Theorem 5.2 needs exactly this independence.
* :func:`multi_run` - the classic in/out audit (Jagielski, Ullman & Oprea 2020; Nasr et
  al. 2021): the canary, or the whole canary set as one unit, is IN for exactly
  ``n_models // 2`` of the models, chosen by a uniform random permutation, and OUT for the
  rest. All columns of ``keep`` are identical.
* :func:`lira_balanced` - Carlini et al. 2022, "Membership inference attacks from first
  principles", reference code: every record is IN for exactly ``n_models // 2`` models,
  chosen independently per record.
* :func:`poisson` - each (model, record) pair IN independently with probability ``rate``.

:data:`DESIGNS` maps a design's name (as written in a config) to its function.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from audit.errors import InputError

Design = Callable[[int, int, np.random.Generator], np.ndarray]


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng={rng!r}: expected a numpy.random.Generator (np.random.default_rng(seed))")
    return rng


def poisson(n_models: int, n_records: int, rng: np.random.Generator, *, rate: float) -> np.ndarray:
    """Each record IN each model independently with probability ``rate``.

    Returns:
      keep: bool[models, records].
    """
    n_models = _check_count("n_models", n_models, 1)
    n_records = _check_count("n_records", n_records, 0)
    rng = _check_rng(rng)
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating, np.integer)) or not 0.0 <= rate <= 1.0:
        raise InputError(f"rate={rate!r}: expected a probability in [0, 1]")
    return rng.random((n_models, n_records)) < float(rate)


def one_run(n_models: int, n_records: int, rng: np.random.Generator) -> np.ndarray:
    """Independent Bernoulli(1/2) inclusion (Steinke, Nasr & Jagielski 2023, Algorithm 1).

    With ``n_models = 1`` this is the one-run audit's design; with K models each model is
    an independent one-run draw.

    Returns:
      keep: bool[models, records].
    """
    return poisson(n_models, n_records, rng, rate=0.5)


def multi_run(n_models: int, n_records: int, rng: np.random.Generator) -> np.ndarray:
    """Classic in/out design: the canary set is IN for exactly ``n_models // 2`` models.

    The canaries are inserted together (one unit, as in Jagielski, Ullman & Oprea 2020,
    where the poison is k copies of one point), so every column of ``keep`` is the same.
    Which models get the canaries is a uniform random permutation; with an odd number of
    models the extra model is OUT.

    Returns:
      keep: bool[models, records].
    """
    n_models = _check_count("n_models", n_models, 2)
    n_records = _check_count("n_records", n_records, 0)
    rng = _check_rng(rng)
    in_model = rng.permutation(n_models) < n_models // 2
    return np.repeat(in_model[:, None], n_records, axis=1)


def lira_balanced(n_models: int, n_records: int, rng: np.random.Generator) -> np.ndarray:
    """Every record IN for exactly ``n_models // 2`` models (Carlini et al. 2022, reference code).

    Same construction as the LiRA reference implementation::

        keep = rng.uniform(0, 1, size=(M, N)); order = keep.argsort(0); keep = order < M // 2

    (per record, the models are ranked by an independent uniform draw). Columns are
    independent of each other; within a column the IN set is a uniform random subset of
    size ``n_models // 2``.

    Returns:
      keep: bool[models, records].
    """
    n_models = _check_count("n_models", n_models, 2)
    n_records = _check_count("n_records", n_records, 0)
    rng = _check_rng(rng)
    draws = rng.uniform(0.0, 1.0, size=(n_models, n_records))
    order = draws.argsort(axis=0)
    return order < n_models // 2


DESIGNS: dict[str, Design] = {
    "one-run": one_run,
    "multi-run": multi_run,
    "lira-balanced": lira_balanced,
}


def design(name: str) -> Design:
    """The design registered under ``name`` (``poisson`` needs its rate, so call it directly)."""
    try:
        return DESIGNS[name]
    except KeyError:
        raise InputError(f"design={name!r}: expected one of {sorted(DESIGNS)}") from None
