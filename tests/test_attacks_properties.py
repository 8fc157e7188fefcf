"""Properties every logit attack must have (hypothesis): softmax-shift invariance,
record-permutation equivariance, shadow-order invariance, and target-keep blindness."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.attacks import LOGIT_METHODS, score_records
from audit.observations import Observations, synthetic_observations

_SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _obs(seed: int) -> Observations:
    return synthetic_observations(np.random.default_rng(seed), n_models=5, n_records=24, n_population=6,
                                  n_classes=3, n_queries=2)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7, equal_nan=True)


@_SETTINGS
@given(seed=st.integers(0, 2**16), method=st.sampled_from(LOGIT_METHODS), target=st.integers(0, 4))
def test_adding_a_constant_to_a_logit_vector_changes_nothing(seed, method, target):
    obs = _obs(seed)
    shift = np.random.default_rng(seed + 1).normal(scale=5.0, size=obs.logits.shape[:3] + (1,))
    shifted = Observations(keep=obs.keep, labels=obs.labels, logits=obs.logits.astype(np.float64) + shift)
    _close(score_records(method, obs, target), score_records(method, shifted, target))


@_SETTINGS
@given(seed=st.integers(0, 2**16), method=st.sampled_from(LOGIT_METHODS), target=st.integers(0, 4))
def test_scores_follow_a_permutation_of_records(seed, method, target):
    obs = _obs(seed)
    perm = np.random.default_rng(seed + 2).permutation(obs.n_records)
    permuted = Observations(keep=obs.keep[:, perm], labels=obs.labels[perm], logits=obs.logits[:, perm])
    got = score_records(method, permuted, target)
    if method == "shokri":  # a refit on reordered rows: same model up to solver tolerance
        np.testing.assert_allclose(got, score_records(method, obs, target)[perm], atol=1e-3)
    else:
        _close(got, score_records(method, obs, target)[perm])


@_SETTINGS
@given(seed=st.integers(0, 2**16), method=st.sampled_from(LOGIT_METHODS), target=st.integers(0, 4))
def test_scores_ignore_shadow_order_and_the_targets_own_keep_bits(seed, method, target):
    obs = _obs(seed)
    rng = np.random.default_rng(seed + 3)
    order = np.r_[target, rng.permutation([m for m in range(obs.n_models) if m != target])]
    reordered = Observations(keep=obs.keep[order], labels=obs.labels, logits=obs.logits[order])
    base = score_records(method, obs, target)
    got = score_records(method, reordered, 0)
    if method == "shokri":
        np.testing.assert_allclose(got, base, atol=1e-3)
    else:
        _close(got, base)
    # the attack must not read keep[target]: flip it on audited records
    keep = obs.keep.copy()
    audited = ~obs.population_mask
    keep[target, audited] = ~keep[target, audited]
    blind = Observations(keep=keep, labels=obs.labels, logits=obs.logits, population=obs.population_mask)
    _close(score_records(method, blind, target), base)
