"""Poisson sampling: rate (statistical, stated failure probability), independence of
model streams, and equality with Opacus' sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from scipy import stats

from audit.errors import InputError
from trainers.fast import Subsets, poisson_batch

torch.set_num_threads(1)

ALPHA = 1e-6
"""Each statistical assertion below fails for a correct sampler with probability at most
ALPHA (asymptotically for the chi-square and correlation checks); the rate test, with 7
such assertions, fails with probability at most 7e-6."""


def test_subsets_from_keep():
    keep = torch.tensor([[True, False, True, True], [False, True, False, False]])
    s = Subsets.from_keep(keep)
    assert s.counts.tolist() == [3, 1]
    assert s.members[0].tolist() == [0, 2, 3]
    assert s.members[1, :1].tolist() == [1]
    torch.testing.assert_close(s.sample_rates(1), torch.tensor([1 / 3, 1.0], dtype=torch.float64))
    with pytest.raises(InputError, match="expected_batch_size=2"):
        s.sample_rates(2)
    with pytest.raises(InputError, match="keep"):
        Subsets.from_keep(keep.int())


def test_inclusion_rate_and_batch_sizes():
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(2, 300, generator=g) < 0.5
    keep[1] = ~keep[0]
    subsets = Subsets.from_keep(keep)
    rates = subsets.sample_rates(15)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    steps = 3000
    counts = torch.zeros(2, 300, dtype=torch.long)
    sizes = []
    for _ in range(steps):
        b = poisson_batch(subsets, rates, gens)
        counts[0].index_add_(0, b.index[0][b.mask[0]], torch.ones(int(b.sizes[0]), dtype=torch.long))
        counts[1].index_add_(0, b.index[1][b.mask[1]], torch.ones(int(b.sizes[1]), dtype=torch.long))
        sizes.append(b.sizes)
        assert (b.index[b.mask].unique(return_counts=True)[1] <= 2).all()
    assert (counts[~keep] == 0).all(), "a record outside a model's subset was sampled"
    sizes = torch.stack(sizes)
    for k in range(2):
        m, q = int(subsets.counts[k]), float(rates[k])
        # total inclusions ~ Binomial(steps * m, q)
        assert stats.binomtest(int(counts[k].sum()), steps * m, q).pvalue > ALPHA
        # each record ~ Binomial(steps, q): Bonferroni over records
        per = counts[k][keep[k]].numpy()
        p = np.minimum(1, 2 * np.minimum(stats.binom.cdf(per, steps, q), stats.binom.sf(per - 1, steps, q)))
        assert p.min() > ALPHA / m
        # batch sizes ~ Binomial(m, q): chi-square goodness of fit on binned sizes
        observed = np.bincount(sizes[:, k].numpy(), minlength=m + 1)
        lo, hi = int(stats.binom.ppf(0.01, m, q)), int(stats.binom.ppf(0.99, m, q))
        obs = np.r_[observed[:lo].sum(), observed[lo : hi + 1], observed[hi + 1 :].sum()]
        exp = steps * np.r_[stats.binom.cdf(lo - 1, m, q), stats.binom.pmf(np.arange(lo, hi + 1), m, q), stats.binom.sf(hi, m, q)]
        assert stats.chisquare(obs, exp).pvalue > ALPHA
    # models' draws are independent: correlation of batch sizes near 0
    r = np.corrcoef(sizes[:, 0].numpy(), sizes[:, 1].numpy())[0, 1]
    assert abs(r) < stats.norm.isf(ALPHA / 2) / np.sqrt(steps)


def test_sampler_is_a_wrong_rate_detector():
    """The rate test above rejects a sampler with rate 1.1 q (guards the test's power)."""
    m, q, steps = 150, 0.1, 3000
    g = torch.Generator().manual_seed(3)
    total = int(sum((torch.rand(m, generator=g) < 1.1 * q).sum() for _ in range(steps)))
    assert stats.binomtest(total, steps * m, q).pvalue < ALPHA


def test_same_draws_as_opacus_sampler():
    keep = torch.zeros(1, 50, dtype=torch.bool)
    keep[0, ::2] = True
    subsets = Subsets.from_keep(keep)
    rates = subsets.sample_rates(5)
    g = torch.Generator().manual_seed(4)
    ours = []
    for _ in range(4):
        b = poisson_batch(subsets, rates, [g])
        ours.append(b.index[0][b.mask[0]].tolist())
    sampler = UniformWithReplacementSampler(
        num_samples=25, sample_rate=float(rates[0]), generator=torch.Generator().manual_seed(4), steps=4
    )
    theirs = [[2 * i for i in batch] for batch in sampler]
    assert ours == theirs


def test_empty_batches_are_padded_to_one_masked_row():
    subsets = Subsets.from_keep(torch.ones(2, 5, dtype=torch.bool))
    b = poisson_batch(subsets, torch.zeros(2, dtype=torch.float64), [torch.Generator(), torch.Generator()])
    assert b.index.shape == (2, 1) and not b.mask.any()


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _naive_draws(subsets, rates, generators):
    """The reference: model by model, ``torch.rand(m_k) < q_k`` against a Python float
    (Opacus' ``UniformWithReplacementSampler``), the subset's records where it holds."""
    picked = []
    for k, (g, m, q) in enumerate(zip(generators, subsets.counts.tolist(), rates.tolist())):
        picked.append(subsets.members[k, :m][torch.rand(m, generator=g) < q])
    return picked


@pytest.mark.parametrize("seed", range(4))
def test_ragged_draws_are_the_padded_draws(seed):
    """``draw_ragged`` (the trainer's) makes the naive per-model draws (Opacus' sampler),
    for subsets of different sizes, over several steps with one kept buffer of uniforms."""
    from trainers.fast.sampling import draw_ragged, empty_uniforms

    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(5, 300, generator=g) < torch.rand(5, 1, generator=g).clamp(min=0.2)
    subsets = Subsets.from_keep(keep)
    rates = subsets.sample_rates(20)
    a, b = _gens(range(5)), _gens(range(5))
    uniforms = empty_uniforms(subsets)
    for _ in range(6):
        index, counts = draw_ragged(subsets, rates, a, uniforms)
        picked = _naive_draws(subsets, rates, b)
        assert counts == tuple(len(p) for p in picked)
        assert torch.equal(index, torch.cat(picked))


def test_ragged_draws_compare_in_float32_as_opacus_sampler():
    """A rate just above a drawn uniform u (float32): ``torch.rand(m) < q`` compares in
    float32, where u < q is false; comparing in float64 would include the record."""
    from trainers.fast.sampling import draw_ragged

    subsets = Subsets.from_keep(torch.ones(1, 40, dtype=torch.bool))
    u = torch.rand(40, generator=torch.Generator().manual_seed(3))
    j = int(torch.argmin((u - 0.5).abs()))
    rates = torch.tensor([float(u[j]) + 1e-12], dtype=torch.float64)
    assert float(u[j]) < float(rates[0])  # in float64 the record is in
    index, _ = draw_ragged(subsets, rates, _gens([3]))
    assert torch.equal(index, torch.cat(_naive_draws(subsets, rates, _gens([3]))))
    assert j not in index.tolist()


def test_ragged_draws_never_reach_beyond_a_subset():
    """Rate 1 takes a model's whole subset and nothing of the padding of ``members``
    (which holds records outside the subset), for subsets of different sizes."""
    from trainers.fast.sampling import draw_ragged

    keep = torch.zeros(2, 10, dtype=torch.bool)
    keep[0, :3] = True
    keep[1, 4:] = True
    subsets = Subsets.from_keep(keep)
    index, counts = draw_ragged(subsets, torch.ones(2, dtype=torch.float64), _gens([0, 1]))
    assert counts == (3, 6) and index.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
