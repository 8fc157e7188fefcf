"""An independent reference for the one-run bound with threshold search: Bonferroni over
the thresholds on the upper convex hull of the empirical ROC, guessing "member" above the
threshold (the correction jax_privacy's ``CanaryScoreAuditor.epsilon_one_run`` applies by
default). Written from that description for the tests, kept naive on purpose: a plain
monotone-chain hull and a bisection on the p-value computed by direct summation.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def hull_thresholds(scores: np.ndarray, members: np.ndarray) -> list[tuple[int, int]]:
    """(tp, fp) counts at the thresholds on the upper hull of the ROC, (0, 0) and (P, N) included."""
    order = np.argsort(-scores, kind="stable")
    s, mem = scores[order], members[order]
    points = [(0, 0)]
    tp = fp = 0
    for j in range(s.size):  # one ROC point per distinct threshold (after the last of a tie group)
        tp += int(mem[j])
        fp += int(not mem[j])
        if j == s.size - 1 or s[j] != s[j + 1]:
            points.append((fp, tp))
    hull: list[tuple[int, int]] = []
    for p in points:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # not a strict right turn
                hull.pop()
            else:
                break
        hull.append(p)
    return [(tp, fp) for fp, tp in hull]


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    q = 1.0 / (1.0 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    if delta == 0:
        return min(1.0, beta)
    # Direct summation: window i covers pmf[v - i], ..., pmf[v - 1].
    pmf_below = stats.binom.pmf(np.arange(v), r, q)[::-1]  # pmf[v-1], pmf[v-2], ..., pmf[0]
    windows = np.cumsum(pmf_below)
    alpha = float(np.max(windows / np.arange(1, v + 1)))
    return min(1.0, beta + 2 * m * delta * alpha)


def one_run_eps(m: int, r: int, v: int, delta: float, significance: float) -> float:
    if v == 0 or p_value(m, r, v, 0.0, delta) > significance:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) <= significance:
        lo, hi = hi, 2 * hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(m, r, v, mid, delta) <= significance else (lo, mid)
    return lo


def hull_bonferroni_eps(scores, members, delta: float, confidence: float = 0.95) -> float:
    scores = np.asarray(scores, dtype=float)
    members = np.asarray(members, dtype=bool)
    hull = hull_thresholds(scores, members)
    significance = (1 - confidence) / len(hull)
    best = 0.0
    for tp, fp in hull:
        if tp + fp == 0 or tp / (tp + fp) <= 1 / (1 + math.exp(-best)):
            continue
        best = max(best, one_run_eps(scores.size, tp + fp, tp, delta, significance))
    return best
