"""Counts bounds from raw scores, with a threshold selection that keeps them valid.

Picking the threshold that maximises the Clopper-Pearson bound on the same scores that
are then counted overstates the bound (the best of many tests is reported as if it were
the only one). The strategies here are valid:

* :class:`Split` (default): choose the threshold on a random part of the records, count
  on the rest (the parts are drawn without looking at membership, from ``seed``).
* :class:`Bonferroni`: a threshold set fixed in advance, each tested at
  ``(1 - confidence) / len(thresholds)``; the best is reported.

Like :mod:`audit.stats.counts`, these bounds assume every (score, membership) pair comes
from an independent run of the mechanism (a multi-run audit). For canaries that share
one training run, use :func:`audit.stats.one_run.epsilon_one_run_from_scores`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from audit.errors import InputError
from audit.stats import _validate
from audit.stats.counts import epsilon_from_rate_limits
from audit.stats.intervals import upper_limit
from audit.stats.result import GUARANTEED, EpsilonResult

MULTI_RUN_ASSUMPTION = "each entry comes from an independent training run (multi-run audit)"


@dataclasses.dataclass(frozen=True)
class Split:
    """Choose the threshold on a ``fraction`` of the records, bound on the rest."""

    fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise InputError(f"fraction={self.fraction!r}: expected a number in (0, 1)")


@dataclasses.dataclass(frozen=True)
class Bonferroni:
    """Test each of a threshold set fixed before seeing the scores."""

    thresholds: Sequence[float]

    def __post_init__(self) -> None:
        if len(self.thresholds) == 0:
            raise InputError("thresholds is empty: expected at least one threshold")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))


ThresholdStrategy = Split | Bonferroni


def _bounds_at(scores, members, thresholds, delta, level):
    """eps at each threshold: float[len(thresholds)], with the counts behind them."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    pos, neg = scores[members], scores[~members]
    fn = np.sum(pos[None, :] < thresholds[:, None], axis=1)
    fp = np.sum(neg[None, :] >= thresholds[:, None], axis=1)
    fnr_u = np.atleast_1d(upper_limit(fn, pos.size, level))
    fpr_u = np.atleast_1d(upper_limit(fp, neg.size, level))
    eps = np.array([epsilon_from_rate_limits(a, b, delta) for a, b in zip(fpr_u, fnr_u)])
    return eps, fn, fp


def split_parts(scores: np.ndarray, members: np.ndarray, split: Split):
    """(choose mask, (scores, members) to choose on, (scores, members) to test on): drawn
    without looking at membership, from ``split.seed``; each part must hold both kinds."""
    # A stream of its own, so a user's data drawn from the same seed is not the split.
    rng = np.random.default_rng([split.seed, 0x5B1])
    choose = rng.random(scores.size) < split.fraction
    parts = (scores[choose], members[choose]), (scores[~choose], members[~choose])
    for name, (_, m) in zip(("choosing", "bounding"), parts):
        if m.all() or not m.any():
            raise InputError(
                f"the {name} part of the split has no {'non-members' if m.all() else 'members'}: "
                f"expected more records than {scores.size}"
            )
    return choose, parts[0], parts[1]


def candidate_thresholds(scores: np.ndarray, max_candidates: int = 512) -> np.ndarray:
    distinct = np.unique(scores)
    if distinct.size > max_candidates:
        distinct = np.unique(np.quantile(distinct, np.linspace(0, 1, max_candidates)))
    return np.r_[distinct, np.inf]


def epsilon_from_scores(
    scores,
    members,
    *,
    delta: float,
    confidence: float = 0.95,
    strategy: ThresholdStrategy | None = None,
) -> EpsilonResult:
    """Clopper-Pearson epsilon lower bound from scores with valid threshold selection.

    Args:
      scores: float[n]; higher = more likely a member; one entry per independent run.
      members: bool[n]; whether the target was in that run.
      delta, confidence: as in :func:`audit.stats.counts.epsilon_from_counts`.
      strategy: :class:`Split` (default) or :class:`Bonferroni`.
    """
    scores, members = _validate.check_scores(scores, members)
    delta = _validate.check_delta(delta)
    confidence = _validate.check_confidence(confidence)
    strategy = Split() if strategy is None else strategy
    level = (1.0 - confidence) / 2.0
    if isinstance(strategy, Split):
        choose, (s_choose, m_choose), (s_test, m_test) = split_parts(scores, members, strategy)
        candidates = candidate_thresholds(s_choose)
        eps_choose, _, _ = _bounds_at(s_choose, m_choose, candidates, delta, level)
        threshold = float(candidates[int(np.argmax(eps_choose))])
        eps, fn, fp = _bounds_at(s_test, m_test, [threshold], delta, level)
        best, n_tests = 0, 1
        details = {"chosen_on": int(choose.sum()), "bounded_on": int((~choose).sum())}
        pos_n, neg_n = int(m_test.sum()), int((~m_test).sum())
    else:
        if members.all() or not members.any():
            raise InputError("scores need both members and non-members")
        n_tests = len(strategy.thresholds)
        eps, fn, fp = _bounds_at(scores, members, strategy.thresholds, delta, level / n_tests)
        best = int(np.argmax(eps))
        threshold = strategy.thresholds[best]
        details = {"tests": n_tests}
        pos_n, neg_n = int(members.sum()), int((~members).sum())
    details.update(
        threshold=threshold,
        tp=pos_n - int(fn[best]),
        fn=int(fn[best]),
        fp=int(fp[best]),
        tn=neg_n - int(fp[best]),
        requires=MULTI_RUN_ASSUMPTION,
    )
    return EpsilonResult(
        value=float(eps[best]),
        kind=GUARANTEED,
        method="clopper-pearson-scores",
        confidence=confidence,
        delta=delta,
        inputs={"entries": int(scores.size), "strategy": {"name": type(strategy).__name__, **dataclasses.asdict(strategy)}},
        details=details,
    )
