"""Analysis stage: attack figures (leave-one-out over all models), guaranteed one-run
bounds on the target model, and estimates beside them (never deciding)."""

from __future__ import annotations

import numpy as np

from audit.config import AuditConfig

ROC_POINTS = 200


def _thin_roc(fpr: np.ndarray, tpr: np.ndarray) -> dict:
    """At most ~ROC_POINTS points, log-spaced in FPR, keeping the low-FPR end exact."""
    if fpr.size <= ROC_POINTS:
        return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    positive = fpr[fpr > 0]
    lo = positive.min() if positive.size else 1e-6
    targets = np.geomspace(lo, 1.0, ROC_POINTS)
    idx = np.unique(np.r_[0, np.searchsorted(fpr, targets, side="right") - 1, fpr.size - 1])
    return {"fpr": fpr[idx].tolist(), "tpr": tpr[idx].tolist()}


def attack_table(config: AuditConfig, observations) -> dict:
    """``{method: {auc, n_members, n_nonmembers, tpr_at_fpr[...], roc}}`` pooled over targets."""
    from audit.evaluation import evaluate_attack

    out = {}
    for method in config.audit.attacks:
        ev = evaluate_attack(observations, method, fprs=config.audit.fprs, confidence=config.confidence)
        row = ev.to_dict()
        out[method] = {
            "auc": row["auc"],
            "n_members": row["members"],
            "n_nonmembers": row["non_members"],
            "targets": len(row["targets"]),
            "tpr_at_fpr": row["tpr_at_fpr"],
            "roc": _thin_roc(ev.roc_fpr, ev.roc_tpr),
        }
    return out


def canary_table(config: AuditConfig, scores: dict[str, np.ndarray], members: np.ndarray) -> dict:
    """The same figures for white-box canary statistics of one run."""
    from audit.stats.roc import auc, roc_curve, tpr_at_fpr_from_curve

    out = {}
    for name, s in scores.items():
        curve = roc_curve(s, members)
        out[name] = {
            "auc": auc(s, members),
            "n_members": int(members.sum()),
            "n_nonmembers": int((~members).sum()),
            "targets": 1,
            "tpr_at_fpr": [tpr_at_fpr_from_curve(curve, f, confidence=config.confidence).to_dict() for f in config.audit.fprs],
            "roc": _thin_roc(curve.fpr, curve.tpr),
        }
    return out


def target_scores(config: AuditConfig, observations, n_canaries: int) -> dict[str, np.ndarray]:
    """Scores of the canaries against model 0 (the target) for each bound attack."""
    from audit.attacks import score_records

    return {name: score_records(name, observations, 0)[:n_canaries] for name in config.audit.bound_attacks}


def bounds_and_estimates(config: AuditConfig, scores: dict[str, np.ndarray], members: np.ndarray, delta: float):
    """One-run bound per score, each at ``1 - (1 - confidence) / len(scores)`` (Bonferroni
    over the scores tried), so the verdict may take the best of them; f-DP estimates beside."""
    from audit.stats import epsilon_one_run_from_scores, fdp_one_run_estimate

    per_test = 1.0 - (1.0 - config.confidence) / max(len(scores), 1)
    bounds, estimates = [], []
    for name, s in scores.items():
        b = epsilon_one_run_from_scores(s, members, delta=delta, confidence=per_test)
        row = {"name": f"one-run/{name}", **b.to_dict()}
        row["confidence_overall"] = config.confidence
        bounds.append(row)
        d = b.details
        if d.get("guesses") and delta > 0:
            e = fdp_one_run_estimate(d["canaries"], d["guesses"], d["correct"], delta=delta, confidence=per_test)
            estimates.append({"name": f"fdp-one-run/{name}", **e.to_dict()})
    return bounds, estimates
