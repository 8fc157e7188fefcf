"""The idealised white-box one-run audit of DP-SGD, simulated (no model in the way).

m Dirac gradient canaries (Steinke, Nasr & Jagielski 2023, Section 7; Nasr et al. 2023),
each included independently with probability 1/2. At each of T steps an included canary
is present with probability q (Poisson sampling), and its coordinate of the noisy summed
gradient reads ``x_t = b_t * C + N(0, sigma^2 C^2)`` (``b_t = 0`` for a canary left out).
Each canary is scored by the log-likelihood ratio of its readings
(:func:`canaries.iterate_scores.likelihood_ratio`) and by their sum
(:func:`canaries.iterate_scores.all_iterates`). Used by ``dpaudit simulate`` and by
``experiments.yardstick``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from audit.errors import InputError
from canaries.iterate_scores import all_iterates, likelihood_ratio


@dataclasses.dataclass(frozen=True)
class SimulatedRun:
    """One simulated one-run audit.

    Attributes:
      members: bool[canaries]; which canaries were included (Bernoulli(1/2)).
      llr: float[canaries]; log-likelihood ratio of the T readings (higher = member).
      total: float[canaries]; sum of the T readings (the all-iterates statistic).
      readings: float[steps, canaries]; the readings themselves.
    """

    members: np.ndarray
    llr: np.ndarray
    total: np.ndarray
    readings: np.ndarray


def simulate(
    *,
    n_canaries: int,
    steps: int,
    sample_rate: float,
    noise_multiplier: float,
    rng: np.random.Generator,
    max_grad_norm: float = 1.0,
) -> SimulatedRun:
    """Simulate m Dirac canaries through T steps of the Gaussian mechanism of DP-SGD.

    Vectorised over canaries and steps (memory: 8 * steps * canaries bytes for the readings).

    Args:
      n_canaries: m >= 1.
      steps: T >= 1.
      sample_rate: q in (0, 1], per-step presence probability of an included canary.
      noise_multiplier: sigma > 0 (the noise std is sigma * C).
      rng: source of all randomness.
      max_grad_norm: C > 0.
    """
    for name, value in (("n_canaries", n_canaries), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name}={value!r}: expected an integer >= 1")
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng={rng!r}: expected a numpy.random.Generator")
    if not 0.0 < sample_rate <= 1.0:
        raise InputError(f"sample_rate={sample_rate!r}: expected a probability in (0, 1]")
    if not noise_multiplier > 0.0:
        raise InputError(f"noise_multiplier={noise_multiplier!r}: expected a number > 0")
    members = rng.random(n_canaries) < 0.5
    present = (rng.random((steps, n_canaries)) < sample_rate) & members[None, :]
    readings = present * max_grad_norm + rng.normal(0.0, noise_multiplier * max_grad_norm, (steps, n_canaries))
    llr = likelihood_ratio(readings, sample_rate=sample_rate, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm)
    return SimulatedRun(members=members, llr=llr, total=all_iterates(readings), readings=readings)
