"""Inclusion designs: shapes, balance, independence, reproducibility, validation.

Statistical checks use fixed seeds, so they are deterministic; each states the
probability that it would fail for a correct design (two-sided normal approximation,
z = 5 -> about 6e-7).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from audit.errors import InputError
from canaries import designs

Z = 5.0  # two-sided failure probability 2 * norm.sf(5) ~ 5.7e-7 per check


def _within(observed, mean, var):
    return abs(observed - mean) <= Z * np.sqrt(var)


def test_one_run_is_balanced_bernoulli_half():
    keep = designs.one_run(64, 4000, np.random.default_rng(1))
    assert keep.shape == (64, 4000) and keep.dtype == bool
    n = keep.size
    assert _within(keep.sum(), n / 2, n / 4)
    # Each model's inclusion count is Bin(4000, 1/2): chi-square over the 64 models.
    counts = keep.sum(axis=1)
    chi2 = np.sum((counts - 2000) ** 2 / 1000)
    assert stats.chi2.sf(chi2, df=64) > 1e-6


def test_one_run_columns_and_rows_are_independent():
    keep = designs.one_run(200, 2000, np.random.default_rng(2))
    # Agreement between neighbouring records: for independent fair coins each agreement
    # is Bernoulli(1/2), independent over the disjoint pairs (0,1), (2,3), ...
    agree = keep[:, 0::2] == keep[:, 1::2]
    assert _within(agree.sum(), agree.size / 2, agree.size / 4)
    agree_models = keep[0::2, :] == keep[1::2, :]
    assert _within(agree_models.sum(), agree_models.size / 2, agree_models.size / 4)


def test_lira_balanced_every_record_in_exactly_half():
    keep = designs.lira_balanced(16, 5000, np.random.default_rng(3))
    assert keep.shape == (16, 5000) and keep.dtype == bool
    np.testing.assert_array_equal(keep.sum(axis=0), np.full(5000, 8))
    # Each model IN for each record with probability 1/2, independently across records.
    counts = keep.sum(axis=1)
    assert all(_within(c, 2500, 1250) for c in counts)


def test_lira_balanced_matches_reference_code():
    # Carlini et al.'s snippet, written out here, on the same generator stream.
    rng_ref = np.random.default_rng(7)
    ref = rng_ref.uniform(0, 1, size=(10, 300))
    order = ref.argsort(0)
    ref = order < 10 // 2
    np.testing.assert_array_equal(designs.lira_balanced(10, 300, np.random.default_rng(7)), ref)


def test_lira_balanced_records_are_independent():
    # For two independent columns the number of models where both are IN is
    # hypergeometric(M, M/2, M/2); over disjoint pairs the sum of counts is normal.
    m, n = 20, 4000
    keep = designs.lira_balanced(m, n, np.random.default_rng(4))
    both = (keep[:, 0::2] & keep[:, 1::2]).sum(axis=0)
    h = stats.hypergeom(m, m // 2, m // 2)
    pairs = both.size
    assert _within(both.sum(), pairs * h.mean(), pairs * h.var())


def test_lira_balanced_odd_models_uses_floor():
    keep = designs.lira_balanced(7, 50, np.random.default_rng(0))
    np.testing.assert_array_equal(keep.sum(axis=0), np.full(50, 3))


@settings(max_examples=30, deadline=None)
@given(n_models=st.integers(2, 40), n_records=st.integers(0, 60), seed=st.integers(0, 2**32 - 1))
def test_lira_balanced_property(n_models, n_records, seed):
    keep = designs.lira_balanced(n_models, n_records, np.random.default_rng(seed))
    assert keep.shape == (n_models, n_records)
    assert (keep.sum(axis=0) == n_models // 2).all()


def test_multi_run_includes_the_set_together_in_exactly_half():
    keep = designs.multi_run(10, 5, np.random.default_rng(5))
    assert keep.shape == (10, 5)
    assert (keep == keep[:, :1]).all()
    assert keep[:, 0].sum() == 5


def test_multi_run_choice_of_models_is_uniform():
    # Over 4000 seeds each model is IN with probability 1/2: Bin(4000, 1/2) per model.
    ins = np.stack([designs.multi_run(6, 1, np.random.default_rng(s))[:, 0] for s in range(4000)])
    assert (ins.sum(axis=1) == 3).all()
    assert all(_within(c, 2000, 1000) for c in ins.sum(axis=0))


def test_poisson_rate():
    keep = designs.poisson(50, 4000, np.random.default_rng(6), rate=0.01)
    n = keep.size
    assert _within(keep.sum(), n * 0.01, n * 0.01 * 0.99)
    assert not designs.poisson(3, 4, np.random.default_rng(0), rate=0.0).any()
    assert designs.poisson(3, 4, np.random.default_rng(0), rate=1.0).all()


@pytest.mark.parametrize("name", sorted(designs.DESIGNS))
def test_reproducible_from_seed(name):
    fn = designs.design(name)
    a = fn(12, 200, np.random.default_rng(11))
    b = fn(12, 200, np.random.default_rng(11))
    c = fn(12, 200, np.random.default_rng(12))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", sorted(designs.DESIGNS))
@pytest.mark.parametrize(
    "args",
    [
        (0, 5, np.random.default_rng(0)),
        (-1, 5, np.random.default_rng(0)),
        (2.5, 5, np.random.default_rng(0)),
        (True, 5, np.random.default_rng(0)),
        (4, -1, np.random.default_rng(0)),
        (4, 5, 123),
        (4, 5, np.random.RandomState(0)),
    ],
)
def test_invalid_inputs(name, args):
    with pytest.raises(InputError):
        designs.design(name)(*args)


def test_balanced_designs_need_two_models():
    for fn in (designs.lira_balanced, designs.multi_run):
        with pytest.raises(InputError, match="n_models=1"):
            fn(1, 5, np.random.default_rng(0))


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "0.5", None])
def test_poisson_rejects_bad_rate(rate):
    with pytest.raises(InputError, match="rate="):
        designs.poisson(2, 3, np.random.default_rng(0), rate=rate)


def test_unknown_design_name():
    with pytest.raises(InputError, match="design='nope'"):
        designs.design("nope")
