"""The noise measured on never-inserted canaries, and the effective noise that combines it
with the signal test: against a naive computation and the chi-square closed form, by
simulation with stated failure rates, and on the bugs it must see."""

import math

import numpy as np
import pytest
from scipy import stats

from audit.errors import InputError
from audit.stats.effective_noise import effective_noise_one_run, rejects_noise_level
from audit.stats.noise_level import noise_level_test
from canaries.simulate import simulate


def _naive_upper(x, c, confidence):
    """Loops, no vectorisation: centred sum of squares and the chi-square quantile."""
    total = 0.0
    for j in range(x.shape[1]):
        col = [v / c for v in x[:, j]]
        mean = sum(col) / len(col)
        total += sum((v - mean) ** 2 for v in col)
    df = x.shape[1] * (x.shape[0] - 1)
    return math.sqrt(total / stats.chi2.ppf(1 - confidence, df)), total, df


def test_matches_a_naive_computation_and_its_p_value_is_the_level():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.7 * 2.0, (13, 7))
    result = noise_level_test(x, max_grad_norm=2.0, confidence=0.9)
    upper, q, df = _naive_upper(x, 2.0, 0.9)
    assert result.upper == pytest.approx(upper, rel=1e-12)
    assert result.statistic == pytest.approx(q, rel=1e-12) and result.df == df == 7 * 12
    assert result.p_value(result.upper) == pytest.approx(0.1, rel=1e-9)
    assert result.p_value(result.upper * 1.01) < 0.1 < result.p_value(result.upper * 0.99)
    assert result.estimate == pytest.approx(math.sqrt(q / df))


def test_covers_the_true_noise_at_its_confidence():
    """2000 simulated audits with true sigma 0.8: the upper limit falls at or below the
    truth in about 5% of them; more than 130 failures (6.5%) has probability below 0.002
    if the limit holds, so the test fails by chance with at most that probability."""
    rng = np.random.default_rng(1)
    failures = sum(noise_level_test(rng.normal(0.0, 0.8, (50, 20)), max_grad_norm=1.0).upper <= 0.8
                   for _ in range(2000))
    assert failures <= 130
    assert failures >= 60  # and it is not vacuous: an exact limit fails about 100 times


def test_noise_reused_over_steps_shows_as_almost_no_noise():
    rng = np.random.default_rng(2)
    shared = rng.normal(0.0, 0.6, (1, 200))
    reused = np.repeat(shared, 100, axis=0)
    assert noise_level_test(reused, max_grad_norm=1.0).upper < 1e-6


@pytest.mark.parametrize("kwargs, message", [
    ({"readings": np.zeros((1, 5))}, "steps >= 2"),
    ({"readings": np.zeros(5)}, "expected float"),
    ({"readings": np.array([[0.0, np.nan], [1.0, 2.0]])}, "NaN"),
    ({"readings": np.zeros((3, 2)), "max_grad_norm": 0.0}, "max_grad_norm"),
    ({"readings": np.zeros((3, 2)), "max_grad_norm": "1"}, "max_grad_norm"),
    ({"readings": np.zeros((3, 2)), "confidence": 1.0}, "confidence"),
])
def test_refuses_bad_input(kwargs, message):
    kwargs = {"max_grad_norm": 1.0} | kwargs
    with pytest.raises(InputError, match=message):
        noise_level_test(**kwargs)


# Opacus' PRV accountant: epsilon 8 and 2 at q = 0.01, T = 1000, delta 1e-5
SIGMA8, SIGMA2 = 0.5865, 0.9619


def _run(sigma, seed, *, signal=1.0, steps=1000):
    """One simulated white-box run; ``signal`` scales a present canary's contribution (10 =
    clipping that lets ten times C through)."""
    run = simulate(n_canaries=1000, steps=steps, sample_rate=0.01, noise_multiplier=sigma,
                   rng=np.random.default_rng(seed))
    if signal == 1.0:
        return run.llr, run.members, run.readings
    rng = np.random.default_rng([seed, 1])
    present = (rng.random(run.readings.shape) < 0.01) & run.members[None, :]
    readings = present * signal + rng.normal(0.0, sigma, run.readings.shape)
    return readings.sum(axis=0), run.members, readings


