"""Soundness by simulation on mechanisms whose exact epsilon is known.

Each test states its failure probability. With 1,000 simulated audits at confidence 0.95
the fraction of bounds above the true epsilon must stay within 5% plus binomial slack
(3 standard deviations: 0.05 + 3 * sqrt(0.05 * 0.95 / 1000) = 0.0707; a correct
implementation fails that check with probability below 0.2%). Randomized response makes
the one-run and counts tests nearly tight, so the checks bite: a bound computed at the
wrong level or with the wrong tail fails them.
"""

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from audit.stats import epsilon_from_counts, epsilon_one_run, epsilon_one_run_from_scores

N_AUDITS = 1000
SLACK = 0.05 + 3 * math.sqrt(0.05 * 0.95 / N_AUDITS)


def gaussian_mechanism_epsilon(sigma: float, delta: float) -> float:
    """Exact eps of N(b, sigma^2), b in {0, 1}, by numerical integration of the hockey-stick divergence."""

    def hockey(eps):
        p1, p0 = stats.norm(1, sigma).pdf, stats.norm(0, sigma).pdf
        x0 = sigma**2 * eps + 0.5  # where p1 = e^eps p0
        val, _ = integrate.quad(lambda x: p1(x) - math.exp(eps) * p0(x), x0, x0 + 40 * sigma)
        return val

    return optimize.brentq(lambda e: hockey(e) - delta, 0.0, 100.0)


@pytest.mark.parametrize("eps, delta", [(1.0, 0.0), (0.5, 0.0), (1.0, 1e-3)])
def test_one_run_randomized_response_false_alarm_rate(eps, delta):
    # m canaries, all guessed; randomized response: each guess right with probability q.
    rng = np.random.default_rng(11)
    m = 400
    v = rng.binomial(m, special.expit(eps), size=N_AUDITS)
    bounds = {int(x): epsilon_one_run(m, m, int(x), delta=delta).value for x in np.unique(v)}
    above = np.mean([bounds[int(x)] > eps for x in v])
    assert above <= SLACK
    if delta == 0:
        assert above >= 0.02  # nearly tight: the test is not vacuous


def test_counts_randomized_response_false_alarm_rate():
    # Multi-run: each run includes the target w.p. 1/2 and releases RR(member) at eps = 1.
    rng = np.random.default_rng(12)
    eps, runs = 1.0, 400
    q = special.expit(eps)
    above = 0
    for _ in range(N_AUDITS):
        members = rng.random(runs) < 0.5
        says_member = np.where(rng.random(runs) < q, members, ~members)
        tp, fn = int(np.sum(members & says_member)), int(np.sum(members & ~says_member))
        fp, tn = int(np.sum(~members & says_member)), int(np.sum(~members & ~says_member))
        above += epsilon_from_counts(tp, fn, fp, tn, delta=0.0).value > eps
    assert above / N_AUDITS <= SLACK


def test_one_run_scores_gaussian_mechanism_with_search():
    # One run of m independent Gaussian mechanisms (one per canary): (eps, delta)-DP in each canary.
    sigma, delta, m = 0.6, 1e-5, 300
    true_eps = gaussian_mechanism_epsilon(sigma, delta)
    rng = np.random.default_rng(13)
    above = 0
    for _ in range(N_AUDITS):
        members = rng.random(m) < 0.5
        scores = members + sigma * rng.normal(size=m)
        above += epsilon_one_run_from_scores(scores, members, delta=delta).value > true_eps
    assert above / (N_AUDITS) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / (N_AUDITS))


def test_one_run_scores_laplace_mechanism_with_search():
    # Pure eps-DP Laplace mechanism; the search over guess counts must not push the rate past 5%.
    eps, m = 2.0, 400
    rng = np.random.default_rng(14)
    n = N_AUDITS
    above = sum(
        epsilon_one_run_from_scores(mem + rng.laplace(scale=1 / eps, size=m), mem, delta=0.0).value > eps
        for mem in (rng.random(m) < 0.5 for _ in range(n))
    )
    assert above / n <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / n)


def test_bounds_approach_the_truth_with_many_samples():
    # Randomized response at eps = 1: with 10^5 one-run canaries, or 10^6 runs per audit,
    # the bound is within 3% of the true epsilon (expected about 0.99 at these sizes).
    eps = 1.0
    q = special.expit(eps)
    rng = np.random.default_rng(15)
    m = 100_000
    one_run = epsilon_one_run(m, m, int(rng.binomial(m, q)), delta=0.0).value
    assert 0.97 * eps <= one_run <= eps
    runs = 1_000_000
    n_in = rng.binomial(runs, 0.5)
    tp = int(rng.binomial(n_in, q))
    tn = int(rng.binomial(runs - n_in, q))
    counts = epsilon_from_counts(tp, n_in - tp, runs - n_in - tn, tn, delta=0.0).value
    assert 0.97 * eps <= counts <= eps


def test_gaussian_reference_matches_the_analytic_relation():
    # The integration above and Balle & Wang's analytic delta agree (sanity of the reference).
    sigma, eps = 0.8, 2.0
    analytic = stats.norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * stats.norm.cdf(-0.5 / sigma - eps * sigma)
    assert gaussian_mechanism_epsilon(sigma, analytic) == pytest.approx(eps, rel=1e-6)


def test_one_run_scores_randomized_response_worst_case_for_the_search():
    # Randomized response at eps = 1: each canary's output is its membership bit, flipped
    # with probability 1/(1+e), so every guess is right with probability exactly e/(1+e):
    # the mechanism sits on the bound, the worst case for a search over guesses (the
    # score-based split of the full guess lands on the outputs). Tiny label-free noise
    # orders the tied outputs. 2,000 audits of 1,000 canaries at delta = 0.
    eps, m, n = 1.0, 1000, 2000
    q = special.expit(eps)
    rng = np.random.default_rng(2026)
    above = 0
    for _ in range(n):
        members = rng.random(m) < 0.5
        outputs = np.where(rng.random(m) < q, members, ~members)
        above += epsilon_one_run_from_scores(outputs + 1e-3 * rng.random(m), members, delta=0.0).value > eps
    assert above / n <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / n)
