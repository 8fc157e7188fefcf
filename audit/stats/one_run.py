"""One-run audits: Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1) training run".

m canaries are each included independently with probability 1/2 in one training run.
The auditor guesses membership for at most r of them (abstaining on the rest) and v
guesses are correct. For an (eps, delta)-DP mechanism, with q = e^eps / (1 + e^eps),

    beta  = P[Bin(r, q) >= v]
    alpha = max_{1 <= i <= v} (1/i) * P[v - i <= Bin(r, q) < v]
    p     = min(1, beta + 2 * m * delta * alpha)                (Theorem 5.2)

is a p-value for the claim "the mechanism is (eps, delta)-DP". The epsilon lower bound at
``confidence`` is the smallest eps whose p-value exceeds ``1 - confidence`` (for a p-value
increasing in eps this is "the largest eps that is rejected"; taking the first crossing
keeps the bound valid even where the delta term makes p non-monotone).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import optimize, special, stats

from audit.stats import _validate
from audit.stats.guesses import Guess, GuessSearch, GuessStrategy, describe, guess_outcomes, plan
from audit.stats.result import GUARANTEED, EpsilonResult

# No audit with fewer than 10^80 canaries can show more than this.
_EPS_MAX = 200.0
_SCAN_POINTS = 64


# The one-run bound's cost grows with the correct-guess count v (Theorem 5.2's alpha term is
# a maximum over i = 1..v); beyond this many canaries the CLI refuses rather than run for hours.
MAX_CANARIES = 1_000_000
# i = 1..v is processed in chunks of this many, so memory stays bounded (len(q) x chunk doubles).
_WINDOW_CHUNK = 1 << 16


def _binom_window(v: int, r: int, q: np.ndarray, i: np.ndarray | None = None) -> np.ndarray:
    """P[v - i <= Bin(r, q) < v] for i = 1..v (or the given ``i``), shape ``[len(q), len(i)]``,
    accurately: differences of whichever tail (cdf or sf) is smaller, to avoid cancellation.
    """
    q = np.asarray(q, dtype=np.float64)[:, None]
    i = np.arange(1, v + 1) if i is None else i
    lower = v - i[None, :] - 1  # v - i - 1
    cdf_top = stats.binom.cdf(v - 1, r, q)
    use_cdf = cdf_top <= 0.5
    by_cdf = cdf_top - stats.binom.cdf(lower, r, q)
    by_sf = stats.binom.sf(lower, r, q) - stats.binom.sf(v - 1, r, q)
    return np.clip(np.where(use_cdf, by_cdf, by_sf), 0.0, 1.0)


def _alpha(v: int, r: int, q: np.ndarray) -> np.ndarray:
    """max over i = 1..v of P[v - i <= Bin(r, q) < v] / i, per q, in bounded memory."""
    best = np.zeros(len(q))
    for start in range(1, v + 1, _WINDOW_CHUNK):
        i = np.arange(start, min(v, start + _WINDOW_CHUNK - 1) + 1)
        best = np.maximum(best, np.max(_binom_window(v, r, q, i) / i[None, :], axis=1))
    return best


def one_run_p_values(m: int, r: int, v: int, eps, delta: float) -> np.ndarray:
    """Theorem 5.2 p-values at each eps in ``eps`` (vectorised over eps)."""
    eps = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    if v <= 0:
        return np.ones_like(eps)
    q = special.expit(eps)
    beta = stats.binom.sf(v - 1, r, q)
    if delta == 0.0:
        return np.minimum(1.0, beta)
    return np.minimum(1.0, beta + 2.0 * m * delta * _alpha(v, r, q))


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Theorem 5.2 p-value of the claim "(eps, delta)-DP" after v correct of r guesses among m canaries."""
    return float(one_run_p_values(m, r, v, [eps], delta)[0])


def _first_crossing(m: int, r: int, v: int, delta: float, significance: float, start: float = 0.0) -> float:
    """Smallest eps >= start with p(eps) > significance (``start`` if p(start) already exceeds it)."""

    def p(e: float) -> float:
        return one_run_p_value(m, r, v, e, delta)

    if p(start) > significance:
        return start
    lo, hi = start, max(1.0, 2.0 * start)
    while p(hi) <= significance:
        lo, hi = hi, 2.0 * hi
        if hi > _EPS_MAX:
            return _EPS_MAX
    if delta > 0:
        # The delta term can make p dip; move to the first grid point above significance.
        grid = np.linspace(lo, hi, _SCAN_POINTS + 1)
        above = np.flatnonzero(one_run_p_values(m, r, v, grid, delta) > significance)
        hi = float(grid[above[0]])
        lo = float(grid[above[0] - 1]) if above[0] > 0 else lo
    return float(optimize.brentq(lambda e: p(e) - significance, lo, hi, xtol=1e-10, rtol=1e-12))


def _check_guess_counts(m: int, r: int, v: int) -> tuple[int, int, int]:
    m = _validate.check_count("canaries", m)
    r = _validate.check_count("guesses", r)
    v = _validate.check_count("correct", v)
    if m == 0:
        raise _validate.InputError("canaries=0: expected at least one canary")
    if m > MAX_CANARIES:
        raise _validate.InputError(f"canaries={m}: expected at most {MAX_CANARIES:,} (the bound's cost grows with "
                                   "the number of correct guesses)")
    if r > m:
        raise _validate.InputError(f"guesses={r} > canaries={m}: expected at most one guess per canary")
    if v > r:
        raise _validate.InputError(f"correct={v} > guesses={r}: expected correct <= guesses")
    return m, r, v


