"""Shokri meta-classifier, label-only, white-box attacks and the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.attacks import LOGIT_METHODS, WHITE_BOX_METHODS, available_attacks, get_attack, score_records
from audit.attacks.shokri import sorted_prediction_features
from audit.errors import InputError
from audit.observations import Observations, synthetic_observations


def _auc(scores, members):
    """Mann-Whitney AUC by brute force over all pairs (ties count 1/2)."""
    pos, neg = scores[members], scores[~members]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_registry_has_every_required_name():
    required = {"loss", "calibrated", "lira-online", "lira-online-fixed", "lira-offline",
                "lira-offline-fixed", "rmia", "shokri", "label-only", "confidence", "entropy",
                "modified-entropy", "gradient-norm", "canary-statistic"}
    assert required == set(available_attacks()) == set(LOGIT_METHODS) | set(WHITE_BOX_METHODS)
    with pytest.raises(InputError, match="unknown attack method 'lira'; expected one of calibrated"):
        get_attack("lira")
    with pytest.raises(InputError, match="attack 'loss': bad parameters"):
        get_attack("loss", gamma=2)


def test_sorted_prediction_features():
    logits = np.log(np.array([[[[0.2, 0.5, 0.3]], ]]))  # [1 model, 1 record, 1 query, 3 classes]
    np.testing.assert_allclose(sorted_prediction_features(logits)[0, 0], np.log([0.5, 0.3, 0.2]))


def test_shokri_is_seeded_and_learns_membership():
    obs = synthetic_observations(np.random.default_rng(4), n_models=8, n_records=300, n_classes=3, signal=2.0)
    a = score_records("shokri", obs, 1, seed=3)
    b = score_records("shokri", obs, 1, seed=3)
    np.testing.assert_array_equal(a, b)
    assert ((a >= 0) & (a <= 1)).all()
    assert _auc(a, obs.keep[1]) > 0.55
    mlp = score_records("shokri", obs, 1, seed=3, classifier="mlp")
    assert _auc(mlp, obs.keep[1]) > 0.55


def test_shokri_needs_in_and_out_examples_per_class():
    obs = synthetic_observations(np.random.default_rng(4), n_models=4, n_records=20, n_classes=2)
    keep = obs.keep.copy()
    keep[1:, obs.labels == 1] = True
    bad = Observations(keep=keep, labels=obs.labels, logits=obs.logits)
    with pytest.raises(InputError, match="shokri: class 1 has only IN shadow examples"):
        score_records("shokri", bad, 0)
    with pytest.raises(InputError, match="shokri: classifier 'svm'"):
        get_attack("shokri", classifier="svm")


def test_label_only_hand_computed():
    # 1 model, 2 records, 3 queries, 3 classes
    logits = np.array([[
        [[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.5, 0.0]],  # label 0: correct in queries 0 and 2
        [[0.0, 1.0, 4.0], [0.0, 5.0, 1.0], [2.0, 3.0, 0.0]],  # label 1: correct in queries 1 and 2
    ]])
    obs = Observations(keep=np.ones((1, 2), bool), labels=[0, 1], logits=logits)
    margin0 = ((2 - 1) + (0 - 3) + (1 - 0.5)) / 3
    margin1 = ((1 - 4) + (5 - 1) + (3 - 2)) / 3
    tb = lambda m: (0.5 + math.atan(m) / math.pi) / 6  # noqa: E731
    np.testing.assert_allclose(score_records("label-only", obs, 0), [2 / 3 + tb(margin0), 2 / 3 + tb(margin1)],
                               atol=1e-12)
    assert score_records("label-only", obs, 0)[1] > score_records("label-only", obs, 0)[0]


def test_white_box_attacks():
    stats = np.array([[[1.0, 9.0], [4.0, -2.0]], [[0.5, 3.0], [2.0, 7.0]]])  # [2 models, 2 records, 2 stats]
    obs = Observations(keep=np.array([[1, 0], [0, 1]], bool), stats=stats)
    np.testing.assert_array_equal(score_records("gradient-norm", obs, 1), [-0.5, -2.0])
    np.testing.assert_array_equal(score_records("canary-statistic", obs, 0, column=1), [9.0, -2.0])
    with pytest.raises(InputError, match="gradient-norm: stat column 2 out of range"):
        score_records("gradient-norm", obs, 0, column=2)
    named = Observations(keep=obs.keep, stats=stats, metadata={"stat_names": ["norm", "all_iterates"]})
    np.testing.assert_array_equal(score_records("canary-statistic", named, 1, column="all_iterates"), [3.0, 7.0])
    with pytest.raises(InputError, match="canary-statistic: stat 'lr' not in metadata.stat_names"):
        score_records("canary-statistic", named, 1, column="lr")
    with pytest.raises(InputError, match="metadata.stat_names: expected 2 distinct names"):
        Observations(keep=obs.keep, stats=stats, metadata={"stat_names": ["a"]})
    with pytest.raises(InputError, match="loss: needs logits"):
        score_records("loss", obs, 0)
    logit_obs = synthetic_observations(np.random.default_rng(0), n_models=2, n_records=3)
    with pytest.raises(InputError, match="canary-statistic: needs white-box stats"):
        score_records("canary-statistic", logit_obs, 0)


@pytest.mark.parametrize("method", LOGIT_METHODS)
def test_every_logit_attack_scores_float64_per_record(method):
    obs = synthetic_observations(np.random.default_rng(9), n_models=6, n_records=40, n_population=10, n_classes=3)
    s = score_records(method, obs, 2)
    assert s.shape == (50,) and s.dtype == np.float64
    assert np.isfinite(s[:40]).all()
    with pytest.raises(InputError, match=f"{method}: target 6 out of range; expected 0..5"):
        score_records(method, obs, 6)
