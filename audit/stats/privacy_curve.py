"""The privacy curve a DP-SGD claim states: its privacy profile and its trade-off curve.

DP-SGD with Poisson sampling at rate q, noise multiplier sigma (noise std sigma * C for
clipping norm C) and T steps claims more than one (epsilon, delta) point: it claims the
whole privacy profile delta(eps) of the T-fold composition of the Poisson-subsampled
Gaussian mechanism, under the add-or-remove-one neighbouring relation (the relation
Opacus' accountants analyse, and the one a canary that is inserted or left out moves
along). Equivalently it claims a trade-off curve f: no test of "canary out" against
"canary in" has a type II error below f(alpha) at type I error alpha (f-DP, Dong, Roth &
Su 2022, "Gaussian differential privacy", JRSS B).

* **Profile.** From Google's ``dp_accounting`` privacy-loss distributions (Doroshenko et
  al. 2022, "Connect the dots: tighter discrete approximations of privacy loss
  distributions"), built with ``pessimistic_estimate=True`` for both directions of the
  add-or-remove relation: every delta it returns is an upper bound on the mechanism's
  true delta(eps), discretisation included.
* **Trade-off curve.** A mechanism that is (eps, delta(eps))-DP for every eps >= 0 is
  f-DP for the upper envelope of the lines of those guarantees (Dong, Roth & Su 2022,
  Proposition 2.12 with Proposition 2.5's f_{eps,delta}):

      f(alpha) = max_i max(0, 1 - delta_i - e^{eps_i} alpha, e^{-eps_i} (1 - delta_i - alpha))

  over a grid of eps_i >= 0. Each line holds for the true mechanism (delta_i is an upper
  bound), so the envelope over a finite grid lies *below* the true curve: it is a weaker
  claim than the real one, which every correct implementation satisfies. Testing it can
  only make rejecting a correct claim rarer, never more frequent. The grid is fine where
  the profile bends (spacing :data:`EPS_STEP` up to eps = 20, geometric beyond), so the
  envelope is within about 1e-4 of the Gaussian mechanism's closed form (tested).

:meth:`PrivacyCurve.tradeoff` evaluates the envelope exactly at any alpha;
:meth:`PrivacyCurve.tradeoff_lower` reads it off a precomputed table, rounding alpha *up*
to the next table point (f is decreasing), which again gives a lower bound: the fast path
for the one-run test's recursion.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from audit.stats import _validate

# eps grid of the profile: fine up to EPS_FINE_MAX, then geometric up to where delta is negligible.
EPS_STEP = 0.01
EPS_FINE_MAX = 20.0
EPS_MAX = 200.0
DELTA_NEGLIGIBLE = 1e-300
# dp_accounting's discretisation of the privacy loss (its default is 1e-4 for DP-SGD-like
# compositions); pessimistic either way.
VALUE_DISCRETIZATION = 1e-4
# Points of the alpha table behind tradeoff_lower: geometric towards 0 and towards 1,
TABLE_POINTS = 16000  # and 4000 evenly spaced


@dataclasses.dataclass(frozen=True, eq=False)
class PrivacyCurve:
    """A privacy profile on a grid and the trade-off curve it implies.

    Attributes:
      epsilons: float[n], increasing, starting at 0.
      deltas: float[n], an upper bound on the mechanism's delta at each epsilon.
      label: what the curve is the claim of (for reports).
    """

    epsilons: np.ndarray
    deltas: np.ndarray
    label: str

    def __post_init__(self) -> None:
        eps, dlt = np.asarray(self.epsilons, float), np.asarray(self.deltas, float)
        if eps.ndim != 1 or eps.shape != dlt.shape or eps.size == 0:
            raise ValueError("epsilons and deltas: expected 1-d arrays of one length")
        if eps[0] != 0.0 or np.any(np.diff(eps) <= 0):
            raise ValueError("epsilons: expected an increasing grid starting at 0")
        if np.any(~np.isfinite(dlt)) or np.any((dlt < 0) | (dlt > 1)):
            raise ValueError("deltas: expected numbers in [0, 1]")
        object.__setattr__(self, "epsilons", eps)
        object.__setattr__(self, "deltas", dlt)

    def delta(self, epsilon: float) -> float:
        """An upper bound on delta(epsilon): the profile at the largest grid point <= epsilon
        (the profile is non-increasing)."""
        epsilon = max(0.0, float(epsilon))
        i = int(np.searchsorted(self.epsilons, epsilon, side="right")) - 1
        return float(self.deltas[i])

    def epsilon(self, delta: float) -> float:
        """The smallest grid epsilon whose delta is at most ``delta`` (inf if none): an upper
        bound on the claim's epsilon at ``delta``, within the grid spacing."""
        ok = np.flatnonzero(self.deltas <= delta)
        return float(self.epsilons[ok[0]]) if ok.size else math.inf

    def tradeoff(self, alpha) -> np.ndarray:
        """The envelope f(alpha) for alpha in [0, 1] (array in, array out); a lower bound on
        the mechanism's true trade-off curve."""
        a = np.clip(np.asarray(alpha, dtype=np.float64), 0.0, 1.0)
        flat = a.reshape(-1)
        out = np.zeros(flat.shape)
        e, d = np.exp(self.epsilons), self.deltas
        for start in range(0, flat.size, 512):  # bounded memory: 512 x grid at a time
            x = flat[start:start + 512, None]
            lines = np.maximum(1.0 - d - e * x, (1.0 - d - x) / e)
            out[start:start + 512] = np.maximum(lines.max(axis=1), 0.0)
        return out.reshape(a.shape)

    @functools.cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        tail = np.geomspace(1e-12, 0.5, TABLE_POINTS // 2)
        even = np.linspace(0.0, 1.0, 4001)
        alphas = np.unique(np.concatenate((tail, 1.0 - tail, even)))
        return alphas, self.tradeoff(alphas)

    def tradeoff_lower(self, alpha: float) -> float:
        """f at the table point just above ``alpha``: a lower bound on f(alpha), cheap."""
        alphas, values = self._table
        i = int(np.searchsorted(alphas, min(max(alpha, 0.0), 1.0), side="left"))
        return float(values[min(i, alphas.size - 1)])


def _grid(profile_max: float) -> np.ndarray:
    fine = np.arange(0.0, min(EPS_FINE_MAX, profile_max) + EPS_STEP / 2, EPS_STEP)
    if profile_max <= EPS_FINE_MAX:
        return fine
    coarse = np.geomspace(EPS_FINE_MAX, profile_max, 200)[1:]
    return np.concatenate((fine, coarse))


def _checked(noise_multiplier, sample_rate, steps) -> tuple[float, float, int]:
    sigma = _validate.check_finite("noise_multiplier", noise_multiplier)
    q = _validate.check_finite("sample_rate", sample_rate)
    if sigma <= 0:
        raise _validate.InputError(f"noise_multiplier={sigma!r}: expected a number > 0")
    if not 0 < q <= 1:
        raise _validate.InputError(f"sample_rate={q!r}: expected a number in (0, 1]")
    steps = _validate.check_count("steps", steps)
    if steps == 0:
        raise _validate.InputError("steps=0: expected at least one step")
    from audit.stats.accountant import check_accounting

    check_accounting(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5, accountant="rdp")
    return sigma, q, steps


def _composed(sigma: float, q: float, steps: int, *, pessimistic: bool, discretization: float):
    from dp_accounting.pld import privacy_loss_distribution as pld

    # dp_accounting's connect-the-dots construction is pessimistic only; the optimistic
    # estimate uses its privacy-buckets construction (asked for explicitly, without a warning).
    one = pld.from_gaussian_mechanism(
        standard_deviation=sigma, sensitivity=1.0, sampling_prob=q, pessimistic_estimate=pessimistic,
        value_discretization_interval=discretization, use_connect_dots=pessimistic,
    )
    return one.self_compose(steps)


@functools.lru_cache(maxsize=256)  # pure; the effective noise asks for the same (sigma, q, T, delta) per statistic
def dpsgd_epsilon_lower(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                        *, discretization: float = VALUE_DISCRETIZATION) -> float:
    """A lower bound on the epsilon at ``delta`` of DP-SGD(sigma, q, T): dp_accounting's
    *optimistic* privacy-loss distribution, whose deltas are lower bounds of the true
    profile. Used where a number must not exceed the truth (an effective epsilon)."""
    sigma, q, steps = _checked(noise_multiplier, sample_rate, steps)
    delta = _validate.check_delta(delta)
    return float(_composed(sigma, q, steps, pessimistic=False, discretization=discretization).get_epsilon_for_delta(delta))


@functools.lru_cache(maxsize=64)
def dpsgd_curve(noise_multiplier: float, sample_rate: float, steps: int, *,
                discretization: float = VALUE_DISCRETIZATION) -> PrivacyCurve:
    """The claimed curve of DP-SGD: T = ``steps`` Poisson-subsampled Gaussian steps at rate
    q = ``sample_rate`` and noise multiplier sigma = ``noise_multiplier`` (sensitivity 1,
    noise std sigma; the clipping norm C scales both and cancels), add-or-remove-one.

    Inputs are checked as the accountants check them
    (:func:`audit.stats.accountant.check_accounting` limits on sigma, q and T). A coarser
    ``discretization`` of the privacy loss is faster and still pessimistic (looser).
    """
    sigma, q, steps = _checked(noise_multiplier, sample_rate, steps)
    composed = _composed(sigma, q, steps, pessimistic=True, discretization=discretization)
    # Where the profile becomes negligible: beyond it the lines add nothing.
    top = EPS_FINE_MAX
    while top < EPS_MAX and composed.get_delta_for_epsilon(top) > DELTA_NEGLIGIBLE:
        top = min(2 * top, EPS_MAX)
    eps = _grid(top)
    deltas = np.clip(np.asarray(composed.get_delta_for_epsilon(eps), dtype=np.float64), 0.0, 1.0)
    # Non-increasing, as a profile is; where float noise breaks that, take the larger value
    # (the max over the eps above keeps every delta an upper bound).
    deltas = np.maximum.accumulate(deltas[::-1])[::-1]
    return PrivacyCurve(eps, deltas, label=f"DP-SGD sigma={sigma:.4g}, q={q:.4g}, T={steps}, add/remove")
