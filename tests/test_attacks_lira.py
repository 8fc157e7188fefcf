"""LiRA (Carlini et al. 2022): hand-computed scores and a naive per-record reference loop."""

from __future__ import annotations

import math
import re
import statistics
import warnings

import numpy as np
import pytest

from audit.attacks import score_records
from audit.attacks._common import AttackWarning, lira_phi
from audit.attacks.lira import MIN_VALUES_PER_RECORD, FewShadowsWarning
from audit.errors import InputError
from audit.observations import Observations
from audit.stats.roc import tpr_at_fpr


def _two_class(phi: np.ndarray) -> np.ndarray:
    """Logits [phi, 0] with label 0: the logit-scaled confidence is exactly phi."""
    logits = np.zeros(phi.shape + (2,))
    logits[..., 0] = phi
    return logits


def _hand_fixture() -> Observations:
    # model 0 is the target; shadows 1..4. One query.
    phi = np.array([[4.0, 0.0], [3.0, 0.0], [5.0, 2.0], [-1.0, 6.0], [1.0, -2.0]])
    keep = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], bool)
    return Observations(keep=keep, labels=np.zeros(2, int), logits=_two_class(phi)[:, :, None, :])


def _log_phi(z: float) -> float:
    return math.log(0.5 * math.erfc(-z / math.sqrt(2)))


# record 0: IN {3, 5} (mu 4, sd 1), OUT {-1, 1} (mu 0, sd 1), target 4
# record 1: IN {2, 6} (mu 4, sd 2), OUT {0, -2} (mu -1, sd 1), target 0
# pooled IN {3, 5, 2, 6}: var 2.5; pooled OUT {-1, 1, 0, -2}: mean -0.5, var 1.25
# log N(x; m, s) - log N(x; m', s') = -(x-m)^2/2s^2 - ln s + (x-m')^2/2s'^2 + ln s'
HAND = {
    "lira-online": [0 + 16 / 2, -16 / 8 - math.log(2) + 1 / 2],
    "lira-online-fixed": [16 / 2.5 - 0.5 * math.log(2), -16 / 5 + 1 / 2.5 - 0.5 * math.log(2)],
    "lira-offline": [_log_phi(4.0), _log_phi(1.0)],
    "lira-offline-fixed": [_log_phi(4 / math.sqrt(1.25)), _log_phi(1 / math.sqrt(1.25))],
}


@pytest.mark.parametrize("method", sorted(HAND))
def test_lira_hand_computed(method):
    np.testing.assert_allclose(score_records(method, _hand_fixture(), 0), HAND[method], rtol=0, atol=1e-9)


def test_phi_matches_reference_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 2, 4)) * 3
    labels = rng.integers(0, 4, size=5)
    got = lira_phi(logits, labels)
    for m in range(3):
        for r in range(5):
            for q in range(2):
                z = logits[m, r, q]
                e = [math.exp(v - max(z)) for v in z]
                p = [v / sum(e) for v in e]
                want = math.log(p[labels[r]] + 1e-45) - math.log(sum(p) - p[labels[r]] + 1e-45)
                assert got[m, r, q] == pytest.approx(want, abs=1e-12)
    # saturated softmax: p_wrong underflows to 0, phi is capped by the 1e-45 terms
    big = np.array([[[[800.0, 0.0]]]])
    assert lira_phi(big, np.array([0]))[0, 0, 0] == pytest.approx(-math.log(1e-45))


