"""Counts bound (Jagielski et al. 2020; Nasr et al. 2021) against a direct Beta-quantile computation."""

import math

import pytest
from scipy import stats

from audit.errors import InputError
from audit.stats import epsilon_from_counts


def reference(tp, fn, fp, tn, delta, confidence):
    a = (1 - confidence) / 2
    fpr_u = 1.0 if fp == fp + tn else stats.beta.ppf(1 - a, fp + 1, tn)
    fnr_u = 1.0 if fn == tp + fn else stats.beta.ppf(1 - a, fn + 1, tp)
    terms = [0.0]
    for x, y in ((fpr_u, fnr_u), (fnr_u, fpr_u)):
        if 1 - delta - x > 0:
            terms.append(math.log((1 - delta - x) / y))
    return max(terms)


@pytest.mark.parametrize(
    "counts",
    [(900, 100, 100, 900), (50, 0, 0, 50), (10, 90, 90, 10), (1000, 0, 3, 997), (5, 5, 5, 5), (0, 100, 0, 100), (30, 70, 1, 99)],
)
@pytest.mark.parametrize("delta", [0.0, 1e-5, 0.1])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_matches_beta_quantiles(counts, delta, confidence):
    got = epsilon_from_counts(*counts, delta=delta, confidence=confidence)
    assert got.value == pytest.approx(reference(*counts, delta, confidence), rel=1e-9, abs=1e-12)
    assert got.kind == "bound" and got.confidence == confidence


def test_hand_value_perfect_separation():
    # FP = FN = 0 of 50: upper limits 1 - 0.025^(1/50); eps = log((1 - u) / u).
    u = 1 - 0.025 ** (1 / 50)
    assert epsilon_from_counts(50, 0, 0, 50, delta=0.0).value == pytest.approx(math.log((1 - u) / u), rel=1e-9)


def test_jeffreys_is_labelled_an_estimate_and_tighter():
    cp = epsilon_from_counts(900, 100, 100, 900, delta=1e-5)
    jf = epsilon_from_counts(900, 100, 100, 900, delta=1e-5, method="jeffreys")
    assert jf.kind == "estimate" and jf.assumption and "Bayesian" in jf.assumption
    assert jf.value > cp.value  # the Jeffreys upper limit is below the exact one
    assert jf.to_dict()["epsilon_estimate"] == jf.value


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(tp=-1, fn=1, fp=1, tn=1, delta=0),
        dict(tp=1, fn=1, fp=1, tn=1, delta=1.0),
        dict(tp=1, fn=1, fp=1, tn=1, delta=0, confidence=1.5),
        dict(tp=0, fn=0, fp=1, tn=1, delta=0),
        dict(tp=1, fn=1, fp=1, tn=1, delta=0, method="wald"),
    ],
)
def test_bad_input(kwargs):
    with pytest.raises(InputError):
        epsilon_from_counts(**kwargs)
