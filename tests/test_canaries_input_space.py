"""Input-space canaries do what they claim, checked against independent computations."""

import numpy as np
import pytest
from scipy import stats

from audit.errors import InputError
from canaries import input_space as ic


def _data(rng, n=500, d=8, classes=4):
    # Strongly correlated Gaussian features: a random mixing matrix with one tiny direction.
    mix = rng.normal(size=(d, d))
    x = rng.normal(size=(n, d)) @ mix
    y = rng.integers(0, classes, size=n)
    return x, y


def test_held_out_draws_distinct_pool_records():
    rng = np.random.default_rng(0)
    x, y = _data(rng)
    c = ic.held_out(x, y, 50, np.random.default_rng(1))
    assert c.kind == "held-out" and c.score == "lira" and len(c) == 50
    assert len(np.unique(c.source_index)) == 50
    np.testing.assert_array_equal(c.x, x[c.source_index])
    np.testing.assert_array_equal(c.y, y[c.source_index])
    again = ic.held_out(x, y, 50, np.random.default_rng(1))
    np.testing.assert_array_equal(again.source_index, c.source_index)


def test_held_out_rejects_more_than_pool():
    x, y = _data(np.random.default_rng(0), n=10)
    with pytest.raises(InputError, match="n=11"):
        ic.held_out(x, y, 11, np.random.default_rng(0))


def test_mislabeled_never_true_label_and_uniform_over_others():
    rng = np.random.default_rng(2)
    classes = 5
    x = rng.normal(size=(20000, 3))
    y = rng.integers(0, classes, size=20000)
    c = ic.mislabeled(x, y, 20000, np.random.default_rng(3), n_classes=classes)
    true = y[c.source_index]
    assert (c.y != true).all()
    np.testing.assert_array_equal(c.x, x[c.source_index])
    assert c.y.min() >= 0 and c.y.max() < classes
    # Given the true label, the wrong label is uniform over the other 4 classes:
    # chi-square of the (true, wrong) table, 20 cells, df = 5 * 3; failure prob 1e-6.
    table = np.zeros((classes, classes))
    np.add.at(table, (true, c.y), 1)
    expected = table.sum(axis=1, keepdims=True) / (classes - 1)
    off = ~np.eye(classes, dtype=bool)
    chi2 = ((table - expected)[off] ** 2 / np.broadcast_to(expected, table.shape)[off]).sum()
    assert stats.chi2.sf(chi2, df=classes * (classes - 2)) > 1e-6


def test_mislabeled_two_classes_flips():
    y = np.array([0, 1, 1, 0, 1])
    c = ic.mislabeled(np.zeros((5, 2)), y, 5, np.random.default_rng(0), n_classes=2)
    np.testing.assert_array_equal(c.y, 1 - y[c.source_index])


def test_mislabeled_rejects_labels_outside_classes():
    with pytest.raises(InputError, match="labels in"):
        ic.mislabeled(np.zeros((3, 2)), np.array([0, 1, 5]), 2, np.random.default_rng(0), n_classes=3)


def test_out_of_distribution_inside_ranges_but_off_the_data():
    rng = np.random.default_rng(4)
    x, _ = _data(rng, n=2000)
    c = ic.out_of_distribution(x, 200, np.random.default_rng(5), n_classes=4)
    assert c.x.shape == (200, 8) and c.kind == "out-of-distribution"
    assert (c.x >= x.min(axis=0)).all() and (c.x <= x.max(axis=0)).all()
    assert set(np.unique(c.y)) <= {0, 1, 2, 3}
    # Mahalanobis distance under the data's own Gaussian fit (computed here with inv):
    # the canaries sit far outside the data's bulk.
    mean, cov_inv = x.mean(axis=0), np.linalg.inv(np.cov(x, rowvar=False))

    def maha(z):
        d = z - mean
        return np.sqrt(np.einsum("ij,jk,ik->i", d, cov_inv, d))

    real_99 = np.quantile(maha(x), 0.99)
    assert np.median(maha(c.x)) > 2 * real_99


