"""The published bugs of ``trainers.published_bugs``: each faulty piece against its closed form and
against the installed release it reproduces (Opacus, torch's sampler, dp_accounting)."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest

from trainers import published_bugs as pb


def _make_private(n: int, batch_size: int, *, sampler=None, poisson: bool = True):
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    logging.getLogger("opacus").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    loader = DataLoader(TensorDataset(torch.zeros(n, 3), torch.zeros(n, 1)), batch_size=batch_size, sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PrivacyEngine().make_private(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                            data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
                                            poisson_sampling=poisson)


@pytest.mark.parametrize("n,batch_size", [(2, 8), (3, 8), (7, 4), (8, 4), (99, 10), (100, 10), (1001, 64)])
def test_normaliser_and_rate_match_the_installed_opacus(n, batch_size):
    _, optimizer, loader = _make_private(n, batch_size)
    assert optimizer.expected_batch_size == pb.opacus_expected_batch_size(n, batch_size)
    assert loader.sample_rate == pytest.approx(pb.opacus_sample_rate(n, batch_size))


def test_normaliser_depends_on_the_dataset_size_in_the_audited_designs():
    # #571: 2 vs 3 records, q = 1; #819: 7 vs 8 records, q = 1/2 in both
    assert (pb.opacus_expected_batch_size(2, 8), pb.opacus_expected_batch_size(3, 8)) == (2, 3)
    assert pb.opacus_sample_rate(7, 4) == pb.opacus_sample_rate(8, 4) == 0.5
    assert (pb.opacus_expected_batch_size(7, 4), pb.opacus_expected_batch_size(8, 4)) == (3, 4)


@pytest.mark.parametrize("fixed,expected", [(False, 1 / 3), (True, 1 / 8)])
def test_installed_opacus_step_is_the_simulated_one(fixed, expected):
    """Noise-free, the installed Opacus' update on the #571 dataset is the target's clipped gradient
    over the normaliser: int(3 q) = 3 as shipped, the public batch size 8 with the fix."""
    r1 = pb.opacus_571_release(1, sigma=0.0, runs=2, seed=3, probes=4, fixed=fixed)
    r0 = pb.opacus_571_release(0, sigma=0.0, runs=2, seed=3, probes=4, fixed=fixed)
    np.testing.assert_allclose(r1[:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(r1[:, 1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(r0, 0.0, atol=1e-12)


def test_installed_opacus_noise_scale_is_sigma_c_over_the_normaliser():
    r0 = pb.opacus_571_release(0, sigma=1.0, runs=60, seed=5, probes=64)
    r1 = pb.opacus_571_release(1, sigma=1.0, runs=60, seed=7, probes=64)
    # 60 x 64 readings each: the standard deviation is within a few percent of 1/2 and 1/3
    assert r0[:, 1:].std() == pytest.approx(1 / 2, rel=0.05)
    assert r1[:, 1:].std() == pytest.approx(1 / 3, rel=0.05)
    sim = pb.normaliser_release(2, 8, True, probes=64, sigma=1.0, c=1.0, runs=4000, rng=np.random.default_rng(0),
                                fixed=False)
    assert sim[:, 1:].std() == pytest.approx(1 / 3, rel=0.01)
    assert sim[:, 0].mean() == pytest.approx(1 / 3, abs=0.02)


def test_issue_813_rate_in_the_reported_setting():
    """The report's code (a WeightedRandomSampler of 128 draws, batch 16) on a 10,000-record dataset:
    Opacus replaces the sampler and accounts q = 1/len(loader) = 1/8, not 16/10,000."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    sampler = WeightedRandomSampler(torch.ones(10_000), num_samples=128, replacement=True)
    _, optimizer, loader = _make_private(10_000, 16, sampler=sampler)
    assert loader.sample_rate == pytest.approx(1 / 8)
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    assert isinstance(loader.batch_sampler, UniformWithReplacementSampler)  # the user's weights are gone
    # kept (poisson_sampling=False): the user's weighted sampler stays, the accountant still gets 1/len(loader)
    sampler = WeightedRandomSampler(torch.ones(100), num_samples=100, replacement=True)
    _, _, kept = _make_private(100, 10, sampler=sampler, poisson=False)
    assert isinstance(kept.sampler, WeightedRandomSampler)
    assert 1 / len(kept) == pytest.approx(pb.opacus_sample_rate(100, 10))


