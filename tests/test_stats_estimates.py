"""Gaussian-DP and f-DP estimates: closed forms and labels."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from audit.stats import epsilon_for_gdp, epsilon_one_run, fdp_one_run_estimate, gdp_from_counts, gdp_mu_for_epsilon
from audit.stats.estimates import delta_for_gdp, gdp_mu_from_rates


def hockey_stick(mu, eps):
    """delta(eps) of N(mu, 1) vs N(0, 1) by numerical integration (independent of the closed form)."""
    x0 = eps / mu + mu / 2
    val, _ = integrate.quad(lambda x: stats.norm.pdf(x, mu) - math.exp(eps) * stats.norm.pdf(x), x0, x0 + 40)
    return val


@pytest.mark.parametrize("mu, eps", [(0.5, 0.3), (1.0, 1.0), (2.0, 3.0), (3.0, 8.0)])
def test_delta_for_gdp_matches_integration(mu, eps):
    assert delta_for_gdp(mu, eps) == pytest.approx(hockey_stick(mu, eps), rel=1e-6)


def test_conversions_invert_each_other():
    for mu in (0.3, 1.0, 2.5):
        eps = epsilon_for_gdp(mu, 1e-5)
        assert delta_for_gdp(mu, eps) == pytest.approx(1e-5, rel=1e-6)
        assert gdp_mu_for_epsilon(eps, 1e-5) == pytest.approx(mu, rel=1e-6)


def test_mu_from_rates_of_a_gaussian_test():
    # The Gaussian test with mean shift 1.3, threshold t: FPR = 1 - Phi(t), FNR = Phi(t - 1.3).
    t = 0.4
    assert gdp_mu_from_rates(stats.norm.sf(t), stats.norm.cdf(t - 1.3)) == pytest.approx(1.3)


def test_gdp_from_counts_is_labelled_and_never_a_bound():
    res = gdp_from_counts(900, 100, 100, 900, delta=1e-5)
    assert res.kind == "estimate" and not res.is_guaranteed
    assert "Gaussian" in res.assumption
    assert res.to_dict()["epsilon_estimate"] == res.value
    assert "epsilon_lower_bound" not in res.to_dict()
    assert res.value == pytest.approx(epsilon_for_gdp(res.details["mu"], 1e-5))


def test_fdp_estimate_sits_above_the_one_run_bound_and_is_monotone():
    bound = epsilon_one_run(1000, 100, 90, delta=1e-5).value
    values = [fdp_one_run_estimate(1000, 100, v, delta=1e-5).value for v in (60, 75, 90, 100)]
    assert values[2] > bound  # the f-DP analysis is tighter for Gaussian mechanisms
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert fdp_one_run_estimate(1000, 100, 50, delta=1e-5).value == 0.0
    res = fdp_one_run_estimate(1000, 100, 90, delta=1e-5)
    assert res.kind == "estimate" and "Gaussian" in res.assumption


def test_fdp_estimate_is_calibrated_on_a_gaussian_mechanism():
    # m Gaussian canaries, mu = 2 (exactly mu-GDP): the estimate rarely exceeds the truth.
    rng = np.random.default_rng(21)
    mu, m, delta = 2.0, 1000, 1e-5
    true_eps = epsilon_for_gdp(mu, delta)
    above = 0
    for _ in range(40):
        members = rng.random(m) < 0.5
        scores = rng.normal(size=m) + mu * members
        order = np.argsort(-scores)
        top = order[:100]
        above += fdp_one_run_estimate(m, 100, int(members[top].sum()), delta=delta).value > true_eps
    assert above <= 6  # P[Bin(40, 0.05) > 6] < 0.02


def test_scalar_normal_functions_are_stats_norms_bits():
    """The estimates call scipy.special's ndtr / ndtri / log_ndtr on scalars for speed:
    the very functions stats.norm evaluates, so every value is bit-identical to it."""
    import numpy as np
    from scipy import stats

    from audit.stats import estimates

    xs = np.concatenate([np.linspace(-40, 40, 2001), [-1e-300, 0.0, 1e-300, 37.5, -37.5]])
    qs = np.concatenate([np.linspace(0, 1, 2001), np.logspace(-300, -1, 300), 1 - np.logspace(-16, -1, 100)])
    for x in xs:
        assert float(estimates._cdf(x)) == float(stats.norm.cdf(x))
        assert float(estimates._logcdf(x)) == float(stats.norm.logcdf(x))
    for q in qs:
        assert float(estimates._ppf(q)) == float(stats.norm.ppf(q))