def _naive_lira(phi, keep, target, *, online, fixed):
    """Per-record loop with statistics.median and explicit normal densities."""
    models, records, queries = phi.shape
    shadows = [m for m in range(models) if m != target]

    def pooled(flag):
        vals = [phi[s, r, q] for s in shadows for r in range(records) for q in range(queries) if keep[s, r] == flag]
        mean = sum(vals) / len(vals)
        return math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))

    def logpdf(x, mu, sd):
        return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)

    def per_record(vals, flag):
        """A record's own std; the pooled one when it has one value or all values equal."""
        sd = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        return sd if sd > 0 else pooled(flag)

    out = []
    for r in range(records):
        total = 0.0
        for q in range(queries):
            ins = [phi[s, r, q] for s in shadows if keep[s, r]]
            outs = [phi[s, r, q] for s in shadows if not keep[s, r]]
            mu_out, sd_out = statistics.median(outs), per_record(outs, False)
            if fixed:
                sd_out = pooled(False)
            x = phi[target, r, q]
            if online:
                mu_in, sd_in = statistics.median(ins), per_record(ins, True)
                if fixed:
                    sd_in = pooled(True)
                total += logpdf(x, mu_in, sd_in + 1e-30) - logpdf(x, mu_out, sd_out + 1e-30)
            else:
                total += _log_phi((x - mu_out) / (sd_out + 1e-30))
        out.append(total / queries)
    return np.array(out)


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fixed", [True, False])
def test_lira_matches_naive_loop(online, fixed):
    rng = np.random.default_rng(11)
    models, records, queries, classes = 9, 12, 3, 4
    keep = rng.random((models, records)) < 0.45
    keep[:3] = [[True] * records, [False] * records, [True, False] * (records // 2)]  # both kinds always
    keep[3:, 0] = True  # record 0: a single OUT shadow (model 1), so its own std is undefined
    logits = rng.normal(size=(models, records, queries, classes))
    labels = rng.integers(0, classes, size=records)
    obs = Observations(keep=keep, labels=labels, logits=logits)
    phi = lira_phi(logits, labels)
    method = "lira-" + ("online" if online else "offline") + ("-fixed" if fixed else "")
    for target in (3, 7):  # shadows include models 0..2, so every record has IN and OUT shadows
        want = _naive_lira(phi, keep, target, online=online, fixed=fixed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewShadowsWarning)  # 8 shadows: tested below
            np.testing.assert_allclose(score_records(method, obs, target), want, rtol=1e-9, atol=1e-6)


def test_missing_in_shadow_names_method_and_count():
    obs = _hand_fixture()
    keep = obs.keep.copy()
    keep[1:, 0] = False  # record 0: no IN shadow for target 0
    keep[0, 0] = True  # (IN for the target only; all-OUT records would count as population)
    bad = Observations(keep=keep, labels=obs.labels, logits=obs.logits)
    with pytest.raises(InputError, match="lira-online: 1 records have no IN shadow"):
        score_records("lira-online", bad, 0)
    with pytest.raises(InputError, match="lira-online-fixed: 1 records have no IN shadow"):
        score_records("lira-online-fixed", bad, 0)
    assert np.isfinite(score_records("lira-offline", bad, 0)).all()  # offline needs OUT only
    keep[1:, :] = True
    with pytest.raises(InputError, match="lira-offline: 2 records have no OUT shadow"):
        score_records("lira-offline", Observations(keep=keep, labels=obs.labels, logits=obs.logits), 0)


def test_population_records_are_exempt_and_nan_online():
    obs = _hand_fixture()
    keep = np.concatenate([obs.keep, np.zeros((5, 1), bool)], axis=1)
    logits = np.concatenate([obs.logits, np.zeros((5, 1, 1, 2))], axis=1)
    ext = Observations(keep=keep, labels=np.zeros(3, int), logits=logits)
    got = score_records("lira-online", ext, 0)
    np.testing.assert_allclose(got[:2], HAND["lira-online"], atol=1e-9)
    assert np.isnan(got[2])  # no IN shadow: undefined for a population record


@pytest.mark.parametrize("target", [-1, 5, 2.0, True])
def test_bad_target(target):
    with pytest.raises(InputError, match="target"):
        score_records("lira-online", _hand_fixture(), target)


# --- degenerate per-record variances, and the warning that says when they are likely ----


def test_a_single_out_value_takes_the_pooled_std():
    # Shadows 1..4; record 0 is OUT in shadow 4 only. Its own std would be 0 (ddof 0), which
    # made the offline score log Phi(+-1e30): 0 exactly for any target above the one value.
    phi = np.array([[4.0, 0.0], [3.0, -1.0], [5.0, 1.0], [2.0, 2.0], [1.0, -2.0]])
    keep = np.array([[0, 0], [1, 0], [1, 1], [1, 1], [0, 0]], bool)
    obs = Observations(keep=keep, labels=np.zeros(2, int), logits=_two_class(phi)[:, :, None, :])
    pooled_out = statistics.pstdev([1.0, -1.0, -2.0])  # every OUT value, records pooled
    with pytest.warns(FewShadowsWarning):
        got = score_records("lira-offline", obs, 0)
    # record 1: OUT {-1, -2}: median -1.5, std 0.5, target 0
    np.testing.assert_allclose(got, [_log_phi((4.0 - 1.0) / pooled_out), _log_phi(1.5 / 0.5)], atol=1e-12)
    assert got[0] < 0  # no longer saturated at log Phi = 0


def test_equal_values_take_the_pooled_std():
    # record 0: OUT {1, 1} (std 0), IN {3, 3} (std 0); record 1 has spread
    phi = np.array([[2.0, 0.0], [1.0, -1.0], [1.0, 1.0], [3.0, 2.0], [3.0, -2.0]])
    keep = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [1, 0]], bool)
    obs = Observations(keep=keep, labels=np.zeros(2, int), logits=_two_class(phi)[:, :, None, :])
    pooled_out = statistics.pstdev([1.0, 1.0, -1.0, -2.0])
    pooled_in = statistics.pstdev([3.0, 3.0, 1.0, 2.0])
    with pytest.warns(FewShadowsWarning):
        offline = score_records("lira-offline", obs, 0)
        online = score_records("lira-online", obs, 0)
    assert offline[0] == pytest.approx(_log_phi(1.0 / pooled_out), abs=1e-12)

    def logpdf(x, mu, sd):
        return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd)

    assert online[0] == pytest.approx(logpdf(2.0, 3.0, pooled_in) - logpdf(2.0, 1.0, pooled_out), abs=1e-9)


