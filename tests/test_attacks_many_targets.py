"""LiRA and RMIA score every target at once (``score_targets``, arrays ``[targets, records]``):
the numbers equal, bit for bit, a naive reference written here that scores one target at a
time on the records it sees (the per-target implementation the attacks had before), on
small random cases with per-target record subsets, one and several queries, records with
a single or constant shadow value (pooled-variance fallback) and duplicate shadow values
(medians of ties). The pipeline's leave-one-out scores equal the reference too."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp
from scipy.stats import norm

from audit.attacks import get_attack, score_targets
from audit.attacks.lira import FewShadowsWarning
from audit.errors import InputError
from audit.observations import Observations, select_records
from audit.pipeline.analysis import leave_one_out

LIRA = ("lira-online", "lira-online-fixed", "lira-offline", "lira-offline-fixed")


# ---------------------------------------------------------------- naive reference, one target at a time

def _phi(logits, labels):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    idx = np.broadcast_to(labels[:, None, None], p.shape[:-1] + (1,))
    p_y = np.take_along_axis(p, idx, axis=-1)[..., 0]
    onehot = np.arange(p.shape[-1]) == labels[:, None, None]
    p_wrong = np.where(onehot, 0.0, p).sum(axis=-1)
    return np.log(p_y + 1e-45) - np.log(p_wrong + 1e-45)


def _median_std(values, mask):
    masked = np.where(mask[:, :, None], values, np.nan)
    empty = ~mask.any(axis=0)
    masked[:, empty, :] = 0.0
    median, std = np.nanmedian(masked, axis=0), np.nanstd(masked, axis=0)
    median[empty], std[empty] = np.nan, np.nan
    return median, std


def _sigma(values, mask, std, fixed):
    pooled = lambda: float(np.std(values[mask]))  # noqa: E731
    if fixed:
        return np.full_like(std, pooled())
    undefined = (mask.sum(axis=0)[:, None] < 2) | (std == 0)
    return np.where(undefined, pooled(), std) if undefined.any() else std


def naive_lira(obs: Observations, target: int, online: bool, fixed: bool) -> np.ndarray:
    shadows = np.array([m for m in range(obs.n_models) if m != target])
    keep = obs.keep[shadows]
    phi = _phi(obs.logits, obs.labels)
    shadow_phi, target_phi = phi[shadows], phi[target]
    mu_out, sd_out = _median_std(shadow_phi, ~keep)
    sd_out = _sigma(shadow_phi, ~keep, sd_out, fixed)
    with np.errstate(invalid="ignore"):
        if not online:
            return norm.logcdf((target_phi - mu_out) / (sd_out + 1e-30)).mean(axis=-1)
        mu_in, sd_in = _median_std(shadow_phi, keep)
        sd_in = _sigma(shadow_phi, keep, sd_in, fixed)
        log_in = norm.logpdf(target_phi, mu_in, sd_in + 1e-30)
        return (log_in - norm.logpdf(target_phi, mu_out, sd_out + 1e-30)).mean(-1)


def naive_rmia(obs: Observations, target: int, a: float = 0.3, gamma: float = 2.0) -> np.ndarray:
    shadows = np.array([m for m in range(obs.n_models) if m != target])
    keep = obs.keep[shadows]
    lp = log_softmax(np.asarray(obs.logits, dtype=np.float64), axis=-1)
    idx = np.broadcast_to(obs.labels[:, None, None], lp.shape[:-1] + (1,))
    lp_y = np.take_along_axis(lp, idx, axis=-1)[..., 0]
    log_p = logsumexp(lp_y, axis=-1) - np.log(lp_y.shape[-1])
    out = ~keep
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_out = np.where(out, np.exp(log_p[shadows]), 0.0).sum(0) / out.sum(0)
        log_lr = log_p[target] - np.log(((1.0 + a) * mean_out + (1.0 - a)) / 2.0)
    population = obs.population_mask
    n_z = int(population.sum())
    count = np.searchsorted(np.sort(log_lr[population]), log_lr - np.log(gamma), side="left")
    return count / n_z + (0.5 + np.arctan(log_lr) / np.pi) / (2.0 * n_z)


def naive(method: str, obs: Observations, target: int) -> np.ndarray:
    if method == "rmia":
        return naive_rmia(obs, target)
    return naive_lira(obs, target, online="online" in method, fixed=method.endswith("fixed"))


def naive_targets(method, obs, targets, seen):
    out = np.full((len(targets), obs.n_records), np.nan)
    for row, t in enumerate(targets):
        index = np.flatnonzero(seen[row])
        out[row, index] = naive(method, select_records(obs, index), int(t))
    return out


# ---------------------------------------------------------------- random cases

def random_case(seed: int, models: int = 7, canaries: int = 40, population: int = 12, queries: int = 2,
                classes: int = 5) -> tuple[Observations, np.ndarray]:
    """Observations (canaries first, then population) and keep[models, canaries]; a few
    canaries have a single IN value, some shadow logits are copied (ties, zero spreads)."""
    rng = np.random.default_rng(seed)
    keep = rng.random((models, canaries)) < 0.5
    keep[:, 0] = False
    keep[1, 0] = True  # one IN model only
    keep[:, 1] = True
    keep[2, 1] = keep[3, 1] = False  # two OUT models only
    records = canaries + population
    logits = rng.normal(size=(models, records, queries, classes)) * 2
    logits[:, 2] = logits[0, 2]  # every model the same outputs on record 2: zero spread
    logits[3, 5:9] = logits[4, 5:9]  # tied values
    logits = logits.astype(np.float32)
    labels = rng.integers(0, classes, size=records)
    full_keep = np.concatenate([keep, np.zeros((models, population), bool)], axis=1)
    pop = np.r_[np.zeros(canaries, bool), np.ones(population, bool)]
    return Observations(keep=full_keep, labels=labels, logits=logits, population=pop), keep


def _subsets(obs, targets, keep, seed):
    """Per-target record subsets: random canaries (never those without an OUT shadow), all the population."""
    rng = np.random.default_rng(seed + 100)
    m = keep.shape[1]
    seen = np.ones((len(targets), obs.n_records), bool)
    seen[:, :m] = rng.random((len(targets), m)) < 0.7
    out_shadows = (~keep).sum(0)[None] - ~keep[targets]
    in_shadows = keep.sum(0)[None] - keep[targets]
    seen[:, :m] &= (out_shadows > 0) & (in_shadows > 0)
    return seen


@pytest.mark.parametrize("queries", [1, 3])
@pytest.mark.parametrize("method", [*LIRA, "rmia"])
def test_score_targets_equals_the_naive_reference_exactly(method, queries):
    for seed in range(3):
        obs, keep = random_case(seed, queries=queries)
        targets = np.arange(obs.n_models)
        seen = _subsets(obs, targets, keep, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewShadowsWarning)
            got = score_targets(method, obs, targets, seen)
            expected = naive_targets(method, obs, targets, seen)
            np.testing.assert_array_equal(got, expected)  # bit for bit, NaN where unseen
            one = get_attack(method).score(select_records(obs, np.flatnonzero(seen[2])), 2)
        np.testing.assert_array_equal(one, expected[2][seen[2]])


@pytest.mark.parametrize("method", ["lira-offline", "lira-offline-fixed", "rmia"])
def test_all_records_and_a_subset_of_targets(method):
    obs, _ = random_case(7, models=9, queries=1)
    targets = [8, 0, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewShadowsWarning)
        got = score_targets(method, obs, targets)
        expected = np.stack([naive(method, obs, t) for t in targets])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("method", ["lira-offline", "lira-online-fixed", "rmia"])
def test_pipeline_leave_one_out_equals_the_naive_loop(method):
    obs, keep = random_case(3, models=8, queries=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewShadowsWarning)
        loo = leave_one_out(obs, method, keep)
        m = keep.shape[1]
        for row, t in enumerate(loo.targets):
            shadows = np.delete(keep, t, axis=0)
            use = shadows.any(0) & ~shadows.all(0)
            index = np.r_[np.flatnonzero(use), np.arange(m, obs.n_records)]
            expected = naive(method, select_records(obs, index), int(t))[: use.sum()]
            np.testing.assert_array_equal(loo.scores[row, :m][use], expected)
            assert np.isnan(loo.scores[row, :m][~use]).all() and np.isnan(loo.scores[row, m:]).all()
            assert (loo.audited[row, :m] == use).all()


def test_the_warning_is_the_first_targets_once():
    obs, keep = random_case(1, models=6)
    targets = np.arange(6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score_targets("lira-offline", obs, targets, _subsets(obs, targets, keep, 1))
    few = [w for w in caught if issubclass(w.category, FewShadowsWarning)]
    assert len(few) == 1 and "lira-offline" in str(few[0].message)


def test_bad_targets_and_records_are_refused_in_one_line():
    obs, _ = random_case(0)
    for method in ("lira-offline", "rmia"):
        with pytest.raises(InputError, match="out of range"):
            score_targets(method, obs, [0, 7])
        with pytest.raises(InputError, match="at least one target"):
            score_targets(method, obs, [])
        with pytest.raises(InputError, match=r"records must be bool\[2, 52\]"):
            score_targets(method, obs, [0, 1], np.ones((2, 3), bool))
    seen = np.ones((1, obs.n_records), bool)
    seen[0, obs.population_mask] = False
    with pytest.raises(InputError, match="needs population records"):
        score_targets("rmia", obs, [0], seen)
    bare = Observations(keep=obs.keep[:, :5], labels=obs.labels[:5], logits=obs.logits[:, :5])
    bare_keep = bare.keep.copy()
    bare_keep[:, 1] = True  # record 1 IN for every model: no OUT shadow
    with pytest.raises(InputError, match="1 records have no OUT shadow model"):
        score_targets("lira-offline", Observations(keep=bare_keep, labels=bare.labels, logits=bare.logits), [0])


@pytest.mark.parametrize("method", [*LIRA, "rmia"])
def test_small_blocks_give_the_same_numbers(method, monkeypatch):
    """Blocks of one or two models / targets (memory bounded whatever K) change no number."""
    from audit.attacks import _common

    obs, keep = random_case(5, models=7, queries=2)
    targets = np.arange(obs.n_models)
    seen = _subsets(obs, targets, keep, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewShadowsWarning)
        expected = naive_targets(method, obs, targets, seen)
        monkeypatch.setattr(_common, "BLOCK_ELEMENTS", obs.n_records * 2 * 5 * 2)
        assert len(_common.target_blocks(obs.n_models, obs.n_records * 2 * 5)) == 4
        np.testing.assert_array_equal(score_targets(method, obs, targets, seen), expected)
