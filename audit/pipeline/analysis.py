"""Analysis stage: attack figures (leave-one-out over all models), guaranteed one-run
bounds on the target model, and estimates beside them (never deciding)."""

from __future__ import annotations

import dataclasses

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


def auditable(keep: np.ndarray, target: int) -> np.ndarray:
    """bool[canaries]: canaries that the target's shadows (every other model) include at
    least once and exclude at least once. It depends on the shadows' inclusion only, so
    restricting to it neither biases the attack figures nor the target's bound: the
    target's own inclusion bits of the kept canaries stay independent fair coins."""
    shadows = np.delete(keep, target, axis=0)
    return shadows.any(axis=0) & ~shadows.all(axis=0)


def _records(observations, index: np.ndarray):
    """The observations restricted to the records ``index`` (all models)."""
    o = observations
    return dataclasses.replace(
        o,
        keep=o.keep[:, index],
        labels=None if o.labels is None else o.labels[index],
        logits=None if o.logits is None else o.logits[:, index],
        stats=None if o.stats is None else o.stats[:, index],
        population=None if o.population is None else o.population[index],
    )


def scores_for_target(observations, method: str, target: int, keep: np.ndarray):
    """(scores: float[auditable], members: bool[auditable]) of the canaries against ``target``.

    ``keep: bool[models, canaries]``; the canaries are the first records of the
    observations, the population the rest.
    """
    from audit.attacks import score_records

    m = keep.shape[1]
    use = np.flatnonzero(auditable(keep, target))
    population = np.arange(m, observations.keep.shape[1])
    sub = _records(observations, np.r_[use, population])
    return score_records(method, sub, target)[: use.size], keep[target, use]


def _summary(config: AuditConfig, scores: np.ndarray, members: np.ndarray, targets: int) -> dict:
    from audit.stats.roc import auc, roc_curve, tpr_at_fpr_from_curve

    curve = roc_curve(scores, members)
    return {
        "auc": auc(scores, members),
        "n_members": int(members.sum()),
        "n_nonmembers": int((~members).sum()),
        "targets": targets,
        "tpr_at_fpr": [tpr_at_fpr_from_curve(curve, f, confidence=config.confidence).to_dict() for f in config.audit.fprs],
        "roc": _thin_roc(curve.fpr, curve.tpr),
    }


def attack_table(config: AuditConfig, observations, keep: np.ndarray) -> dict:
    """``{method: {auc, n_members, n_nonmembers, tpr_at_fpr[...], roc}}``: leave-one-out,
    each model in turn the target and the others its shadows, pooled over targets."""
    out = {}
    for method in config.audit.attacks:
        pairs = [scores_for_target(observations, method, k, keep) for k in range(keep.shape[0])]
        scores = np.concatenate([p[0] for p in pairs])
        members = np.concatenate([p[1] for p in pairs])
        out[method] = _summary(config, scores, members, keep.shape[0])
    return out


def canary_table(config: AuditConfig, scores: dict[str, np.ndarray], members: np.ndarray) -> dict:
    """The same figures for white-box canary statistics of one run."""
    return {name: _summary(config, s, members, 1) for name, s in scores.items()}


def target_scores(config: AuditConfig, observations, keep: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Scores of the auditable canaries against model 0 (the target) for each bound
    attack, and their membership in model 0."""
    members = keep[0, auditable(keep, 0)]
    return {name: scores_for_target(observations, name, 0, keep)[0] for name in config.audit.bound_attacks}, members


def bounds_and_estimates(config: AuditConfig, scores: dict[str, np.ndarray], members: np.ndarray, delta: float):
    """One-run bound per score, each at ``1 - (1 - confidence) / len(scores)`` (Bonferroni
    over the scores tried), so the verdict may take the best of them; f-DP estimates beside."""
    from audit.stats import GuessSearch, epsilon_one_run_from_scores, fdp_one_run_estimate

    search = GuessSearch(full_share=config.audit.full_guess_share)
    per_test = 1.0 - (1.0 - config.confidence) / max(len(scores), 1)
    bounds, estimates = [], []
    for name, s in scores.items():
        b = epsilon_one_run_from_scores(s, members, delta=delta, confidence=per_test, strategy=search)
        row = {"name": f"one-run/{name}", **b.to_dict()}
        row["confidence_overall"] = config.confidence
        bounds.append(row)
        d = b.details
        if d.get("guesses") and delta > 0:
            e = fdp_one_run_estimate(d["canaries"], d["guesses"], d["correct"], delta=delta, confidence=per_test)
            estimates.append({"name": f"fdp-one-run/{name}", **e.to_dict()})
    return bounds, estimates
