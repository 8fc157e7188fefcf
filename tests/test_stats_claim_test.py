"""The claimed privacy curve of DP-SGD and the one-run test of it, against independent
references (closed forms, Opacus' accountants) and by simulation with stated failure rates."""

import math

import numpy as np
import pytest
from scipy import stats

from audit.errors import InputError
from audit.stats.claim_test import claim_test_one_run
from audit.stats.fdp import fdp_p_value, fdp_rejects
from audit.stats.privacy_curve import PrivacyCurve, dpsgd_curve
from canaries.simulate import simulate

ALPHAS = np.concatenate([np.geomspace(1e-9, 0.5, 300), 1 - np.geomspace(1e-9, 0.5, 300)])


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_one_gaussian_step_is_the_closed_form(sigma):
    """q = 1, T = 1: f(alpha) = Phi(Phi^-1(1 - alpha) - 1/sigma) (Dong, Roth & Su 2022).
    The envelope never exceeds it (soundness) and is within 1e-4 of it (tightness)."""
    exact = stats.norm.cdf(stats.norm.ppf(1 - ALPHAS) - 1 / sigma)
    curve = dpsgd_curve(sigma, 1.0, 1)
    env = curve.tradeoff(ALPHAS)
    assert np.all(env <= exact + 1e-12)
    assert np.max(exact - env) < 1e-4
    # the cheap table lookup is a lower bound of the envelope, and close to it
    table = np.array([curve.tradeoff_lower(a) for a in ALPHAS])
    assert np.all(table <= env + 1e-15) and np.max(env - table) < 1e-3


@pytest.mark.parametrize("sigma, q, steps", [(0.962, 0.01, 1000), (1.0, 0.0256, 1170), (0.6, 0.05, 200)])
def test_profile_matches_opacus_accountants(sigma, q, steps):
    """The curve's epsilon at several deltas against Opacus' PRV (within its own error of
    0.01 plus the grid step) and never below Opacus' RDP lower... RDP is an upper bound:
    the curve's epsilon is at most RDP's."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    curve = dpsgd_curve(sigma, q, steps)
    for delta in (1e-3, 1e-5, 1e-7):
        prv, rdp = PRVAccountant(), RDPAccountant()
        prv.history = rdp.history = [(sigma, q, steps)]
        eps_prv = prv.get_epsilon(delta=delta, eps_error=0.01)
        assert abs(curve.epsilon(delta) - eps_prv) < 0.05, (delta, curve.epsilon(delta), eps_prv)
        assert curve.epsilon(delta) <= rdp.get_epsilon(delta=delta) + 0.01


def test_curve_refuses_bad_input():
    for args in [(0.0, 0.1, 10), (1.0, 0.0, 10), (1.0, 1.5, 10), (1.0, 0.1, 0), (math.nan, 0.1, 10)]:
        with pytest.raises(InputError):
            dpsgd_curve(*args)
    with pytest.raises(ValueError):
        PrivacyCurve(np.array([0.5, 1.0]), np.array([0.1, 0.0]), "no zero")


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0, 4.0])
def test_single_guess_p_value_is_the_best_accuracy(mu):
    """m = r = v = 1: the one-run f-DP test's p-value is the highest probability that any
    guess of one fair coin is right under mu-GDP, Phi(mu/2) (closed form)."""
    def inverse(x):
        return float(stats.norm.cdf(stats.norm.ppf(x) - mu)) if x > 0 else 0.0

    assert fdp_p_value(inverse, 1, 1, 1, tolerance=1e-6) == pytest.approx(stats.norm.cdf(mu / 2), rel=1e-5)


def test_rejection_grows_with_the_level():
    """The p-value's bisection reads one crossing: rejection is monotone in the level (scan)."""
    curve = dpsgd_curve(0.8, 0.01, 1000)

    def inverse(x):
        return curve.tradeoff_lower(1 - x)

    levels = np.geomspace(1e-12, 1, 200)
    for m, r, v in [(1000, 100, 95), (1000, 500, 330), (1000, 1000, 620), (200, 20, 20)]:
        decisions = [fdp_rejects(inverse, m, r, v, s) for s in levels]
        assert decisions == sorted(decisions), (m, r, v)


