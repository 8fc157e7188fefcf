"""ROC metrics against scikit-learn and a naive threshold loop."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from audit.errors import InputError
from audit.stats import auc, roc_curve, tpr_at_fpr


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    members = rng.random(500) < 0.4
    scores = np.round(rng.normal(size=500) + members, 1)  # many ties
    assert auc(scores, members) == pytest.approx(roc_auc_score(members, scores), abs=1e-12)


def naive_tpr_at_fpr(scores, members, target):
    best = 0.0
    for t in np.r_[np.unique(scores), np.inf]:
        pred = scores >= t
        fpr = np.mean(pred[~members])
        if fpr <= target:
            best = max(best, np.mean(pred[members]))
    return best


@pytest.mark.parametrize("target", [0.0, 0.001, 0.01, 0.1, 0.5, 1.0])
def test_tpr_at_fpr_matches_naive(target):
    rng = np.random.default_rng(4)
    members = rng.random(2000) < 0.5
    scores = np.round(rng.normal(size=2000) + 1.5 * members, 2)
    got = tpr_at_fpr(scores, members, target)
    assert got.tpr == pytest.approx(naive_tpr_at_fpr(scores, members, target))
    assert got.fpr <= target
    lo, hi = got.tpr_interval
    assert lo <= got.tpr <= hi


def test_hand_example():
    scores = np.array([3, 2, 2, 1.0, 0])
    members = np.array([1, 1, 0, 0, 0], bool)
    curve = roc_curve(scores, members)
    np.testing.assert_allclose(curve.fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(curve.tpr, [0, 0.5, 1, 1, 1])
    assert auc(scores, members) == pytest.approx(11 / 12)
    assert tpr_at_fpr(scores, members, 0.0).tpr == 0.5  # the tie at 2 cannot be split


def test_clopper_pearson_interval_of_zero_fp():
    scores = np.r_[np.arange(10.0) + 5000, np.arange(1000.0)]
    members = np.r_[np.ones(10, bool), np.zeros(1000, bool)]
    res = tpr_at_fpr(scores, members, 0.0, confidence=0.95)
    assert res.tpr == 1.0 and res.fp == 0
    assert res.fpr_interval[1] == pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-9)


def test_needs_both_classes():
    with pytest.raises(InputError, match="no non-members"):
        roc_curve([1.0, 2.0], [True, True])