def test_correct_dpsgd_reaches_nearly_the_claim_and_stays_below_it():
    """Correct DP-SGD at claimed epsilon 8: the noise test pins sigma within a fraction of a
    percent, so the effective epsilon is nearly the claim (and never above the truth here)."""
    scores, members, readings = _run(SIGMA8, 3)
    eff = effective_noise_one_run(scores, members, noise_multiplier=SIGMA8, sample_rate=0.01, steps=1000,
                                  delta=1e-5, readings=readings)
    assert eff.details["decided_by"] == "noise"
    assert SIGMA8 < eff.noise_multiplier < SIGMA8 * 1.01
    assert 0.9 * 8 < eff.epsilon < 8
    assert eff.details["noise_test"]["confidence"] == pytest.approx(0.975)  # half the level each
    # The event a soundness experiment counts, without the search, agrees with it.
    same = dict(noise_multiplier=SIGMA8, sample_rate=0.01, steps=1000, readings=readings)
    assert rejects_noise_level(eff.noise_multiplier, scores, members, **same)
    assert not rejects_noise_level(0.999 * eff.noise_multiplier, scores, members, **same)


def test_half_noise_is_seen_by_the_noise_test_and_a_signal_bug_by_the_signal_test():
    scores, members, readings = _run(SIGMA8 / 2, 4)
    eff = effective_noise_one_run(scores, members, noise_multiplier=SIGMA8, sample_rate=0.01, steps=1000,
                                  delta=1e-5, readings=readings)
    assert eff.details["decided_by"] == "noise" and eff.noise_multiplier < 0.51 * SIGMA8 and eff.epsilon > 30
    # Claimed epsilon 2, the noise is right but each presence brings 10 C (missing
    # clipping): the noise test sees nothing wrong, the signal test reaches far below the
    # claimed sigma (up to the one-run ceiling of m = 1000 canaries, epsilon about 9-10).
    scores, members, readings = _run(SIGMA2, 5, signal=10.0)
    eff = effective_noise_one_run(scores, members, noise_multiplier=SIGMA2, sample_rate=0.01, steps=1000,
                                  delta=1e-5, readings=readings)
    assert eff.details["noise_test"]["upper"] > SIGMA2
    assert eff.details["decided_by"] == "signal" and eff.noise_multiplier < 0.8 * SIGMA2 and eff.epsilon > 2


def test_no_noise_at_all_stops_at_the_floor(monkeypatch):
    """Readings without a trace of noise: the noise test rejects every level above 0, and
    the effective noise reports the floor (a level it saw rejected), not 0 and an infinite
    epsilon. (The floor is raised so that the test builds no slow low-noise curve.)"""
    from audit.stats import effective_noise as en

    monkeypatch.setattr(en, "SIGMA_MIN", 0.45)
    members = np.arange(400) % 2 == 0
    scores = np.random.default_rng(6).random(400)  # the scores say nothing
    readings = np.zeros((30, 400))
    eff = en.effective_noise_one_run(scores, members, noise_multiplier=2.0, sample_rate=0.01, steps=100,
                                     delta=1e-5, readings=readings)
    assert eff.details["decided_by"] == "noise" and eff.details["noise_test"]["upper"] == 0.0
    assert eff.noise_multiplier == 0.45 and eff.details["floor"] == 0.45 and math.isfinite(eff.epsilon)


def test_readings_must_match_the_canaries():
    scores, members, readings = _run(SIGMA8, 7, steps=20)
    with pytest.raises(InputError, match="one column per canary"):
        effective_noise_one_run(scores, members, noise_multiplier=SIGMA8, sample_rate=0.01, steps=20, delta=1e-5,
                                readings=readings[:, :-1])


def test_multi_run_counts_with_readings_reach_the_claim_and_agree_with_the_event():
    """Counts of 300 + 300 runs at claimed epsilon 2 (each run's canary read over 1,000 steps)
    and the readings of the 300 runs without it: the noise test sets sigma_eff within a
    percent of the truth, and counts_reject_noise_level agrees with the search."""
    from audit.stats.effective_noise import counts_reject_noise_level, effective_noise_counts

    rng = np.random.default_rng(8)
    absent = rng.normal(0.0, SIGMA2, (1000, 300))
    same = dict(noise_multiplier=SIGMA2, sample_rate=0.01, steps=1000, readings=absent)
    eff = effective_noise_counts(60, 240, 45, 255, delta=1e-5, **same)
    assert eff.details["decided_by"] == "noise" and SIGMA2 < eff.noise_multiplier < 1.01 * SIGMA2
    assert 0.9 * 2 < eff.epsilon < 2
    assert counts_reject_noise_level(eff.noise_multiplier, 60, 240, 45, 255, **same)
    assert not counts_reject_noise_level(0.999 * eff.noise_multiplier, 60, 240, 45, 255, **same)