def test_out_of_distribution_keeps_image_shape():
    x = np.random.default_rng(0).random((30, 1, 4, 4))
    c = ic.out_of_distribution(x, 3, np.random.default_rng(1), n_classes=10)
    assert c.x.shape == (3, 1, 4, 4)


def test_clipbkd_uses_least_variance_direction_at_requested_norm():
    rng = np.random.default_rng(6)
    x, y = _data(rng, n=1000)
    y[y == 2] = 1  # class 2 now absent: the least frequent label
    c = ic.clipbkd(x, y, 3, np.random.default_rng(7), n_classes=4, norm=50.0)
    assert c.kind == "clipbkd" and (c.y == 2).all()
    mean = x.mean(axis=0)
    offsets = c.x - mean
    np.testing.assert_allclose(np.linalg.norm(offsets, axis=1), 50.0)
    directions = offsets / 50.0
    np.testing.assert_allclose(directions @ directions.T, np.eye(3), atol=1e-10)
    # Independent reference: eigen-decomposition of the sample covariance.
    evals, evecs = np.linalg.eigh(np.cov(x, rowvar=False))
    for i in range(3):
        assert abs(abs(directions[i] @ evecs[:, i]) - 1.0) < 1e-8
        var_along = np.var((x - mean) @ directions[i], ddof=1)
        np.testing.assert_allclose(var_along, evals[i], rtol=1e-8)


def test_clipbkd_default_norm_is_far_outside_the_data():
    rng = np.random.default_rng(8)
    x, y = _data(rng)
    c = ic.clipbkd(x, y, 1, np.random.default_rng(9), n_classes=4, label=3)
    radius = np.linalg.norm(x - x.mean(axis=0), axis=1).max()
    np.testing.assert_allclose(np.linalg.norm(c.x[0] - x.mean(axis=0)), 10 * radius)
    assert c.y[0] == 3


def test_clipbkd_handles_more_features_than_records_and_image_shape():
    rng = np.random.default_rng(10)
    x = rng.random((5, 1, 3, 3))  # 9 features, 5 records: 5 directions of zero variance
    y = np.array([0, 0, 1, 1, 1])
    c = ic.clipbkd(x, y, 4, np.random.default_rng(0), n_classes=2, norm=1.0)
    assert c.x.shape == (4, 1, 3, 3)
    flat = x.reshape(5, -1)
    d = c.x.reshape(4, -1) - flat.mean(axis=0)
    np.testing.assert_allclose((flat - flat.mean(axis=0)) @ d.T, 0.0, atol=1e-10)


def test_clipbkd_validation():
    x, y = _data(np.random.default_rng(0), d=3)
    with pytest.raises(InputError, match="n=4"):
        ic.clipbkd(x, y, 4, np.random.default_rng(0), n_classes=4)
    with pytest.raises(InputError, match="norm="):
        ic.clipbkd(x, y, 1, np.random.default_rng(0), n_classes=4, norm=-1.0)
    with pytest.raises(InputError, match="label="):
        ic.clipbkd(x, y, 1, np.random.default_rng(0), n_classes=4, label=4)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ic.held_out(np.zeros(5), np.zeros(5, int), 1, np.random.default_rng(0)),
        lambda: ic.held_out(np.zeros((5, 2)), np.zeros(4, int), 1, np.random.default_rng(0)),
        lambda: ic.held_out(np.zeros((5, 2)), np.zeros(5), 1, np.random.default_rng(0)),
        lambda: ic.held_out(np.zeros((5, 2)), np.zeros(5, int), 0, np.random.default_rng(0)),
        lambda: ic.held_out(np.zeros((5, 2)), np.zeros(5, int), 1, 0),
        lambda: ic.held_out(np.zeros((5, 2)), np.zeros(5, int), 1, np.random.default_rng(0), score="auc"),
        lambda: ic.mislabeled(np.zeros((5, 2)), np.zeros(5, int), 1, np.random.default_rng(0), n_classes=1),
        lambda: ic.out_of_distribution(np.zeros((0, 2)), 1, np.random.default_rng(0), n_classes=2),
    ],
)
def test_invalid_inputs(call):
    with pytest.raises(InputError):
        call()