def _sigma(eps, q=0.01, steps=300):
    from audit.stats.accountant import noise_multiplier_for

    return noise_multiplier_for(target_epsilon=eps, delta=1e-5, sample_rate=q, steps=steps)


@pytest.mark.parametrize("eps", [2.0, pytest.param(8.0, marks=pytest.mark.slow)])
def test_a_correct_claim_is_rarely_rejected(eps):
    """The exact mechanism (Dirac readings, likelihood-ratio score, the most powerful), 40
    one-run audits of a correct claim at 95%: rejections ~ Binomial(40, <= 0.05), so more
    than 6 happen with probability < 0.003 if the test is sound (the 1,000-audit version
    is an experiment)."""
    sigma = _sigma(eps)
    curve = dpsgd_curve(sigma, 0.01, 300)
    rejected = 0
    for seed in range(40):
        run = simulate(n_canaries=1000, steps=300, sample_rate=0.01, noise_multiplier=sigma,
                       rng=np.random.default_rng([seed, 17]))
        rejected += claim_test_one_run(run.llr, run.members, curve).rejected
    assert rejected <= 6


def test_half_the_noise_is_caught_where_the_bound_is_not():
    """half_noise at a claimed epsilon of 8: the (epsilon, delta) one-run bound stays below 8,
    the curve test rejects the claim (simulated exact mechanism, 5 seeds)."""
    from audit.stats import epsilon_one_run_from_scores

    sigma = _sigma(8.0, steps=1000)
    curve = dpsgd_curve(sigma, 0.01, 1000)
    for seed in range(5):
        run = simulate(n_canaries=1000, steps=1000, sample_rate=0.01, noise_multiplier=sigma / 2,
                       rng=np.random.default_rng(seed))
        result = claim_test_one_run(run.llr, run.members, curve)
        assert result.rejected and result.p_value <= 0.05 and result.testable
        assert epsilon_one_run_from_scores(run.llr, run.members, delta=1e-5).value < 8.0


def test_result_is_plain_data_and_blind_designs_say_so():
    curve = dpsgd_curve(20.0, 0.01, 10)  # nearly perfect privacy
    members = np.array([True, False, True, False])
    # 4 canaries all guessed right happens with probability 1/16 > 0.05 even under perfect privacy
    result = claim_test_one_run(members.astype(float), members, curve)
    assert not result.testable and not result.rejected and result.p_value > 0.05
    # 10 all right: 2^-10 under (nearly) perfect privacy, so the claim is refuted
    members = np.arange(10) % 2 == 0
    refuted = claim_test_one_run(members.astype(float), members, curve)
    assert refuted.testable and refuted.rejected and refuted.p_value == pytest.approx(2.0 ** -10, rel=0.05)
    d = result.to_dict()
    assert set(d) == {"rejected", "p_value", "confidence", "claim", "testable", "details"}
    assert "sigma=20" in d["claim"]


def test_effective_noise_rejection_grows_with_the_noise_level():
    """The search reads one crossing: on a leaky and a correct run, the f-DP test's rejection
    of DP-SGD(sigma', q, T) is monotone in sigma' (scan)."""
    from audit.stats.claim_test import claim_plan, family_p_value, guess_outcomes
    from audit.stats.guesses import GuessSearch

    sigma = _sigma(8.0, steps=300)
    claimed = dpsgd_curve(sigma, 0.01, 300)
    for factor in (1.0, 0.5):
        run = simulate(n_canaries=1000, steps=300, sample_rate=0.01, noise_multiplier=sigma * factor,
                       rng=np.random.default_rng(3))
        outcomes = guess_outcomes(run.llr, run.members, claim_plan(GuessSearch(), 1000, claimed, 0.05))
        decisions = [family_p_value(outcomes, 1000, dpsgd_curve(s, 0.01, 300, discretization=1e-3), 0.05)[0] <= 0.05
                     for s in np.geomspace(0.3, 6.0, 8)]
        assert decisions == sorted(decisions) and any(decisions)


