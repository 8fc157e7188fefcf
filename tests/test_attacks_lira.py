"""LiRA (Carlini et al. 2022): hand-computed scores and a naive per-record reference loop."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from audit.attacks import score_records
from audit.attacks._common import lira_phi
from audit.errors import InputError
from audit.observations import Observations


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

    out = []
    for r in range(records):
        total = 0.0
        for q in range(queries):
            ins = [phi[s, r, q] for s in shadows if keep[s, r]]
            outs = [phi[s, r, q] for s in shadows if not keep[s, r]]
            mu_out, sd_out = statistics.median(outs), statistics.pstdev(outs)
            if fixed:
                sd_out = pooled(False)
            x = phi[target, r, q]
            if online:
                mu_in, sd_in = statistics.median(ins), statistics.pstdev(ins)
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
    logits = rng.normal(size=(models, records, queries, classes))
    labels = rng.integers(0, classes, size=records)
    obs = Observations(keep=keep, labels=labels, logits=logits)
    phi = lira_phi(logits, labels)
    method = "lira-" + ("online" if online else "offline") + ("-fixed" if fixed else "")
    for target in (3, 7):  # shadows include models 0..2, so every record has IN and OUT shadows
        want = _naive_lira(phi, keep, target, online=online, fixed=fixed)
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
