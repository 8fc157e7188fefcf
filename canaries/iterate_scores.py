"""Scores for a Dirac gradient canary from its per-step readings (white-box, all iterates).

At step t of DP-SGD the canary's coordinate of the noisy summed gradient (before any
division by the batch size) reads

    x_t = b_t * C + N(0, sigma^2 C^2),   b_t ~ Bernoulli(q) if the canary is included,
                                          b_t = 0           if it is not,

where C is the clipping norm, sigma the noise multiplier and q the Poisson sampling rate
(the canary is sampled like every real record). Readings are independent across steps.

* :func:`all_iterates`: ``sum_t x_t`` (Nasr et al. 2023, "Tight auditing of differentially
  private machine learning", the all-iterates white-box statistic).
* :func:`spread`: the standard deviation of a canary's readings over the steps. An included
  canary adds the Bernoulli spread of its presences (variance ``q (1 - q) C^2``) to the
  noise's; noise that is correlated over the steps (a noise vector reused at every step)
  leaves a never-inserted canary almost no spread at all, which the per-step statistics
  below, built on independent steps, cannot see.
* :func:`likelihood_ratio`: the log-likelihood ratio of "included" against "not included".
  Per step the density under "included" is the mixture q N(C, s^2) + (1 - q) N(0, s^2)
  with s = sigma C, and under "not included" N(0, s^2), so the ratio is

      (1 - q) + q exp(-(x - C)^2 / (2 s^2) + x^2 / (2 s^2))
    = (1 - q) + q exp((2 x C - C^2) / (2 sigma^2 C^2)),

  and by independence the statistic is

      LLR = sum_t log(1 - q + q exp((2 x_t C - C^2) / (2 sigma^2 C^2))),

  computed as ``logaddexp(log(1 - q), log(q) + (2 x_t C - C^2) / (2 sigma^2 C^2))`` so
  large readings do not overflow. By the Neyman-Pearson lemma it is the most powerful
  score for telling the two hypotheses apart from the readings.

Scores are "higher means more likely a member" (included).
"""

from __future__ import annotations

import numpy as np

from audit.errors import InputError


def _check_readings(readings) -> np.ndarray:
    readings = np.asarray(readings, dtype=np.float64)
    if readings.ndim != 2:
        raise InputError(f"readings with shape {readings.shape}: expected float[steps, canaries]")
    if np.isnan(readings).any():
        raise InputError("readings contain NaN: expected finite numbers")
    return readings


def all_iterates(readings) -> np.ndarray:
    """Sum of the canary's readings over all steps (Nasr et al. 2023).

    Args:
      readings: float[steps, canaries].

    Returns:
      float[canaries].
    """
    return _check_readings(readings).sum(axis=0)


def spread(readings) -> np.ndarray:
    """Standard deviation of each canary's readings over the steps (``ddof = 0``).

    Args:
      readings: float[steps, canaries].

    Returns:
      float[canaries].
    """
    return _check_readings(readings).std(axis=0)


def likelihood_ratio(readings, *, sample_rate: float, noise_multiplier: float, max_grad_norm: float) -> np.ndarray:
    """Log-likelihood ratio of "included with per-step rate q" against "never present".

    Args:
      readings: float[steps, canaries], on the unnormalised scale (sum of clipped
        gradients plus noise, before division by the batch size).
      sample_rate: q in (0, 1].
      noise_multiplier: sigma >= 0. At sigma = 0 the per-step term is its limit:
        +inf if x_t > C/2, log(1 - q) if x_t < C/2, 0 at x_t = C/2.
      max_grad_norm: C > 0.

    Returns:
      float[canaries]: ``sum_t log(1 - q + q exp((2 x_t C - C^2) / (2 sigma^2 C^2)))``.
    """
    x = _check_readings(readings)
    q, sigma, c = float(sample_rate), float(noise_multiplier), float(max_grad_norm)
    if not 0.0 < q <= 1.0:
        raise InputError(f"sample_rate={sample_rate!r}: expected a probability in (0, 1]")
    if not sigma >= 0.0 or not np.isfinite(sigma):
        raise InputError(f"noise_multiplier={noise_multiplier!r}: expected a finite number >= 0")
    if not c > 0.0 or not np.isfinite(c):
        raise InputError(f"max_grad_norm={max_grad_norm!r}: expected a finite number > 0")
    log_absent = np.log1p(-q) if q < 1.0 else -np.inf
    if sigma == 0.0:
        per_step = np.where(x > c / 2, np.inf, np.where(x < c / 2, log_absent, 0.0))
    else:
        exponent = (2.0 * x * c - c * c) / (2.0 * sigma * sigma * c * c)
        per_step = np.logaddexp(log_absent, np.log(q) + exponent)
    return per_step.sum(axis=0)


def noise_level_statistics(readings, *, sample_rate: float, noise_multiplier: float,
                           max_grad_norm: float) -> dict[str, np.ndarray]:
    """The one-run white-box statistics read against the claimed DP-SGD (higher = more likely
    included): ``likelihood-ratio`` (:func:`likelihood_ratio` at the claimed sigma),
    ``likelihood-ratio-half-sigma`` (the same at sigma / 2: more power against too little
    noise, the commonest noise bug, since a reading near C then counts four times as much)
    and ``spread`` (:func:`spread`: noise correlated across steps). Each is a function of the
    readings alone, so every bound and curve test holds for it as for any score.

    Returns:
      {name: float[canaries]}.
    """
    kw = dict(sample_rate=sample_rate, max_grad_norm=max_grad_norm)
    return {
        "likelihood-ratio": likelihood_ratio(readings, noise_multiplier=noise_multiplier, **kw),
        "likelihood-ratio-half-sigma": likelihood_ratio(readings, noise_multiplier=noise_multiplier / 2, **kw),
        "spread": spread(readings),
    }
