"""The one-run f-DP test of Mahloujifar, Melis & Chaudhuri (2024, "Auditing f-differential
privacy in one run", ICML 2025; arXiv 2410.22235), for membership guesses.

Setting (as for Steinke, Nasr & Jagielski 2023): m canaries, each included independently
with probability 1/2, one run of a mechanism that is f-DP with respect to each canary
(the canaries may interact: nothing beyond per-canary f-DP is assumed). An adversary
guesses the membership of r canaries from the output and abstains on the rest; v guesses
are right. Their theorem bounds the probability of v or more right guesses under any such
mechanism by propagating the trade-off curve over the guesses one at a time. For a
significance level s the recursion (their Algorithm with the "cap" on the guesses,
alphabet size 2) starts from

    t_v = s * v / m,   h_v = s * (r - v) / m

and for i = v - 1, ..., 0 sets

    h_i = max(h_{i+1}, f(1 - t_{i+1})),   t_i = t_{i+1} + i / (r - i) * (h_i - h_{i+1});

the hypothesis "f-DP" is rejected at level s when t_0 + h_0 > r / m. (In the paper's and
Meta PrivacyGuard's notation f(1 - x) is the "inverse blow-up" of f; for mu-GDP it is
Phi(Phi^-1(x) - mu).) Once h stops growing the sequence is constant, so the loop stops.

The test is of a *given* curve f: with f the trade-off curve a DP-SGD claim states
(:mod:`audit.stats.privacy_curve`) a rejection refutes the claim itself; with a Gaussian
f (:mod:`audit.stats.estimates`) it only estimates. The number of guesses r must be fixed
before the run, or chosen from a family fixed in advance with Bonferroni, as for the
(epsilon, delta) one-run bound (:mod:`audit.stats.guesses`).
"""

from __future__ import annotations

import math
from typing import Callable

SIGNIFICANCE_FLOOR = 1e-300


def fdp_rejects(blow_up_inverse: Callable[[float], float], m: int, r: int, v: int, significance: float) -> bool:
    """Whether v right out of r guesses among m canaries reject "f-DP" at ``significance``.

    ``blow_up_inverse(x)`` must be f(1 - x), or a lower bound of it (which makes the test
    of a weaker hypothesis: rejections only become rarer).
    """
    if v == 0 or r == 0:
        return False
    t = significance * v / m
    h = significance * (r - v) / m
    for i in range(v - 1, -1, -1):
        h_next = max(h, blow_up_inverse(t))
        if h_next == h:
            break
        t = min(t + (i / (r - i)) * (h_next - h), 1.0)
        h = h_next
    return t + h > r / m


def fdp_p_value(blow_up_inverse: Callable[[float], float], m: int, r: int, v: int, *, tolerance: float = 1e-3) -> float:
    """The smallest significance level at which :func:`fdp_rejects` rejects, found by
    bisection on a log scale to within a factor ``1 + tolerance``; 1.0 if it does not
    reject even at level 1.

    Bisection reads a single crossing; rejection grows with the level in every case we
    checked (a scan of levels in the tests), and a verdict never rests on this number but
    on :func:`fdp_rejects` at the stated level.
    """
    if not fdp_rejects(blow_up_inverse, m, r, v, 1.0):
        return 1.0
    lo, hi = math.log(SIGNIFICANCE_FLOOR), 0.0
    if fdp_rejects(blow_up_inverse, m, r, v, SIGNIFICANCE_FLOOR):
        return SIGNIFICANCE_FLOOR
    while hi - lo > math.log1p(tolerance):
        mid = 0.5 * (lo + hi)
        if fdp_rejects(blow_up_inverse, m, r, v, math.exp(mid)):
            hi = mid
        else:
            lo = mid
    return math.exp(hi)
