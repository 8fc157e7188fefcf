"""Analysis stage: attack figures (leave-one-out over all models), guaranteed one-run
bounds on the target model, and estimates beside them (never deciding)."""

from __future__ import annotations

import contextlib
import warnings

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
    return auditable_targets(keep, np.array([target]))[0]


def auditable_targets(keep: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """bool[targets, canaries]: :func:`auditable` of each of ``targets``."""
    included = keep.sum(axis=0)[None, :] - keep[targets]  # shadows that include the canary
    return (included > 0) & (included < keep.shape[0] - 1)


def scores_for_target(observations, method: str, target: int, keep: np.ndarray, **params):
    """(scores: float[auditable], members: bool[auditable]) of the canaries against ``target``.

    ``keep: bool[models, canaries]``; the canaries are the first records of the
    observations, the population the rest. The attack sees the auditable canaries and the
    population only (its references); ``params`` are the attack's own.
    """
    loo = leave_one_out(observations, method, keep, targets=[target], params=params)
    use = loo.audited[0, : keep.shape[1]]
    return loo.scores[0, : keep.shape[1]][use], keep[target, use]


def leave_one_out(observations, method: str, keep: np.ndarray, *, targets=None, params=None):
    """:class:`audit.evaluation.LeaveOneOutScores` of ``method``, each model of ``targets``
    (default: every model) in turn the target, as :func:`attack_table` pools them.

    ``keep: bool[models, canaries]`` as in :func:`scores_for_target`. Row ``t`` holds the
    scores of the canaries auditable for target ``t``; the other canaries and the
    population records are NaN and not audited (they enter no ROC). Every target's attack
    sees its auditable canaries and the population (:func:`audit.attacks.score_targets`:
    LiRA and RMIA score all targets from the same arrays).
    """
    from audit.attacks import score_targets
    from audit.evaluation import LeaveOneOutScores, check_targets

    targets = check_targets(observations, targets)
    m = keep.shape[1]
    shape = (targets.size, observations.keep.shape[1])
    use = auditable_targets(keep, targets)
    seen = np.concatenate([use, np.ones((targets.size, shape[1] - m), bool)], axis=1)
    scores, audited, members = np.full(shape, np.nan), np.zeros(shape, bool), np.zeros(shape, bool)
    all_scores = score_targets(method, observations, targets, seen, **dict(params or {}))
    scores[:, :m] = np.where(use, all_scores[:, :m], np.nan)
    audited[:, :m], members[:, :m] = use, keep[targets]
    return LeaveOneOutScores(method, targets, scores, members, audited)


def stored_keep(observations) -> np.ndarray:
    """``keep: bool[models, canaries]`` of a black-box run's stored observations, whose
    records are the canaries, then the population (marked in its population mask)."""
    from audit.errors import InputError

    population = observations.population
    m = 0 if population is None else int((~population).sum())
    if population is None or m == 0 or population[:m].any():
        raise InputError("observations: not those of a black-box dpaudit run (expected canaries first, "
                         "then the population records its population mask marks)")
    return observations.keep[:, :m]


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


@contextlib.contextmanager
def _attack_warnings():
    """Yield a list that receives the messages of the ``AttackWarning``s raised inside, the
    first of each kind (with leave-one-out, model 0's); other warnings go on as they came."""
    from audit.attacks._common import AttackWarning

    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AttackWarning)
        yield messages
    kinds = set()
    for w in caught:
        if not issubclass(w.category, AttackWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        elif w.category not in kinds:
            kinds.add(w.category)
            messages.append(str(w.message))


def attack_table(config: AuditConfig, observations, keep: np.ndarray, *, computed: dict | None = None) -> dict:
    """``{method: {auc, n_members, n_nonmembers, tpr_at_fpr[...], roc, warnings}}``:
    leave-one-out, each model in turn the target and the others its shadows, pooled over
    targets. ``warnings`` holds what the attack warned about (e.g. per-record variances on
    too few shadows), once per kind. ``computed``: a dict that receives each method's
    :class:`audit.evaluation.LeaveOneOutScores` (for :func:`target_scores`)."""
    out = {}
    for method in config.audit.attacks:
        with _attack_warnings() as caught:
            loo = leave_one_out(observations, method, keep)
            scores, members = loo.pooled()
        if computed is not None:
            computed[method] = loo
        out[method] = _summary(config, scores, members, keep.shape[0]) | {"warnings": caught}
    return out


def canary_table(config: AuditConfig, scores: dict[str, np.ndarray], members: np.ndarray) -> dict:
    """The same figures for white-box canary statistics of one run."""
    return {name: _summary(config, s, members, 1) for name, s in scores.items()}


def target_scores(config: AuditConfig, observations, keep: np.ndarray, *,
                  computed: dict | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Scores of the auditable canaries against model 0 (the target) for each bound
    attack, and their membership in model 0. ``computed``: :func:`attack_table`'s
    leave-one-out scores, whose row for model 0 is taken instead of scoring it again
    (the same numbers: each target is scored on its own records alone)."""
    m = keep.shape[1]
    use = auditable(keep, 0)
    scores = {}
    for name in config.audit.bound_attacks:
        loo = (computed or {}).get(name)
        if loo is not None and loo.targets.size and loo.targets[0] == 0:
            scores[name] = loo.scores[0, :m][use]
        else:
            scores[name] = scores_for_target(observations, name, 0, keep)[0]
    return scores, keep[0, use]


def bounds_and_estimates(config: AuditConfig, scores: dict[str, np.ndarray], members: np.ndarray, delta: float,
                         claim: tuple[float, float, int] | None = None, readings=None, effective: bool = True):
    """One-run bound per score, and with ``claim`` = the claimed DP-SGD (sigma, q, T) also the
    one-run test of its privacy curve per score, each of these deciding tests at
    ``1 - (1 - confidence) / n_tests`` (Bonferroni over every test that may decide), so the
    verdict may act on any of them; f-DP estimates and the effective noise (a lower bound
    within the DP-SGD family, labelled so) beside; ``readings`` = (float[steps, canaries], C)
    of a white-box run adds the noise test to the effective noise; ``effective=False``
    skips the effective noise (it never decides; experiments auditing thousands of runs).
    Returns (bounds, estimates, claim_tests)."""
    from audit.stats import GuessSearch, epsilon_one_run_from_scores, fdp_one_run_estimate

    search = GuessSearch(full_share=config.audit.full_guess_share)
    n_tests = max(len(scores), 1) * (2 if claim is not None else 1)
    per_test = 1.0 - (1.0 - config.confidence) / n_tests
    claim_tests = [] if claim is None else _claim_tests(scores, members, claim, delta, per_test, search,
                                                        config.confidence, readings if effective else False)
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
    return bounds, estimates, claim_tests


def _claim_tests(scores, members, claim, delta, per_test, search, confidence, readings) -> list[dict]:
    """Per score: the one-run test of the claimed curve and the effective noise, at ``per_test``
    (with ``readings``, its noise test and signal test share that level; ``readings=False``:
    no effective noise)."""
    from audit.stats.claim_test import claim_test_one_run
    from audit.stats.effective_noise import effective_noise_one_run
    from audit.stats.privacy_curve import dpsgd_curve

    sigma, q, steps = claim
    curve = dpsgd_curve(sigma, q, steps)
    rows = []
    for name, s in scores.items():
        test = claim_test_one_run(s, members, curve, confidence=per_test, strategy=search)
        row = {"name": f"claim-test/{name}", **test.to_dict(), "confidence_overall": confidence}
        if readings is not False:
            values, c = readings if readings is not None else (None, 1.0)
            row["effective"] = effective_noise_one_run(
                s, members, noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta, confidence=per_test,
                strategy=search, readings=values, max_grad_norm=c).to_dict()
        rows.append(row)
    return rows
