"""Tests for trainers.data: shipped datasets, user files, deterministic splits."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from audit.errors import InputError
from trainers import data


def test_registry_lists_shipped_datasets():
    assert {"randhie", "fair", "purchase", "digits"} <= set(data.LOADERS)
    with pytest.raises(InputError, match="unknown dataset 'nope'"):
        data.load_dataset("nope", seed=0)
    with pytest.raises(InputError, match=r"dataset 'fair' got size options \['rows'\]; expected some of \['n'\]"):
        data.load_dataset("fair", seed=0, rows=10)


def test_randhie_labels_are_binned_mdvis():
    from statsmodels.datasets import randhie

    frame = randhie.load_pandas().data
    ds = data.load_dataset("randhie", seed=0)
    assert ds.x.shape == (20190, 9) and ds.x.dtype == np.float32
    mdvis = frame["mdvis"].to_numpy()
    # naive binning written out by hand: 0 | 1-2 | 3-5 | 6+
    expected = np.where(mdvis < 1, 0, np.where(mdvis < 3, 1, np.where(mdvis < 6, 2, 3)))
    np.testing.assert_array_equal(ds.y, expected)
    assert ds.n_classes == 4
    np.testing.assert_allclose(ds.x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x.std(axis=0), 1, atol=1e-4)


def test_fair_label_is_any_affair():
    from statsmodels.datasets import fair

    frame = fair.load_pandas().data
    ds = data.load_dataset("fair", seed=0)
    assert len(ds) == 6366 and ds.n_classes == 2 and ds.x.shape[1] == 8
    assert ds.y.sum() == int((frame["affairs"] > 0).sum())


def test_subsample_is_seeded():
    a = data.load_dataset("fair", seed=3, n=500)
    b = data.load_dataset("fair", seed=3, n=500)
    c = data.load_dataset("fair", seed=4, n=500)
    assert len(a) == 500
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    with pytest.raises(InputError, match="n=0"):
        data.load_dataset("fair", seed=3, n=0)


def test_purchase_flip_rate_and_prototypes():
    ds = data.load_dataset("purchase", seed=1, n=2000, n_features=600, n_classes=10, flip_prob=0.1)
    assert ds.x.shape == (2000, 600) and set(np.unique(ds.x)) <= {0.0, 1.0}
    # the majority vote within a class recovers its prototype; distance to it ~ Binomial(600, 0.1)
    dist = []
    for c in range(10):
        xc = ds.x[ds.y == c]
        proto = xc.mean(axis=0) > 0.5
        dist.append(np.abs(xc - proto).sum(axis=1))
    dist = np.concatenate(dist)
    assert abs(dist.mean() - 60.0) < 1.5
    assert abs(dist.var() - 54.0) < 8.0
    with pytest.raises(InputError, match="flip_prob"):
        data.make_purchase(seed=0, n=10, flip_prob=1.5)


def test_digits_shape():
    ds = data.load_dataset("digits", seed=0, n=300)
    assert ds.x.shape == (300, 1, 8, 8) and ds.in_shape == (1, 8, 8)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0 and ds.n_classes == 10


@settings(max_examples=25, deadline=None)
@given(pool=st.integers(1, 40), pop=st.integers(0, 40), test=st.integers(0, 40), seed=st.integers(0, 2**31))
def test_splits_disjoint_and_deterministic(pool, pop, test, seed):
    ds = data.make_purchase(seed=0, n=150, n_features=5, n_classes=3)
    s = data.split_dataset(ds, pool=pool, population=pop, test=test, seed=seed)
    t = data.split_dataset(ds, pool=pool, population=pop, test=test, seed=seed)
    idx = np.concatenate([s.pool_index, s.population_index, s.test_index])
    assert len(np.unique(idx)) == pool + pop + test
    np.testing.assert_array_equal(s.pool_index, t.pool_index)
    np.testing.assert_array_equal(s.pool.x, ds.x[s.pool_index])
    np.testing.assert_array_equal(s.test.y, ds.y[s.test_index])


def test_split_too_large():
    ds = data.make_purchase(seed=0, n=50, n_features=5, n_classes=3)
    with pytest.raises(InputError, match="exceeds the 50 records"):
        data.split_dataset(ds, pool=30, population=20, test=1, seed=0)


@pytest.fixture
def table():
    return pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0, 1, 0, 1], "lab": ["x", "y", "x", "y"]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_user_data_formats(tmp_path, table, suffix):
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        table.to_csv(path, index=False)
    elif suffix == ".parquet":
        table.to_parquet(path)
    else:
        np.savez(path, a=table["a"].to_numpy(), b=table["b"].to_numpy(), lab=table["lab"].to_numpy().astype(str))
    ds = data.load_user_data(path, features=["a", "b"], label="lab")
    np.testing.assert_array_equal(ds.y, [0, 1, 0, 1])
    a = np.array([1, 2, 3, 4.0])
    np.testing.assert_allclose(ds.x[:, 0], (a - a.mean()) / a.std(), rtol=1e-6)
    assert ds.n_classes == 2 and ds.feature_names == ("a", "b")


def test_user_data_errors(tmp_path, table):
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"missing columns \['zz'\]"):
        data.load_user_data(path, features=["a", "zz"], label="lab")
    with pytest.raises(InputError, match="'lab' is non-numeric"):
        data.load_user_data(path, features=["a", "lab"], label="b")
    nan = table.copy()
    nan.loc[2, "a"] = np.nan
    nan.to_csv(path, index=False)
    with pytest.raises(InputError, match="NaN or infinite values \\(first at row 2\\)"):
        data.load_user_data(path, features=["a"], label="lab")
    single = table.assign(lab="x")
    single.to_csv(path, index=False)
    with pytest.raises(InputError, match="single class"):
        data.load_user_data(path, features=["a"], label="lab")
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        data.load_user_data(empty, features=["a"], label="lab")
    header = tmp_path / "h.csv"
    header.write_text("a,lab\n")
    with pytest.raises(InputError, match="no rows"):
        data.load_user_data(header, features=["a"], label="lab")
    with pytest.raises(InputError, match="unsupported extension"):
        (tmp_path / "t.txt").write_text("a")
        data.load_user_data(tmp_path / "t.txt", features=["a"], label="lab")
    obj = tmp_path / "o.npz"
    np.savez(obj, a=np.array([1, "x", None], dtype=object), lab=np.array([0, 1, 0]))
    with pytest.raises(InputError, match="pickled objects"):
        data.load_user_data(obj, features=["a"], label="lab")


def test_user_data_all_other_columns(tmp_path, table):
    path = tmp_path / "t.csv"
    table[["a", "lab", "b"]].to_csv(path, index=False)
    ds = data.load_user_data(path, features=None, label="lab", standardise_features=False)
    assert ds.feature_names == ("a", "b")
    np.testing.assert_array_equal(ds.x, table[["a", "b"]].to_numpy(np.float32))
    with pytest.raises(InputError, match=r"missing columns \['nolabel'\]"):
        data.load_user_data(path, features=None, label="nolabel")
    only = tmp_path / "only.npz"
    np.savez(only, lab=np.array([0, 1]))
    with pytest.raises(InputError, match="no feature columns"):
        data.load_user_data(only, features=None, label="lab")
