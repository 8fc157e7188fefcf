"""Metric attacks (LOSS, Song & Mittal) and calibrated loss against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.attacks import score_records
from audit.errors import InputError
from audit.observations import Observations

LN2, LN3 = math.log(2), math.log(3)


def _metric_fixture() -> Observations:
    # target model 0, 2 records, 2 queries, 3 classes; model 1 is irrelevant to metric attacks
    logits = np.zeros((2, 2, 2, 3))
    logits[0, 1, 0] = [0.0, 0.0, LN2]  # p = (1/4, 1/4, 1/2), label 2; the other queries: uniform
    return Observations(keep=np.array([[1, 0], [0, 1]], bool), labels=np.array([0, 2]), logits=logits)


@pytest.mark.parametrize(
    "method, expected",
    [
        # record 0: p = 1/3 everywhere; record 1: p_y = 1/2 (query 0), 1/3 (query 1)
        ("loss", [-LN3, -(LN2 + LN3) / 2]),
        ("confidence", [1 / 3, (1 / 2 + 1 / 3) / 2]),
        # H(1/4, 1/4, 1/2) = 1.5 ln 2; H(uniform) = ln 3
        ("entropy", [-LN3, -(1.5 * LN2 + LN3) / 2]),
        # Mentr(uniform, y) = -(2/3) ln(1/3) - 2 (1/3) ln(2/3) = (2/3) ln(9/2)
        # Mentr((1/4, 1/4, 1/2), y=2) = -(1/2) ln(1/2) - 2 (1/4) ln(3/4) = (1/2) ln(8/3)
        ("modified-entropy", [-(2 / 3) * math.log(4.5), -(0.5 * math.log(8 / 3) + (2 / 3) * math.log(4.5)) / 2]),
    ],
)
def test_metric_attacks_hand_computed(method, expected):
    np.testing.assert_allclose(score_records(method, _metric_fixture(), 0), expected, rtol=0, atol=1e-12)


def test_modified_entropy_stays_finite_when_p_is_one():
    logits = np.zeros((1, 1, 1, 3))
    logits[0, 0, 0] = [2000.0, 0.0, 0.0]
    obs = Observations(keep=np.ones((1, 1), bool), labels=[0], logits=logits)
    assert np.isfinite(score_records("modified-entropy", obs, 0)).all()
    assert score_records("loss", obs, 0)[0] == 0.0


def _z(p: float) -> float:
    """Two-class logit [z, 0] with label 0 has p_y = p."""
    return math.log(p / (1 - p))


def test_calibrated_loss_hand_computed():
    # losses with p_y = 3/4, 1/2, 1/4, 7/8 are a = ln(4/3), b = ln 2, c = ln 4, d = ln(8/7)
    p = np.array([[3 / 4, 1 / 2, 1 / 4, 7 / 8], [1 / 2, 3 / 4, 7 / 8, 1 / 2], [1 / 4, 1 / 2, 3 / 4, 3 / 4]])
    logits = np.zeros((3, 4, 1, 2))
    logits[..., 0, 0] = np.vectorize(_z)(p)
    keep = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], bool)
    obs = Observations(keep=keep, labels=np.zeros(4, int), logits=logits)
    expected = [
        1.5 * LN2 - math.log(4 / 3),  # OUT in models 1 and 2: mean(b, c) - a
        0.0,  # OUT in model 2 only: b - b
        math.log(2 / 7),  # OUT in model 1 only: d - c
        math.log(7 / 6),  # OUT in model 2 only: a - d
    ]
    np.testing.assert_allclose(score_records("calibrated", obs, 0), expected, atol=1e-12)
    keep2 = keep.copy()
    keep2[2, 1] = True  # record 1 now IN for both shadows of target 0
    with pytest.raises(InputError, match="calibrated: 1 records have no OUT shadow"):
        score_records("calibrated", Observations(keep=keep2, labels=np.zeros(4, int), logits=logits), 0)


def test_metric_attacks_ignore_shadows_and_keep():
    obs = _metric_fixture()
    other = Observations(keep=~obs.keep, labels=obs.labels, logits=obs.logits)
    for method in ("loss", "confidence", "entropy", "modified-entropy", "label-only"):
        np.testing.assert_array_equal(score_records(method, obs, 0), score_records(method, other, 0))