def epsilon_one_run_value(m: int, r: int, v: int, *, delta: float, significance: float) -> float:
    """The bare number behind :func:`epsilon_one_run` (no validation)."""
    if v == 0 or one_run_p_value(m, r, v, 0.0, 0.0) > significance:
        return 0.0  # even delta = 0 at eps = 0 is not rejected
    return _first_crossing(m, r, v, delta, significance)


@functools.lru_cache(maxsize=256)
def design_power(m: int, guesses: tuple[int, ...], significances: tuple[float, ...], delta: float) -> float:
    """The largest bound a design can show: every guess right, best member of the family."""
    return max(
        epsilon_one_run_value(m, r, r, delta=delta, significance=sig) for r, sig in zip(guesses, significances)
    )


def epsilon_one_run(m: int, r: int, v: int, *, delta: float, confidence: float = 0.95) -> EpsilonResult:
    """One-run epsilon lower bound from counts (Steinke, Nasr & Jagielski 2023, Theorem 5.2).

    Args:
      m: number of canaries, each included independently with probability 1/2.
      r: number of guesses, fixed before looking at the run (at most m).
      v: number of correct guesses (at most r).
      delta: delta of the claim under test, in [0, 1).
      confidence: probability that the bound holds.
    """
    m, r, v = _check_guess_counts(m, r, v)
    delta = _validate.check_delta(delta)
    confidence = _validate.check_confidence(confidence)
    value = epsilon_one_run_value(m, r, v, delta=delta, significance=1.0 - confidence)
    return EpsilonResult(
        value=value,
        kind=GUARANTEED,
        method="one-run",
        confidence=confidence,
        delta=delta,
        inputs={"canaries": m, "guesses": r, "correct": v},
        details={"p_value_at_bound": one_run_p_value(m, r, v, value, delta) if value > 0 else None},
    )


@functools.lru_cache(maxsize=256)
def guess_plan(strategy: GuessStrategy, m: int, delta: float, alpha: float) -> tuple[tuple[Guess, float], ...]:
    """The strategy's family for m canaries, each member with its significance level
    (:func:`audit.stats.guesses.plan`): with ``strategy.prune``, members that could not
    reject eps = 0 even with every guess right (at large m and delta > 0 the ``2 m delta``
    term rules out small guess counts) are dropped. Depends on (m, delta, alpha) only."""
    return plan(strategy, m, alpha, lambda g, level: one_run_p_value(m, g.r, g.r, 0.0, delta) <= level)


def epsilon_one_run_from_scores(
    scores,
    members,
    *,
    delta: float,
    confidence: float = 0.95,
    strategy: GuessStrategy | None = None,
) -> EpsilonResult:
    """One-run epsilon lower bound from raw canary scores, with a valid abstention search.

    Args:
      scores: float[m]; higher means "more likely a member".
      members: bool[m]; which canaries were included (each independently with probability
        1/2). A member count that design could not plausibly give (all, none, or two-sided
        binomial p < 1e-6) raises ``InputError``: see :func:`_validate.check_one_run_design`.
      delta: delta of the claim under test.
      confidence: probability that the bound holds, including the search over guesses.
      strategy: how guess counts are chosen (:class:`GuessSearch` by default).

    ``details`` holds the chosen (k+, k-), the guesses and correct guesses, the family
    size and ``power``: the bound this design would give if every guess were right.
    """
    scores, members = _validate.check_scores(scores, members)
    _validate.check_one_run_design(int(members.sum()), members.size)
    delta = _validate.check_delta(delta)
    confidence = _validate.check_confidence(confidence)
    strategy = GuessSearch() if strategy is None else strategy
    m = scores.size
    plan = guess_plan(strategy, m, delta, 1.0 - confidence)
    # Visit the most precise guesses first so later ones can be skipped cheaply.
    candidates = [(o.k_plus, o.k_minus, o.made, o.correct, o.level) for o in guess_outcomes(scores, members, plan)]
    candidates.sort(key=lambda c: -(c[3] / (c[0] + c[1])))

    best_eps, best = 0.0, None
    for k_plus, k_minus, made, correct, significance in candidates:
        r = k_plus + k_minus
        if correct == 0 or correct / r <= special.expit(best_eps):
            continue
        if one_run_p_value(m, r, correct, best_eps, delta) > significance:
            continue  # cannot beat the best so far
        eps = _first_crossing(m, r, correct, delta, significance, start=best_eps)
        if eps > best_eps:
            best_eps, best = eps, (k_plus, k_minus, made, correct)

    power = design_power(m, tuple(g.r for g, _ in plan), tuple(sig for _, sig in plan), delta)
    details = {
        "canaries": m,
        "members": int(members.sum()),
        "family_size": len(plan),
        "power": power,
    }
    if best is not None:
        details.update(k_plus=best[0], k_minus=best[1], guesses=best[0] + best[1], guesses_made=best[2], correct=best[3])
    return EpsilonResult(
        value=best_eps,
        kind=GUARANTEED,
        method="one-run",
        confidence=confidence,
        delta=delta,
        inputs={"canaries": m, "strategy": describe(strategy)},
        details=details,
    )
