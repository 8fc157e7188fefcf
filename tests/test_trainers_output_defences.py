"""Tests for trainers.output_defences against hand-computed values and naive loops."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from audit.errors import InputError
from trainers import output_defences as od


def test_temperature_closed_form():
    logits = np.array([[0.0, np.log(3.0)]])
    # softmax([0, log 3]) = [1/4, 3/4]; at T=2: softmax([0, log 3 / 2]) = [1, sqrt 3]/(1 + sqrt 3)
    np.testing.assert_allclose(od.temperature(logits, 1.0), [[0.25, 0.75]])
    s3 = np.sqrt(3.0)
    np.testing.assert_allclose(od.temperature(logits, 2.0), [[1 / (1 + s3), s3 / (1 + s3)]])
    with pytest.raises(InputError, match="t=0"):
        od.temperature(logits, 0)


def test_top_k_round_label_only_by_hand():
    p = np.array([[0.1, 0.5, 0.15, 0.25], [0.3, 0.3, 0.2, 0.2]])
    np.testing.assert_array_equal(od.top_k(p, 2), [[0, 0.5, 0, 0.25], [0.3, 0.3, 0, 0]])
    np.testing.assert_array_equal(od.label_only(p), [[0, 1, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(od.round_probs(np.array([[0.123, 0.877]]), 1), [[0.1, 0.9]])
    with pytest.raises(InputError, match="k=5"):
        od.top_k(p, 5)
    with pytest.raises(InputError, match="decimals=-1"):
        od.round_probs(p, -1)
    with pytest.raises(InputError, match="expected \\[n, classes\\]"):
        od.label_only(np.ones(3))


@settings(max_examples=50, deadline=None)
@given(
    logits=arrays(np.float64, (5, 6), elements=st.floats(-20, 20)),
    k=st.integers(1, 6),
)
def test_top_k_matches_naive(logits, k):
    p = od.temperature(logits, 1.0)
    got = od.top_k(p, k)
    for row, out in zip(p, got):
        keep = sorted(range(6), key=lambda j: (-row[j], j))[:k]  # naive: sort each row
        expected = np.array([row[j] if j in keep else 0.0 for j in range(6)])
        np.testing.assert_array_equal(out, expected)
    assert ((got > 0).sum(axis=1) <= k).all()


def test_composition_order():
    logits = np.log(np.array([[1.0, 2.0, 3.0, 4.0]]))  # probs 0.1 0.2 0.3 0.4
    d = od.OutputDefence(top_k=2, decimals=1)
    np.testing.assert_allclose(d.apply(logits), [[0, 0, 0.3, 0.4]])
    np.testing.assert_array_equal(od.OutputDefence(label_only=True, top_k=3).apply(logits), [[0, 0, 0, 1]])
    np.testing.assert_allclose(od.OutputDefence().apply(logits), [[0.1, 0.2, 0.3, 0.4]])
    with pytest.raises(InputError, match="top_k=0"):
        od.OutputDefence(top_k=0)
