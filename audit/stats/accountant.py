"""The epsilon an implementation claims, from Opacus' accountants (never a hand-written RDP).

Opacus is imported inside the functions so that ``import audit.stats`` stays light.

:func:`check_accounting` refuses, without running the accountant, the inputs Opacus cannot
account for (it would raise, hang or exhaust memory); :func:`claimed_epsilon` calls it first.
The limits below were measured with Opacus 1.6.0, scipy 1.17, numpy 2.4 (x86-64, 2 CPUs),
each probe a fresh process under ``prlimit --as=<bytes>`` and ``timeout``; peak memory with
``/usr/bin/time -v`` (Maximum resident set size), e.g.::

    /usr/bin/time -v python -c "from opacus.accountants import PRVAccountant as A; a = A();
        a.history = [(1.0, 0.0256, 83084)]; print(a.get_epsilon(delta=1e-5))"

Values the accountants do return, documented here once:
  * ``inf``: RDP and PRV may return it (e.g. RDP once ``sigma`` is tiny enough that the RDP
    overflows; PRV at sample rate 1 and many steps), and GDP returns it when its epsilon
    exceeds 500, the largest value Opacus' GDP solver searches. An infinite claim is a
    (vacuous) upper bound: no audit can find a violation of it.
  * ``0``: GDP where delta is already met at epsilon = 0 (huge ``sigma``), and any accountant
    whose epsilon came out negative (near delta = 1/2): (eps < 0, delta)-DP implies (0, delta)-DP.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings

import numpy as np

from audit.stats import _validate
from audit.stats.result import EpsilonResult

ACCOUNTANTS = ("prv", "rdp", "gdp")

# Noise multiplier range for every accountant. Opacus' RDP (which PRV also runs to size its
# grid) squares sigma: above ~1.3e154 ``sigma**2`` overflows (OverflowError at 1e155 and
# 1e300); below ~3e-153 ``(i*i - i) / (2 * sigma**2)`` overflows and the fractional-order
# series never ends (1e-160: no answer within 20 s for any sample rate, killed; 1e-300:
# ZeroDivisionError). ``noise_multiplier=inf`` loops forever the same way. The range keeps
# 50 orders of magnitude from both ends; epsilon reaches its limits long before them
# (rdp at sigma = 1e6 and 1e100 agree to 10 digits).
NOISE_MULTIPLIER_MIN = 1e-100
NOISE_MULTIPLIER_MAX = 1e100

# RDP and GDP cost does not grow with steps (RDP multiplies, GDP takes a square root):
# 10^18 steps took 0.04 s. GDP's ``np.sqrt`` fails on Python ints beyond int64 (TypeError at
# 10^300), and 10^18 is far beyond any training run. PRV has a tighter, input-dependent
# limit: PRV_GRID_POINTS_MAX.
STEPS_MAX = 10**18

# delta >= 1/2 makes (eps, delta)-DP vacuous (publishing each record with probability 1/2
# is (0, 1/2)-DP). Near 1 the accountants break (PRV at delta = 0.999999: "Cannot compute
# epsilon"); up to 1/2 PRV's search cannot fail: its grid reaches t = -3 or below, where
# the privacy curve is at least 1 - e^-3 = 0.95.
DELTA_MAX = 0.5

# Opacus' defaults for PRVAccountant.get_epsilon, passed explicitly so that the grid we size
# is the grid it builds.
PRV_EPS_ERROR = 0.01
PRV_DELTA_ERROR_SHARE = 1e-3  # delta_error = delta / 1000

# Largest PRV grid (Opacus' discretisation of the privacy loss; its size grows like
# sqrt(steps) times the RDP epsilon, so tiny sigma or many steps blow it up). Peak resident
# memory grows ~65 bytes per point, or ~165 where the FFT length has large prime factors
# (above a ~0.37 GB baseline of torch + opacus): at 1.1e7 / 1.6e7 / 2.5e7 points 1.07 /
# 1.41 / 1.98 GB, at 1.5e7 / 4.1e7 / 5.9e7 points 2.84 / 7.07 / 9.96 GB. Seven settings
# sized to just under 2e7 points peaked at 1.65 GB (five) and 3.65 GB (two) and took 7 to
# 35 s. Beyond it: 10^6 steps at sigma = 1, q = 0.0256 (4.8e8 points) needs over 4 GB,
# 10^7 steps grew past 23 GB. At sigma = 1, q = 0.0256, delta = 1e-5 the limit is 83,084
# steps; with sigma huge (epsilon ~ 0) about 7.6e7 steps.
PRV_GRID_POINTS_MAX = 20_000_000
PRV_GRID_BYTES_PER_POINT = 165  # worst measured, for the message

GDP_EPS_SEARCHED = 500.0  # Opacus' GDP solver brackets epsilon in [0, 500]
GDP_WARNING = "Opacus: GDP accounting is experimental and can underestimate epsilon"


@contextlib.contextmanager
def _quiet():
    """Opacus warns (GDP is experimental; RDP's best order is at the end of its list) and
    numpy warns on overflow to inf in GDP's mu; none of it belongs on a CLI's stderr."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


@functools.lru_cache(maxsize=64)
def prv_grid_points(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Points of the grid Opacus' PRV accountant would discretise onto for these inputs.

    Opacus' own sizing (``PRVAccountant._get_domain`` with ``get_epsilon``'s error
    defaults): an RDP bound at delta_error / 4, well under a second, up to ~8 s at sample
    rate 1/2 with a huge sigma (Opacus' fractional-order RDP series converges slowly there).
    Nothing is discretised or convolved. ``inf`` where the size is beyond float range
    (Opacus' sizing then overflows).
    """
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    try:
        with _quiet():
            domain = PRVAccountant()._get_domain(
                prvs=[PoissonSubsampledGaussianPRV(sample_rate, noise_multiplier)],
                num_self_compositions=[steps],
                eps_error=PRV_EPS_ERROR,
                delta_error=delta * PRV_DELTA_ERROR_SHARE,
            )
    except (OverflowError, ValueError, ZeroDivisionError):  # inf or NaN sizes
        return math.inf
    return float(domain.size)


def _check_prv(sigma: float, q: float, steps: int, delta: float) -> float:
    points = prv_grid_points(sigma, q, steps, delta)
    # Opacus refuses when longdouble rounding over the grid reaches delta - delta_error.
    ulp = float(np.finfo(np.longdouble).eps)
    delta_cap = delta * (1.0 - PRV_DELTA_ERROR_SHARE) / ulp
    if points > delta_cap and delta_cap < PRV_GRID_POINTS_MAX:
        floor = "a larger delta"
        if math.isfinite(points):
            floor = f"delta >= {ulp * points / (1.0 - PRV_DELTA_ERROR_SHARE):.2g}"
        raise _validate.InputError(
            f"delta={delta!r}: too small for Opacus' prv accountant, whose grid of {points:.3g} points "
            f"needs {floor} (floating-point error would dominate); expected a larger delta, or use the rdp accountant"
        )
    if points > PRV_GRID_POINTS_MAX:
        gigabytes = points * PRV_GRID_BYTES_PER_POINT / 1e9
        raise _validate.InputError(
            f"noise_multiplier={sigma!r}, sample_rate={q!r}, steps={steps}, delta={delta!r}: Opacus' prv accountant "
            f"would need a grid of {points:.3g} points (about {gigabytes:.3g} GB); expected at most "
            f"{PRV_GRID_POINTS_MAX:.2g} points (fewer steps or a larger noise multiplier), or use the rdp accountant"
        )
    return points


def _checked(noise_multiplier, sample_rate, steps, delta, accountant) -> tuple[float, float, int, float]:
    if accountant not in ACCOUNTANTS:
        raise _validate.InputError(f"accountant={accountant!r}: expected one of {', '.join(ACCOUNTANTS)}")
    sigma = _validate.check_finite("noise_multiplier", noise_multiplier)
    if sigma <= 0:
        raise _validate.InputError(f"noise_multiplier={sigma!r}: expected a number > 0")
    if not NOISE_MULTIPLIER_MIN <= sigma <= NOISE_MULTIPLIER_MAX:
        raise _validate.InputError(
            f"noise_multiplier={sigma!r}: expected a number in [{NOISE_MULTIPLIER_MIN:g}, {NOISE_MULTIPLIER_MAX:g}] "
            "(outside it Opacus' accountants overflow or never finish)"
        )
    q = _validate.check_finite("sample_rate", sample_rate)
    if not 0 < q <= 1:
        raise _validate.InputError(f"sample_rate={q!r}: expected a number in (0, 1]")
    steps = _validate.check_count("steps", steps)
    if steps == 0:
        raise _validate.InputError("steps=0: expected at least one step")
    if steps > STEPS_MAX:
        raise _validate.InputError(f"steps={steps}: expected at most {STEPS_MAX:.0e} steps")
    delta = _validate.check_delta(delta)
    if not 0 < delta <= DELTA_MAX:
        raise _validate.InputError(f"delta={delta!r}: expected a number in (0, {DELTA_MAX:g}] for an accountant")
    if accountant == "prv":
        _check_prv(sigma, q, steps, delta)
    return sigma, q, steps, delta


def check_accounting(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv"
) -> None:
    """Raise ``InputError`` for inputs Opacus' ``accountant`` cannot account for, without
    running it (so a config can be refused before any training starts).

    Refused: an unknown accountant; a noise multiplier that is not finite or outside
    [NOISE_MULTIPLIER_MIN, NOISE_MULTIPLIER_MAX]; a sample rate outside (0, 1]; steps
    outside [1, STEPS_MAX]; delta outside (0, DELTA_MAX]; for ``prv``, inputs whose grid
    exceeds PRV_GRID_POINTS_MAX points (memory) or is too fine for delta (floating point).
    The PRV check sizes the grid by Opacus' own rule (an RDP bound; see
    :func:`prv_grid_points`), never the PRV computation itself.
    """
    _checked(noise_multiplier, sample_rate, steps, delta, accountant)


def _gdp_epsilon(acct, sigma: float, q: float, steps: int, delta: float) -> tuple[float, str | None]:
    """Opacus' GDP epsilon; where its solver finds no root in [0, 500], decided by Opacus'
    own privacy curve ``delta_eps_mu`` at the ends: 0 if delta is met at epsilon = 0, inf
    if it is not met at 500."""
    from opacus.accountants.analysis import gdp

    try:
        mu = float(gdp.compute_mu_poisson(steps=steps, noise_multiplier=sigma, sample_rate=q))
    except OverflowError:  # sigma ** -2 beyond float range
        mu = math.inf
    if mu == 0.0:  # sigma so large that exp(sigma^-2) - 1 rounds to 0
        return 0.0, "mu = 0 (GDP): delta is met at epsilon = 0"
    if math.isfinite(mu):
        try:
            return float(acct.get_epsilon(delta=delta)), None
        except ValueError:  # "f(a) and f(b) must have different signs"
            if gdp.delta_eps_mu(eps=0.0, mu=mu) <= delta:
                return 0.0, "delta is met at epsilon = 0 (GDP)"
            if not gdp.delta_eps_mu(eps=GDP_EPS_SEARCHED, mu=mu) > delta:
                raise
    return math.inf, (
        f"epsilon above {GDP_EPS_SEARCHED:g}, the largest value Opacus' GDP solver searches (mu = {mu:.3g})"
    )


def claimed_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv"
) -> EpsilonResult:
    """epsilon at ``delta`` for DP-SGD with Poisson sampling, by Opacus' named accountant.

    Inputs are checked first by :func:`check_accounting` (``InputError``). The value may
    be ``inf`` or ``0`` (see the module docstring); ``details["note"]`` says why.
    """
    check_accounting(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta, accountant=accountant
    )
    sigma, q, steps, delta = float(noise_multiplier), float(sample_rate), int(steps), float(delta)  # checked

    from opacus.accountants import create_accountant

    details, note = {}, None
    with _quiet():
        acct = create_accountant(mechanism=accountant)
        acct.history = [(sigma, q, steps)]
        if accountant == "gdp":
            eps, note = _gdp_epsilon(acct, sigma, q, steps, delta)
        elif accountant == "prv":
            details["prv_grid_points"] = int(prv_grid_points(sigma, q, steps, delta))  # cached by the check
            eps = float(
                acct.get_epsilon(delta=delta, eps_error=PRV_EPS_ERROR, delta_error=delta * PRV_DELTA_ERROR_SHARE)
            )
        else:
            eps = float(acct.get_epsilon(delta=delta))
    if eps < 0:  # (eps < 0, delta)-DP implies (0, delta)-DP
        note = f"Opacus gave epsilon = {eps:.3g} < 0; (0, delta)-DP follows"
        eps = 0.0
    return EpsilonResult(
        value=eps,
        kind="bound",
        method=f"opacus-{accountant}",
        confidence=1.0,
        delta=delta,
        inputs={"noise_multiplier": sigma, "sample_rate": q, "steps": steps},
        details={
            "role": "claimed upper bound on epsilon (accountant), not an audit result",
            **details,
            **({"note": note} if note else {}),
            **({"warning": GDP_WARNING} if accountant == "gdp" else {}),
        },
    )


def noise_multiplier_for(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "prv"
) -> float:
    """sigma such that Opacus' ``accountant`` gives ``target_epsilon`` at ``delta`` for
    ``steps`` Poisson-subsampled Gaussian steps at ``sample_rate``: Opacus' own search
    (``opacus.accountants.utils.get_noise_multiplier``, as ``make_private_with_epsilon``
    runs it), without its warnings on stderr. Opacus' errors (an unreachable target)
    propagate unchanged."""
    from opacus.accountants.utils import get_noise_multiplier

    with _quiet():
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps,
                accountant=accountant,
            )
        )
