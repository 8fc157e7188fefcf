"""One-run bound (Steinke, Nasr & Jagielski 2023): reference values and a naive p-value."""

import math

import mpmath
import numpy as np
import pytest

from audit.errors import InputError
from audit.stats import epsilon_one_run, one_run_p_value
from audit.stats.one_run import one_run_p_values


@pytest.mark.parametrize(
    "m, r, v, delta, expected",
    [
        (1000, 1000, 1000, 0.0, 5.8091),
        (1000, 100, 90, 1e-5, 1.6261),
        (10000, 1000, 900, 1e-5, 2.0152),
    ],
)
def test_reference_values(m, r, v, delta, expected):
    assert epsilon_one_run(m, r, v, delta=delta, confidence=0.95).value == pytest.approx(expected, abs=5e-5)


def test_perfect_guesses_closed_form():
    # delta = 0, every guess right: q^r = 1 - confidence, eps = logit(q).
    for r, conf in [(1000, 0.95), (50, 0.99), (7, 0.9)]:
        q = (1 - conf) ** (1 / r)
        assert epsilon_one_run(r, r, r, delta=0.0, confidence=conf).value == pytest.approx(math.log(q / (1 - q)), rel=1e-7)


def naive_p_value(m, r, v, eps, delta):
    """Direct summation of binomial terms in 50-digit arithmetic."""
    with mpmath.workdps(50):
        q = mpmath.e**eps / (1 + mpmath.e**eps)
        pmf = [mpmath.binomial(r, k) * q**k * (1 - q) ** (r - k) for k in range(r + 1)]
        beta = mpmath.fsum(pmf[v:])
        alpha = max((mpmath.fsum(pmf[v - i : v]) / i for i in range(1, v + 1)), default=0)
        return min(1.0, float(beta + 2 * m * mpmath.mpf(delta) * alpha))


@pytest.mark.parametrize("m, r, v", [(100, 40, 30), (500, 60, 45), (50, 50, 41), (1000, 90, 60), (20, 5, 5)])
@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0, 2.5])
@pytest.mark.parametrize("delta", [0.0, 1e-5, 1e-3])
def test_p_value_matches_direct_summation(m, r, v, eps, delta):
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(naive_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-15)


def test_bound_is_where_the_p_value_crosses_the_level():
    for m, r, v, delta in [(1000, 100, 90, 1e-5), (10000, 1000, 900, 1e-5), (300, 200, 150, 1e-4)]:
        eps = epsilon_one_run(m, r, v, delta=delta).value
        assert naive_p_value(m, r, v, eps * 0.999, delta) <= 0.05
        assert naive_p_value(m, r, v, eps * 1.001 + 1e-9, delta) > 0.05
        # First crossing: nothing below the bound is above the level.
        grid = np.linspace(0, eps * 0.999, 200)
        assert np.all(one_run_p_values(m, r, v, grid, delta) <= 0.05)


def test_no_correct_guess_gives_zero():
    assert epsilon_one_run(100, 10, 0, delta=1e-5).value == 0.0
    assert epsilon_one_run(100, 0, 0, delta=1e-5).value == 0.0
    assert epsilon_one_run(100, 10, 5, delta=0).value == 0.0  # chance level


@pytest.mark.parametrize(
    "args",
    [(-1, 1, 1), (10, 11, 1), (10, 5, 6), (0, 0, 0), (10.5, 5, 1)],
)
def test_bad_counts(args):
    with pytest.raises(InputError):
        epsilon_one_run(*args, delta=1e-5)


@pytest.mark.parametrize("delta, confidence", [(1.0, 0.95), (-0.1, 0.95), (1e-5, 1.0), (1e-5, 0.0), (1e-5, float("nan"))])
def test_bad_levels(delta, confidence):
    with pytest.raises(InputError):
        epsilon_one_run(100, 10, 9, delta=delta, confidence=confidence)


def test_the_alpha_term_is_the_same_in_chunks(monkeypatch):
    """Theorem 5.2's max over i = 1..v is taken chunk by chunk (bounded memory); the
    p-values equal the one-shot maximum, computed here naively."""
    import numpy as np
    from scipy import special, stats

    from audit.stats import one_run

    m, r, v, delta = 3000, 1200, 1000, 1e-5
    eps = np.array([0.5, 1.0, 2.0, 3.0])
    q = special.expit(eps)[:, None]
    i = np.arange(1, v + 1)[None, :]
    window = stats.binom.cdf(v - 1, r, q) - stats.binom.cdf(v - i - 1, r, q)
    naive = np.minimum(1.0, stats.binom.sf(v - 1, r, q[:, 0]) + 2 * m * delta * np.max(window / i, axis=1))
    monkeypatch.setattr(one_run, "_WINDOW_CHUNK", 7)
    np.testing.assert_allclose(one_run.one_run_p_values(m, r, v, eps, delta), naive, rtol=1e-9, atol=1e-12)