@pytest.mark.slow  # `make test-slow`; experiments/claim_test_soundness.py measures it at scale
def test_effective_noise_is_below_the_truth_and_sees_half_the_noise():
    """Correct DP-SGD (5 simulated runs at claimed epsilon 2): sigma_eff must exceed the
    true sigma, each run failing with probability <= 0.05, so 2 or more failures happen with
    probability < 0.023 (fixed seeds). Half the noise at claimed epsilon 8: the effective
    epsilon exceeds the claim, while the (epsilon, delta) bound does not."""
    from audit.stats import epsilon_one_run_from_scores
    from audit.stats.effective_noise import effective_noise_one_run

    sigma = _sigma(2.0)
    failures = 0
    for seed in range(5):
        run = simulate(n_canaries=1000, steps=300, sample_rate=0.01, noise_multiplier=sigma,
                       rng=np.random.default_rng([seed, 29]))
        eff = effective_noise_one_run(run.llr, run.members, noise_multiplier=sigma, sample_rate=0.01, steps=300,
                                      delta=1e-5)
        failures += eff.noise_multiplier is not None and eff.noise_multiplier <= sigma
        assert eff.epsilon < 2.0 or eff.noise_multiplier <= sigma  # the same event, in epsilon
        assert "assumes the implementation is DP-SGD" in eff.assumption
    assert failures <= 1
    sigma8 = _sigma(8.0, steps=1000)
    run = simulate(n_canaries=1000, steps=1000, sample_rate=0.01, noise_multiplier=sigma8 / 2,
                   rng=np.random.default_rng(5))
    eff = effective_noise_one_run(run.llr, run.members, noise_multiplier=sigma8, sample_rate=0.01, steps=1000,
                                  delta=1e-5)
    assert eff.noise_multiplier < sigma8 and eff.epsilon > 8.0
    assert epsilon_one_run_from_scores(run.llr, run.members, delta=1e-5).value < 8.0


def test_effective_epsilon_is_a_lower_bound_of_the_accountants():
    """The optimistic epsilon of DP-SGD(sigma, q, T) is below Opacus' PRV upper bound and the
    pessimistic curve's epsilon, and close to them."""
    from opacus.accountants import PRVAccountant

    from audit.stats.privacy_curve import dpsgd_epsilon_lower

    for sigma, q, steps in [(0.962, 0.01, 1000), (0.6, 0.05, 200)]:
        low = dpsgd_epsilon_lower(sigma, q, steps, 1e-5)
        prv = PRVAccountant()
        prv.history = [(sigma, q, steps)]
        high = prv.get_epsilon(delta=1e-5, eps_error=0.01)
        assert low <= high and low <= dpsgd_curve(sigma, q, steps).epsilon(1e-5) and high - low < 0.1


def test_effective_noise_stops_at_its_floor(monkeypatch):
    """When every sigma' down to the floor is rejected, the search reports the last sigma'
    it tested and saw rejected, never a value below the floor that it did not test. (Here
    the floor is raised so that a perfectly separating run reaches it.)"""
    from audit.stats import effective_noise as en

    members = np.arange(400) % 2 == 0
    scores = members.astype(float)
    free = en.effective_noise_one_run(scores, members, noise_multiplier=2.0, sample_rate=0.01, steps=100, delta=1e-5)
    assert 0.25 < free.noise_multiplier < 0.5 and free.details["floor"] is None  # found by bisection
    monkeypatch.setattr(en, "SIGMA_MIN", 0.45)
    floored = en.effective_noise_one_run(scores, members, noise_multiplier=2.0, sample_rate=0.01, steps=100, delta=1e-5)
    assert floored.noise_multiplier == 0.5 and floored.details["floor"] == 0.45  # 2 -> 1 -> 0.5, then 0.25 < floor
    assert floored.epsilon <= free.epsilon


