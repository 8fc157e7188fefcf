"""Dirac-canary scores (canaries.iterate_scores) and the yardstick simulation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from audit.errors import InputError
from canaries.iterate_scores import all_iterates, likelihood_ratio
from experiments import yardstick


def _naive_llr(x, q, sigma, c):
    # Ratio of the mixture density to the null density, straight from the definition.
    s = sigma * c
    alt = q * stats.norm.pdf(x, loc=c, scale=s) + (1 - q) * stats.norm.pdf(x, loc=0.0, scale=s)
    null = stats.norm.pdf(x, loc=0.0, scale=s)
    return np.log(alt / null).sum(axis=0)


@pytest.mark.parametrize("q,sigma,c", [(0.01, 0.6, 1.0), (0.3, 1.5, 2.0), (1.0, 0.8, 0.5)])
def test_likelihood_ratio_matches_densities(q, sigma, c):
    x = stats.norm.ppf(np.linspace(0.01, 0.99, 60)).reshape(20, 3) * sigma * c + 0.3 * c
    np.testing.assert_allclose(
        likelihood_ratio(x, sample_rate=q, noise_multiplier=sigma, max_grad_norm=c), _naive_llr(x, q, sigma, c), rtol=1e-10
    )


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(st.floats(-50, 50), min_size=2, max_size=8),
    q=st.floats(1e-4, 0.999),
    sigma=st.floats(0.1, 5.0),
    c=st.floats(0.01, 10.0),
    bump=st.floats(1e-3, 10.0),
)
def test_likelihood_ratio_properties(x, q, sigma, c, bump):
    readings = np.array(x, dtype=np.float64)[:, None] * c
    llr = likelihood_ratio(readings, sample_rate=q, noise_multiplier=sigma, max_grad_norm=c)[0]
    # Each per-step ratio exceeds 1 - q, and a larger reading is more member-like.
    assert llr >= len(x) * np.log1p(-q) - 1e-9
    higher = readings.copy()
    higher[0] += bump * c
    assert likelihood_ratio(higher, sample_rate=q, noise_multiplier=sigma, max_grad_norm=c)[0] >= llr


def test_likelihood_ratio_is_stable_for_huge_readings():
    # exp((2xC - C^2)/(2 s^2)) overflows float64 here; log q + exponent is the exact limit.
    x = np.array([[1e4], [-1e4]])
    out = likelihood_ratio(x, sample_rate=0.01, noise_multiplier=0.5, max_grad_norm=1.0)
    expected = (np.log(0.01) + (2e4 - 1) / 0.5) + np.log1p(-0.01)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [expected], rtol=1e-12)


def test_likelihood_ratio_without_noise_is_the_limit():
    x = np.array([[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]])
    out = likelihood_ratio(x, sample_rate=0.1, noise_multiplier=0.0, max_grad_norm=1.0)
    np.testing.assert_allclose(out, [2 * np.log(0.9), np.inf, np.log(0.9)])


def test_likelihood_ratio_validation():
    x = np.zeros((3, 2))
    for kwargs in (
        dict(sample_rate=0.0, noise_multiplier=1.0, max_grad_norm=1.0),
        dict(sample_rate=1.5, noise_multiplier=1.0, max_grad_norm=1.0),
        dict(sample_rate=0.1, noise_multiplier=-1.0, max_grad_norm=1.0),
        dict(sample_rate=0.1, noise_multiplier=1.0, max_grad_norm=0.0),
    ):
        with pytest.raises(InputError):
            likelihood_ratio(x, **kwargs)
    with pytest.raises(InputError, match="steps, canaries"):
        all_iterates(np.zeros(3))


def test_all_iterates_is_the_sum_over_steps():
    x = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(all_iterates(x), [18.0, 22.0, 26.0])


def test_simulate_shapes_membership_and_reproducibility():
    run = yardstick.simulate(n_canaries=4000, steps=50, sample_rate=0.1, noise_multiplier=1.0, rng=np.random.default_rng(0))
    assert run.members.shape == run.llr.shape == run.total.shape == (4000,)
    # Bin(4000, 1/2) members; failure probability ~6e-7 at z = 5.
    assert abs(run.members.sum() - 2000) <= 5 * np.sqrt(1000)
    again = yardstick.simulate(n_canaries=4000, steps=50, sample_rate=0.1, noise_multiplier=1.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(run.llr, again.llr)
    # Sum of readings: non-members N(0, T sigma^2), members have mean T q C.
    t_stat = stats.ttest_ind(run.total[run.members], run.total[~run.members]).statistic
    assert t_stat > 5
    np.testing.assert_allclose(run.total[run.members].mean(), 50 * 0.1, atol=5 * np.sqrt(50 / 2000))
    np.testing.assert_allclose(run.total[~run.members].mean(), 0.0, atol=5 * np.sqrt(50 / 2000))


def test_simulate_null_llr_has_unit_mean_likelihood_ratio():
    # Under "not included" E[exp(per-step LLR)] = 1 exactly (a likelihood ratio integrates
    # to one); with one step and 200000 non-member draws the sample mean is within 5 SE.
    run = yardstick.simulate(n_canaries=400000, steps=1, sample_rate=0.3, noise_multiplier=2.0, rng=np.random.default_rng(1))
    lr = np.exp(run.llr[~run.members])
    assert abs(lr.mean() - 1.0) <= 5 * lr.std() / np.sqrt(lr.size)


def test_noise_for_epsilon_matches_opacus_accountant():
    from opacus.accountants import PRVAccountant

    sigma = yardstick.noise_for_epsilon(4.0, delta=1e-5, sample_rate=0.05, steps=100)
    acc = PRVAccountant()
    acc.history = [(sigma, 0.05, 100)]
    eps = acc.get_epsilon(delta=1e-5)
    assert 3.9 <= eps <= 4.0


def test_one_run_bound_on_simulation_is_valid_and_has_power():
    from audit.stats.one_run import epsilon_one_run_from_scores

    # q = 0.05, T = 100, eps = 4 -> sigma ~ 0.941 (checked above against the accountant).
    sigma = 0.941162109375
    bounds = []
    for seed in range(3):
        run = yardstick.simulate(
            n_canaries=1000, steps=100, sample_rate=0.05, noise_multiplier=sigma, rng=np.random.default_rng(seed)
        )
        bounds.append(epsilon_one_run_from_scores(run.llr, run.members, delta=1e-5).value)
    assert max(bounds) < 4.0
    assert min(bounds) > 0.3


def test_simulate_validation():
    kw = dict(n_canaries=10, steps=10, sample_rate=0.1, noise_multiplier=1.0, rng=np.random.default_rng(0))
    for bad in (dict(n_canaries=0), dict(steps=1.5), dict(sample_rate=0.0), dict(noise_multiplier=0.0), dict(rng=0)):
        with pytest.raises(InputError):
            yardstick.simulate(**{**kw, **bad})


@pytest.mark.slow
def test_yardstick_reference_setting():
    """m = 1000, T = 1000, q = 0.01, delta = 1e-5, eps = 8: the issue quotes 1.6 (1.1 to 2.2)."""
    rows = yardstick.run([8.0], seeds=5)
    assert 1.0 < rows[0].llr_bounds.mean() < 2.2
    assert rows[0].llr_bounds.max() < 8.0


def test_opacus_audit_runs_the_same_audit_through_dp_sgd():
    import torch

    torch.set_num_threads(1)
    run = yardstick.opacus_audit(n_canaries=200, steps=120, sample_rate=0.05, noise_multiplier=0.5, seed=3)
    assert run.steps == 120
    assert run.members.shape == run.llr.shape == run.total.shape == run.last_iterate.shape == (200,)
    # About 6 presences at reading C against noise 0.5 C per step: members stand out.
    auc = stats.mannwhitneyu(run.llr[run.members], run.llr[~run.members]).statistic / (
        run.members.sum() * (~run.members).sum()
    )
    assert auc > 0.9
    # Plain SGD on an unused slot: the last iterate is the all-iterates sum times lr / B.
    np.testing.assert_allclose(run.last_iterate, 0.5 / 50 * run.total, rtol=1e-4, atol=1e-6)


def test_format_table_lists_every_row():
    row = yardstick.YardstickRow(8.0, 0.5865, np.array([1.0, 2.0]), np.array([0.5, 0.7]))
    table = yardstick.format_table([row])
    assert "| 8 | 0.5865 | 1.50 (1.00 to 2.00) | 0.60 (0.50 to 0.70) |" in table
    assert "Opacus" not in table


@pytest.mark.slow
def test_quick_mode_prints_and_does_not_write(capsys):
    before = yardstick.RESULTS.stat().st_mtime_ns if yardstick.RESULTS.exists() else None
    assert yardstick.main(["--quick"]) == 0
    assert "| 8 |" in capsys.readouterr().out
    after = yardstick.RESULTS.stat().st_mtime_ns if yardstick.RESULTS.exists() else None
    assert before == after