def test_weighted_sampler_inclusion_rate_against_torch():
    """The lone class-1 record under class-balancing weights: each draw picks it with probability 1/2,
    so a batch of 10 holds it with probability 1 - 2^-10 and 5 times on average, against q = 0.1 accounted."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    labels = np.r_[np.zeros(99, dtype=int), 1]
    w = pb.class_balancing_weights(labels)
    np.testing.assert_allclose(w[:99], 1 / 99)
    assert w[99] == 1.0
    assert pb.weighted_draw_probability(w, 99, 10) == pytest.approx(1 - 2.0**-10)
    draws = np.array(list(WeightedRandomSampler(torch.as_tensor(w), num_samples=20_000, replacement=True,
                                                generator=torch.Generator().manual_seed(0))))
    assert np.mean(draws == 99) == pytest.approx(0.5, abs=0.01)
    sim = pb.weighted_sampler_release(99, 10, True, sigma=0.0, c=1.0, runs=20_000, rng=np.random.default_rng(1),
                                      fixed=False)
    assert (sim[:, 0] * 10).mean() == pytest.approx(5.0, abs=0.05)  # multiplicity, normaliser int(100 * 0.1) = 10
    poisson = pb.weighted_sampler_release(99, 10, True, sigma=0.0, c=1.0, runs=20_000, rng=np.random.default_rng(2),
                                          fixed=True)
    assert np.mean(poisson[:, 0] > 0) == pytest.approx(0.1, abs=0.01)


def test_microbatching_doubles_the_sensitivity():
    c = 1.0
    background = np.array([[-1000.0, 0.0]])
    with_target = np.vstack([background, [[3000.0, 0.0]]])
    moved = pb.microbatch_sum(with_target, 1, c) - pb.microbatch_sum(background, 1, c)
    assert np.linalg.norm(moved) == pytest.approx(2 * c, rel=1e-6)
    per_example = pb.clip_rows(with_target, c).sum(axis=0) - pb.clip_rows(background, c).sum(axis=0)
    assert np.linalg.norm(per_example) == pytest.approx(c, rel=1e-6)
    # one microbatch per record is per-example clipping
    np.testing.assert_allclose(pb.microbatch_sum(with_target, 2, c), pb.clip_rows(with_target, c).sum(axis=0))
    with pytest.raises(ValueError):
        pb.microbatch_sum(np.zeros((3, 2)), 2, c)
    r0 = pb.microbatch_release(False, sigma=0.0, c=c, runs=1, rng=np.random.default_rng(0), fixed=False)
    r1 = pb.microbatch_release(True, sigma=0.0, c=c, runs=1, rng=np.random.default_rng(0), fixed=False)
    assert r1[0, 0] - r0[0, 0] == pytest.approx(2 * c, rel=1e-6)


def test_clipping_is_opacus_clipping():
    g = np.array([[3.0, 4.0], [0.1, 0.0]])
    np.testing.assert_allclose(pb.clip_rows(g, 1.0), [[3 / (5 + 1e-6), 4 / (5 + 1e-6)], [0.1, 0.0]])


def test_dp_accounting_replace_one_uses_the_add_remove_multiplier():
    """dp_accounting 0.6.0 (#378): REPLACE_ONE gives the same epsilon as ADD_OR_REMOVE_ONE for a Gaussian
    event, although the sensitivity doubles; the fix (sigma/2) gives the add/remove epsilon at sigma/2."""
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    def add_remove(sigma):
        a = RdpAccountant()
        a.compose(dp_accounting.GaussianDpEvent(sigma))
        return a.get_epsilon(pb.DELTA)

    for sigma in (0.8, 2.0, 5.0):
        assert pb.dp_accounting_replace_one_epsilon(sigma) == pytest.approx(add_remove(sigma), rel=1e-9)
        assert pb.dp_accounting_replace_one_epsilon(sigma, fixed=True) == pytest.approx(add_remove(sigma / 2), rel=1e-9)
        assert pb.dp_accounting_replace_one_epsilon(sigma, fixed=True) > pb.dp_accounting_replace_one_epsilon(sigma)
    r0 = pb.replace_one_release(False, sigma=0.0, c=1.0, runs=1, rng=np.random.default_rng(0))
    r1 = pb.replace_one_release(True, sigma=0.0, c=1.0, runs=1, rng=np.random.default_rng(0))
    assert r1[0, 0] - r0[0, 0] == pytest.approx(2.0, rel=1e-6)


def test_tf_privacy_accounting_is_the_subsampled_gaussian_rdp():
    # the Gaussian's RDP is alpha / (2 sigma^2); the microbatched statement halves sigma
    from audit.stats import claimed_epsilon

    sigma, q, steps = 1.1, 0.01, 1000
    eps = pb.tf_privacy_epsilon(sigma, q, steps)
    opacus_rdp = claimed_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=pb.DELTA,
                                 accountant="rdp").value
    assert eps == pytest.approx(opacus_rdp, rel=0.02)  # two implementations of the same RDP, different orders
    assert pb.tf_privacy_epsilon(sigma, q, steps, microbatched=True) == pytest.approx(
        pb.tf_privacy_epsilon(sigma / 2, q, steps), rel=1e-12)


def test_shuffled_epoch_structure():
    b, t = 10, 5
    w0 = pb.epoch_release(t, b, False, sigma=0.0, c=1.0, runs=4, rng=np.random.default_rng(0), shuffled=True)
    np.testing.assert_allclose(w0, np.tile([-b] * (t - 1) + [-(b - 1)], (4, 1)))  # the last batch is one short
    w1 = pb.epoch_release(t, b, True, sigma=0.0, c=1.0, runs=1000, rng=np.random.default_rng(1), shuffled=True)
    assert np.all(np.sum(w1 == -(b - 2), axis=1) == 1) and np.all(np.sum(w1 == -b, axis=1) == t - 1)
    assert np.bincount(np.argmax(w1, axis=1), minlength=t).min() > 150  # the target's batch is uniform
    p1 = pb.epoch_release(t, b, True, sigma=0.0, c=1.0, runs=4000, rng=np.random.default_rng(2), shuffled=False)
    # Poisson: each step holds Binomial(t b - 1, 1/t) background records and the target with probability 1/t
    assert p1.mean() == pytest.approx(-(t * b - 1) / t + 1 / t, abs=0.05)


def test_calibrate_inverts_the_claim():
    sigma = pb.calibrate(lambda s: pb.dp_accounting_replace_one_epsilon(s), 2.0)
    assert pb.dp_accounting_replace_one_epsilon(sigma) == pytest.approx(2.0, abs=1e-4)


def test_every_case_has_a_correct_twin_and_scores_both_worlds():
    cases = pb.cases()
    bugs = {c.bug for c in cases}
    assert bugs == {c.bug for c in cases if c.correct} == {c.bug for c in cases if not c.correct}
    rng = np.random.default_rng(0)
    for case in cases:
        for world in (0, 1):
            scores = case.scores(world, 1.0, 50, rng)
            assert scores and all(v.shape == (50,) and np.all(np.isfinite(v)) for v in scores.values())
        assert math.isfinite(case.claim(2.0)) and case.claim(2.0) > 0
