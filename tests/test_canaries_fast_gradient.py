"""Dirac gradient canaries in the fast trainer (canaries.fast_gradient)."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from audit.errors import InputError
from canaries.fast_gradient import canary_coords, train_with_canaries
from canaries.iterate_scores import likelihood_ratio
from experiments import yardstick
from trainers.fast import DPSGDConfig, MLPShape, fault

SHAPE = MLPShape((4, 3, 2))


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64) + (2 * y[:, None] - 1)
    return x, y


def _run(config, *, n=40, k=2, m=7, steps=20, seed=0, **kwargs):
    x, y = _data(n)
    keep = torch.ones(k, n, dtype=torch.bool)
    return train_with_canaries(
        x, y, keep, SHAPE, config, n_canaries=m, steps=steps,
        generator=torch.Generator().manual_seed(seed), canary_generator=torch.Generator().manual_seed(seed + 100), **kwargs,
    )


def test_coordinates_are_untouched_first_layer_weights():
    coords = canary_coords(SHAPE, 5, row=1)
    # W_0 of the widened shape is [3, 4 + 5], row-major: row 1 starts at 9, canaries after the 4 real columns
    assert coords.tolist() == [9 + 4 + i for i in range(5)]


@pytest.mark.parametrize("c", [0.5, 2.0])
def test_present_canary_is_clipped_to_c(c):
    # q = 1 (expected batch = whole subset): every included canary is present at every step
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=c, noise_multiplier=0.0, expected_batch_size=40)
    run = _run(cfg, steps=3)
    clipped = c * (1000 * c) / (1000 * c + 1e-6)  # Opacus' factor min(1, C / (||g|| + 1e-6))
    for k, res in enumerate(run.models):
        assert res.sample_rate == 1.0
        assert res.presence.sum(0).tolist() == (3 * res.members).tolist()
        np.testing.assert_allclose(res.readings, np.broadcast_to(clipped * res.members, (3, 7)), rtol=1e-12, atol=0)
        # the canary rows count in the batch like real examples
        assert run.train.batch_sizes[:, k].tolist() == [40 + int(res.members.sum())] * 3


def test_noiseless_readings_are_c_times_presence():
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=1.5, noise_multiplier=0.0, expected_batch_size=8)
    run = _run(cfg, steps=60)
    for res in run.models:
        assert res.sample_rate == pytest.approx(0.2)
        assert res.presence.any() and not res.presence[:, ~res.members].any()
        np.testing.assert_allclose(res.readings, 1.5 * res.presence, rtol=1e-9, atol=0)
        np.testing.assert_allclose(res.all_iterates, 1.5 * res.presence.sum(0), rtol=1e-9)


def test_missing_clipping_shows_the_inserted_norm():
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=1.5, noise_multiplier=0.0, expected_batch_size=8, spec=fault("no_clipping"))
    run = _run(cfg, steps=60)
    for res in run.models:
        assert res.presence.any()
        np.testing.assert_allclose(res.readings, 1000 * 1.5 * res.presence, rtol=1e-12, atol=0)


def test_tenfold_noise_cut_shows_in_reading_spread():
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=2.0, expected_batch_size=8)
    res = _run(cfg, m=200, steps=100, k=1).models[0]
    cut = _run(dataclasses.replace(cfg, spec=dataclasses.replace(cfg.spec, noise_factor=0.1)), m=200, steps=100, k=1).models[0]
    absent = ~res.presence
    # about 18000 readings without the canary, std sigma C = 2 (correct) or 0.2 (cut); the sample
    # std's relative sd is 1 / sqrt(2 n) < 0.53%, so 3% is > 5.6 sd: fails w.p. < 1e-7 each
    assert absent.sum() > 17000 and (~cut.presence).sum() > 17000
    assert res.readings[absent].std() == pytest.approx(2.0, rel=0.03)
    assert cut.readings[~cut.presence].std() == pytest.approx(0.2, rel=0.03)


def test_presence_follows_the_poisson_rate():
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=0.0, expected_batch_size=4)
    x, y = _data(40)
    keep = torch.zeros(2, 40, dtype=torch.bool)
    keep[0, :40] = True  # q = 0.1
    keep[1, :10] = True  # q = 0.4
    run = train_with_canaries(
        x, y, keep, SHAPE, cfg, n_canaries=50, steps=200,
        generator=torch.Generator().manual_seed(3), canary_generator=torch.Generator().manual_seed(4),
    )
    for res, q in zip(run.models, (0.1, 0.4)):
        assert res.sample_rate == pytest.approx(q)
        trials = 200 * int(res.members.sum())
        hits = int(res.presence[:, res.members].sum())
        # a correct sampler fails this two-sided binomial test with probability 1e-6
        assert stats.binomtest(hits, trials, q).pvalue > 1e-6
        assert not res.presence[:, ~res.members].any()
        # presence is independent of the step: first and second half agree (same failure probability)
        a, b = res.presence[:100, res.members].sum(), res.presence[100:, res.members].sum()
        assert stats.binomtest(int(a), int(a + b), 0.5).pvalue > 1e-6


def test_k_models_equal_single_model_runs():
    cfg = DPSGDConfig(lr=0.2, max_grad_norm=1.0, noise_multiplier=0.7, expected_batch_size=5)
    x, y = _data(30)
    keep = torch.rand(3, 30, generator=torch.Generator().manual_seed(9)) < 0.7

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    many = train_with_canaries(x, y, keep, SHAPE, cfg, n_canaries=6, steps=25,
                               generator=gens([1, 2, 3]), canary_generator=gens([11, 12, 13]))
    for k, (s, cs) in enumerate(zip([1, 2, 3], [11, 12, 13])):
        one = train_with_canaries(x, y, keep[k : k + 1], SHAPE, cfg, n_canaries=6, steps=25,
                                  generator=gens([s]), canary_generator=gens([cs])).models[0]
        a = many.models[k]
        np.testing.assert_array_equal(a.members, one.members)
        np.testing.assert_array_equal(a.presence, one.presence)
        np.testing.assert_allclose(a.readings, one.readings, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a.likelihood_ratio, one.likelihood_ratio, rtol=1e-10, atol=1e-10)
        assert a.sample_rate == one.sample_rate


def test_statistics_match_iterate_scores():
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=2.0, noise_multiplier=0.9, expected_batch_size=8)
    res = _run(cfg).models[1]
    np.testing.assert_allclose(
        res.likelihood_ratio,
        likelihood_ratio(res.readings, sample_rate=0.2, noise_multiplier=0.9, max_grad_norm=2.0),
        rtol=1e-12,
    )
    np.testing.assert_allclose(res.all_iterates, res.readings.sum(0), rtol=1e-12)


def test_llr_distribution_matches_the_yardstick():
    """Fast-trainer canaries against experiments.yardstick.simulate with the same (m, q, T, sigma).

    Two-sample KS tests on the LLR of members and of non-members, and on the
    non-members' readings; each fails for equal distributions with probability 1e-4."""
    m, steps, q, sigma = 400, 150, 0.05, 0.8
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=sigma, expected_batch_size=10)
    x, y = _data(200)
    run = train_with_canaries(
        x.float(), y, torch.ones(1, 200, dtype=torch.bool), SHAPE, cfg, n_canaries=m, steps=steps,
        generator=torch.Generator().manual_seed(5), canary_generator=torch.Generator().manual_seed(6),
    )
    fast = run.models[0]
    assert fast.sample_rate == pytest.approx(q)
    sim = yardstick.simulate(n_canaries=m, steps=steps, sample_rate=q, noise_multiplier=sigma, rng=np.random.default_rng(7))
    for inside in (True, False):
        a, b = fast.likelihood_ratio[fast.members == inside], sim.llr[sim.members == inside]
        assert stats.ks_2samp(a, b).pvalue > 1e-4
    noise = fast.readings[:, ~fast.members].ravel()
    assert stats.kstest(noise, "norm", args=(0.0, sigma)).pvalue > 1e-4


def test_bad_inputs():
    cfg = DPSGDConfig(lr=0.1, max_grad_norm=1.0, noise_multiplier=0.0, expected_batch_size=8)
    with pytest.raises(InputError, match="members"):
        _run(cfg, members=np.ones((2, 3), dtype=bool))
    with pytest.raises(InputError, match="n_canaries"):
        _run(cfg, m=0)
    with pytest.raises(InputError, match="canary_generator"):
        x, y = _data(40)
        train_with_canaries(x, y, torch.ones(2, 40, dtype=torch.bool), SHAPE, cfg, n_canaries=3, steps=1,
                            generator=torch.Generator(), canary_generator=[torch.Generator()])
    with pytest.raises(InputError, match="row"):
        _run(cfg, row=3)


def test_yardstick_fast_quick(capsys, monkeypatch, tmp_path):
    from experiments import yardstick_fast

    monkeypatch.setattr(yardstick_fast, "RESULTS", tmp_path / "out.md")
    assert yardstick_fast.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| 8 | 0.5865 |" in out and "fast / yardstick" in out and "no_clipping" in out
    assert not (tmp_path / "out.md").exists()  # --quick prints only
    assert yardstick_fast.main(["--quick", "--seeds", "0"]) == 2
