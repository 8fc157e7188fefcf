"""Leave-one-out evaluation: ROC against naive references, pooling, LiRA vs LOSS, plotting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.attacks import score_records
from audit.errors import InputError
from audit.evaluation import (
    LeaveOneOutScores,
    evaluate_attack,
    evaluate_attacks,
    leave_one_out_scores,
    log_log_roc_points,
    plot_roc,
    summarize_scores,
)
from audit.observations import synthetic_observations


def _mann_whitney(scores, members):
    pos, neg = scores[members], scores[~members]
    return ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()


def test_tpr_at_fpr_hand_computed():
    # 10 non-members, 4 members. Thresholds from the top: 9 (member), 8 (non), 7, 6 (members), ...
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1, -2, -3, -4], float)
    members = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], bool)
    loo = LeaveOneOutScores("hand", np.array([0]), scores[None], members[None], np.ones(14, bool))
    ev = summarize_scores(loo, fprs=(0.05, 0.1, 0.5), confidence=0.9)
    # FPR <= 5%: no false positive allowed -> threshold 9 -> TPR 1/4
    # FPR <= 10%: one false positive -> threshold 6 -> TPR 3/4
    # FPR <= 50%: five false positives -> down to threshold 1 -> TPR 4/4
    assert [p.tpr for p in ev.tpr_at_fpr] == [0.25, 0.75, 1.0]
    assert [p.fpr for p in ev.tpr_at_fpr] == [0.0, 0.1, 0.5]
    assert [p.threshold for p in ev.tpr_at_fpr] == [9.0, 6.0, 1.0]
    from scipy.stats import beta

    low = beta.ppf(0.05, 1, 4)  # Clopper-Pearson, 1 of 4 at 90%
    high = beta.ppf(0.95, 2, 3)
    assert ev.tpr_at_fpr[0].tpr_interval == pytest.approx((low, high))
    assert ev.auc == pytest.approx((10 + 9 + 9 + 5) / 40)


def test_leave_one_out_pools_every_target_and_skips_population():
    obs = synthetic_observations(np.random.default_rng(1), n_models=4, n_records=30, n_population=6)
    loo = leave_one_out_scores(obs, "loss")
    scores, members = loo.pooled()
    want = np.concatenate([score_records("loss", obs, t)[:30] for t in range(4)])
    np.testing.assert_array_equal(scores, want)
    np.testing.assert_array_equal(members, obs.keep[:, :30].ravel())
    ev = summarize_scores(loo)
    assert ev.members == 60 and ev.non_members == 60  # balanced: 2 of 4 models per record
    sub = evaluate_attack(obs, "loss", targets=[2])
    assert sub.targets == (2,) and sub.members == int(obs.keep[2, :30].sum())
    with pytest.raises(InputError, match="targets: expected model indices in 0..3"):
        evaluate_attack(obs, "loss", targets=[4])


def test_per_target_audited_records_pool_target_by_target():
    # the pipeline's analysis audits other records for each target (audit.pipeline.analysis.leave_one_out)
    scores = np.array([[0.9, np.nan, 0.2, 0.4], [np.nan, 0.8, 0.1, np.nan]])
    members = np.array([[1, 0, 0, 1], [0, 1, 0, 0]], bool)
    audited = ~np.isnan(scores)
    loo = LeaveOneOutScores("hand", np.array([0, 1]), scores, members, audited)
    pooled_scores, pooled_members = loo.pooled()
    np.testing.assert_array_equal(pooled_scores, [0.9, 0.2, 0.4, 0.8, 0.1])
    np.testing.assert_array_equal(pooled_members, [1, 0, 1, 1, 0])
    ev = summarize_scores(loo)
    assert (ev.members, ev.non_members) == (3, 2)
    assert ev.auc == pytest.approx(_mann_whitney(pooled_scores, pooled_members))


def test_lira_beats_loss_at_low_fpr_on_synthetic():
    obs = synthetic_observations(np.random.default_rng(0), n_models=16, n_records=500)
    ev = evaluate_attacks(obs, ["loss", "lira-online", "lira-offline"], fprs=(0.01, 0.001))
    loss, online, offline = ev["loss"], ev["lira-online"], ev["lira-offline"]
    for lira in (online, offline):
        assert lira.auc > loss.auc
        at1 = lira.tpr_at_fpr[0]
        assert at1.tpr_interval[0] > loss.tpr_at_fpr[0].tpr_interval[1]  # disjoint 95% intervals at 1% FPR
        assert lira.tpr_at_fpr[1].tpr > 5 * max(loss.tpr_at_fpr[1].tpr, 1 / loss.members)
    # the hand-written pooled ROC of the test agrees with the one summarized
    pooled = leave_one_out_scores(obs, "lira-online").pooled()
    assert online.auc == pytest.approx(_mann_whitney(*pooled), abs=1e-12)


def test_to_dict_is_json_and_plot_writes_png(tmp_path):
    obs = synthetic_observations(np.random.default_rng(1), n_models=4, n_records=40)
    ev = evaluate_attacks(obs, ["loss", "calibrated"])
    blob = json.dumps({m: e.to_dict(include_roc=True) for m, e in ev.items()})
    back = json.loads(blob)
    assert back["loss"]["auc"] == ev["loss"].auc
    assert [p["target_fpr"] for p in back["calibrated"]["tpr_at_fpr"]] == [0.1, 0.01, 0.001, 0.0001]
    x, y = log_log_roc_points(ev["loss"])
    assert (x > 0).all() and (y > 0).all()
    plot_roc(ev, tmp_path / "roc.png", title="test")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_evaluation_parameters():
    obs = synthetic_observations(np.random.default_rng(1), n_models=4, n_records=10)
    with pytest.raises(InputError, match="fprs: expected values in"):
        evaluate_attack(obs, "loss", fprs=(0.0,))
    with pytest.raises(InputError, match="confidence: expected a value in"):
        evaluate_attack(obs, "loss", confidence=1.0)
    with pytest.raises(InputError, match="unknown attack method"):
        evaluate_attack(obs, "nope")


def test_white_box_evaluation_hand_computed():
    from audit.observations import Observations

    # 2 models x 4 records; gradient norms: members 1, 2; non-members 3, 0.5 (one inversion)
    keep = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    norms = np.array([[1.0, 2.0, 3.0, 0.5], [3.0, 0.5, 1.0, 2.0]])
    obs = Observations(keep=keep, stats=norms[:, :, None])
    ev = evaluate_attack(obs, "gradient-norm", fprs=(0.1, 0.5))
    # pooled: members {1, 2, 1, 2}, non-members {3, 0.5, 3, 0.5}; score = -norm
    # pairs (member beats non-member): each member beats the two 3s and loses to the two 0.5s
    assert ev.auc == pytest.approx(0.5)
    assert ev.tpr_at_fpr[0].tpr == 0.0  # the top scores (-0.5) are non-members
    assert ev.tpr_at_fpr[1].tpr == 1.0 and ev.tpr_at_fpr[1].fpr == 0.5