@pytest.mark.parametrize("counts", [(900, 100, 100, 900), (700, 300, 300, 700), (80, 20, 5, 95), (500, 500, 490, 510),
                                    (31, 269, 31, 269), (9990, 10, 3000, 7000)])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_counts_test_is_the_gaussian_closed_form(counts, sigma):
    """One Gaussian step (q = T = 1) is 1/sigma-GDP: the counts test rejects exactly when the
    mu implied by the rate limits, Phi^-1(1 - FPR_u) - Phi^-1(FNR_u) (either direction),
    exceeds 1/sigma (Dong, Roth & Su 2022), up to the envelope's 1e-4."""
    from audit.stats.claim_test import claim_test_counts
    from audit.stats.intervals import upper_limit

    tp, fn, fp, tn = counts
    fpr_u, fnr_u = upper_limit(fp, fp + tn, 0.025), upper_limit(fn, tp + fn, 0.025)
    mu = max(stats.norm.isf(fpr_u) - stats.norm.ppf(fnr_u), stats.norm.isf(fnr_u) - stats.norm.ppf(fpr_u))
    result = claim_test_counts(tp, fn, fp, tn, dpsgd_curve(sigma, 1.0, 1))
    if abs(mu - 1 / sigma) > 1e-2:
        assert result.rejected == (mu > 1 / sigma)
    assert result.rejected == (result.p_value <= 0.05)


def test_counts_test_rarely_rejects_a_true_claim():
    """2,000 multi-run audits of one Gaussian step at sigma = 1, each 1,000 + 1,000
    independent runs thresholded at a point fixed in advance (the worst: where the curve
    is steepest against the counts); rejections ~ Binomial(2000, <= 0.05), so more than 125
    happen with probability < 0.002 if the test is sound."""
    from audit.stats.claim_test import claim_test_counts

    curve = dpsgd_curve(1.0, 1.0, 1)
    rng = np.random.default_rng(11)
    threshold = 0.5  # between N(0, 1) (out) and N(1, 1) (in)
    tp = rng.binomial(1000, stats.norm.sf(threshold - 1.0), 2000)
    fp = rng.binomial(1000, stats.norm.sf(threshold), 2000)
    rejected = sum(claim_test_counts(int(a), 1000 - int(a), int(b), 1000 - int(b), curve).rejected for a, b in zip(tp, fp))
    assert rejected <= 125


def test_effective_noise_from_counts_is_the_gaussian_closed_form():
    """One Gaussian step: sigma_eff is 1/mu of the rate limits' mu (within the search's 2%)."""
    from audit.stats.effective_noise import effective_noise_counts
    from audit.stats.intervals import upper_limit

    tp, fn, fp, tn = 900, 100, 100, 900
    fpr_u, fnr_u = upper_limit(fp, fp + tn, 0.025), upper_limit(fn, tp + fn, 0.025)
    mu = stats.norm.isf(fpr_u) - stats.norm.ppf(fnr_u)
    eff = effective_noise_counts(tp, fn, fp, tn, noise_multiplier=1.0, sample_rate=1.0, steps=1, delta=1e-5)
    assert 1 / mu <= eff.noise_multiplier <= 1.03 / mu
    from audit.stats.estimates import epsilon_for_gdp

    assert eff.epsilon == pytest.approx(epsilon_for_gdp(1 / eff.noise_multiplier, 1e-5), abs=0.05)


def test_multi_run_scores_test_is_sound_and_sees_leakage():
    """Scores of independent runs of one Gaussian step (members N(1/sigma, 1), non-members
    N(0, 1)), claim sigma = 1: 300 audits of 2,000 runs each, threshold chosen on half;
    rejections ~ Binomial(300, <= 0.05), so more than 27 happen with probability < 0.003.
    At twice the signal (sigma = 0.5 really) every audit rejects."""
    from audit.stats.claim_test import claim_test_scores_multi_run

    curve = dpsgd_curve(1.0, 1.0, 1)
    rng = np.random.default_rng(13)
    rejected = 0
    for _ in range(300):
        members = rng.random(2000) < 0.5
        rejected += claim_test_scores_multi_run(rng.normal(size=2000) + members, members, curve).rejected
    assert rejected <= 27
    for _ in range(5):
        members = rng.random(2000) < 0.5
        result = claim_test_scores_multi_run(rng.normal(size=2000) + 2 * members, members, curve)
        assert result.rejected and result.details["requires"].startswith("each entry")