def _gaussian_audit(models: int, records: int, seed: int) -> Observations:
    """phi ~ N(0, 1) for OUT, N(1, 1) for IN, independent; each record IN with probability 1/2."""
    rng = np.random.default_rng(seed)
    keep = rng.random((models, records)) < 0.5
    keep[:2] = [[True] * records, [False] * records]  # targets 2.. : every record has IN and OUT shadows
    phi = rng.normal(size=(models, records)) + keep
    return Observations(keep=keep, labels=np.zeros(records, int), logits=_two_class(phi)[:, :, None, :])


@pytest.mark.parametrize("method", ["lira-offline", "lira-online"])
def test_one_out_shadow_no_longer_puts_a_record_on_top(method):
    # K = 8 (7 shadows): about 1 record in 18 has a single OUT shadow. With its std of 0,
    # offline scored it log Phi(+-1e30) (about 2/3 of them tied at 0, the top: 0% TPR at 1%
    # FPR) and online +1e59 or so (always on top).
    obs = _gaussian_audit(models=8, records=2000, seed=5)
    targets = range(2, 8)
    with pytest.warns(FewShadowsWarning):
        scores = np.concatenate([score_records(method, obs, t) for t in targets])
    members = np.concatenate([obs.keep[t] for t in targets])
    single_out = np.concatenate([(~np.delete(obs.keep, t, axis=0)).sum(axis=0) == 1 for t in targets])
    assert single_out.sum() > 300
    top = scores >= np.quantile(scores, 0.99)
    assert top[single_out].mean() < 0.05
    assert (scores == scores.max()).mean() < 0.01  # what ties remain: two OUT values that nearly agree
    assert tpr_at_fpr(scores, members, 0.01).tpr > 0.01


@pytest.mark.parametrize("method, kinds", [("lira-offline", "OUT"), ("lira-online", "IN and")])
def test_few_shadows_warning_names_attack_count_and_the_fixed_variant(method, kinds):
    obs = _gaussian_audit(models=8, records=200, seed=1)
    with pytest.warns(FewShadowsWarning) as caught:
        score_records(method, obs, 3)
    assert len(caught) == 1 and issubclass(caught[0].category, AttackWarning)
    message = str(caught[0].message)
    assert message.startswith(f"{method}: ") and f"{method}-fixed" in message
    # 7 shadows, each record OUT in about half: a median of 3 or 4 values
    count = re.search(r"from only (\d+(?:\.\d+)?) (IN|OUT)", message)
    assert count and 2 <= float(count.group(1)) <= 5 and kinds.split()[0] in message
    assert f"fewer than {MIN_VALUES_PER_RECORD}" in message and "Carlini" in message


@pytest.mark.parametrize("method", ["lira-offline", "lira-online", "lira-offline-fixed", "lira-online-fixed"])
def test_no_warning_with_many_shadows_or_a_fixed_variance(method):
    many = _gaussian_audit(models=2 * MIN_VALUES_PER_RECORD + 20, records=40, seed=2)
    few = _gaussian_audit(models=8, records=40, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewShadowsWarning)
        score_records(method, many, 3)
        if method.endswith("-fixed"):  # pooled variances: no per-record variance to warn about
            score_records(method, few, 3)


def _with_out_counts(out_counts) -> Observations:
    """Model 0 the target; record r is OUT in the first ``out_counts[r]`` of 41 shadows."""
    models, records = 42, len(out_counts)
    keep = np.ones((models, records), bool)
    for r, n_out in enumerate(out_counts):
        keep[1:1 + n_out, r] = False
    phi = np.random.default_rng(0).normal(size=(models, records))
    return Observations(keep=keep, labels=np.zeros(records, int), logits=_two_class(phi)[:, :, None, :])


def test_warning_threshold_is_the_median_record():
    at = [MIN_VALUES_PER_RECORD + d for d in range(-4, 5)]  # median exactly MIN_VALUES_PER_RECORD
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewShadowsWarning)
        score_records("lira-offline", _with_out_counts(at), 0)
    below = [n - 1 for n in at]
    with pytest.warns(FewShadowsWarning, match=f"from only {MIN_VALUES_PER_RECORD - 1} OUT"):
        score_records("lira-offline", _with_out_counts(below), 0)
