"""How far shuffled batches exceed the Poisson claim, seen by one canary (issue 15, check 3).

A data pipeline that draws fixed-size shuffled batches (each record exactly once per
epoch) while the accountant claims Poisson sampling at q = 1/b is the bug "shuffled
batches accounted as Poisson" (Chua et al. 2024, "How Private are DP-SGD
Implementations?"). A one-run audit sees it only through each canary's readings: m
samples of "member vs non-member" under the mechanism, tested against the claimed
privacy curve. This script computes, for the ideal canary (signal exactly C on its own
coordinate at each step it is present, the Dirac or record canary at its best), how far
the shuffle mechanism's best ROC rises above the claimed curve anywhere:

- claimed curve: DP-SGD with Poisson rate q = 1/b over T = b E steps at the sigma that
  Opacus' PRV accountant gives for the claimed epsilon at delta = 1e-5; in ROC space the
  concave hull of both directions' Neyman-Pearson ROCs, 1 - min(T(P, Q), T(Q, P))**, the
  bound every membership test obeys under remove/add adjacency;
- the shuffle mechanism: the canary present at one uniform step of each epoch; its
  Neyman-Pearson test (likelihood ratio sum_epochs log mean_j exp(a_j)), the best any
  statistic can do on these readings.

All ROCs are Monte Carlo (``--samples`` readings per hypothesis, seeded), so each TPR has
a standard error of about 0.0007 at 500,000 samples. The gap is set against the standard
error of a TPR that a one-run audit with m canaries (m/2 members) measures at that FPR.

``python -m experiments.shuffle_gap [--quick]``: writes ``experiments/results/shuffle_gap.md``
and ``.json`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from audit.atomic import atomic_open

RESULTS = Path(__file__).resolve().parent / "results"
DELTA = 1e-5
ALPHAS = np.concatenate([np.geomspace(1e-4, 0.05, 24), np.linspace(0.06, 0.99, 94)])
FULL = dict(samples=500_000, designs=[(eps, b, e) for eps in (1.0, 2.0, 4.0) for b, e in ((2, 1), (4, 1), (38, 1), (38, 5))])
QUICK = dict(samples=5_000, designs=[(4.0, 2, 1)])


def claimed_sigma(epsilon: float, q: float, steps: int) -> float:
    """sigma at which Opacus' PRV accountant gives ``epsilon`` at DELTA for Poisson rate q over ``steps``."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=DELTA, sample_rate=q, steps=steps,
                                          accountant="prv", epsilon_tolerance=0.005))


def _roc(null: np.ndarray, alt: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """TPR of "alt if score > threshold", thresholds at the null's (1 - alpha)-quantiles."""
    thresholds = np.quantile(null, 1.0 - alphas)
    alt = np.sort(alt)
    return 1.0 - np.searchsorted(alt, thresholds, side="right") / alt.size


def _concave_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The least concave majorant of the points (0, 0), (x_i, y_i), (1, 1), evaluated at x."""
    pts = sorted(zip([0.0, *x, 1.0], [0.0, *y, 1.0]))
    hull: list[tuple[float, float]] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] lies on or below the chord
                hull.pop()
            else:
                break
        hull.append(p)
    hx, hy = zip(*hull)
    return np.interp(x, hx, hy)


def gap(epsilon: float, b: int, epochs: int, samples: int, seed: int, *, mechanism: str = "shuffle") -> dict:
    """The shuffle mechanism's best ROC against the claimed curve, for one design.

    ``mechanism="poisson"`` puts the claimed mechanism itself in the shuffle's place (its
    own likelihood ratio as the statistic): a check of the method, whose excess must be
    Monte Carlo noise."""
    q, steps = 1.0 / b, b * epochs
    sigma = claimed_sigma(epsilon, q, steps)
    rng = np.random.default_rng([seed, b, epochs, int(epsilon * 1000)])
    null = rng.standard_normal((samples, steps)) * sigma
    poisson = (rng.random((samples, steps)) < q) + rng.standard_normal((samples, steps)) * sigma
    shuffle = rng.standard_normal((samples, steps)) * sigma
    if mechanism == "shuffle":
        for e in range(epochs):
            shuffle[np.arange(samples), e * b + rng.integers(0, b, samples)] += 1.0
    else:
        shuffle += rng.random((samples, steps)) < q

    def a(x):  # log-likelihood ratio of "present" against "absent" at each step
        return (x - 0.5) / sigma**2

    def llr_poisson(x):
        return np.log1p(q * np.expm1(a(x))).sum(axis=1)

    def llr_shuffle(x):
        return (logsumexp(a(x).reshape(len(x), epochs, b), axis=2) - math.log(b)).sum(axis=1)

    l_null, l_member = llr_poisson(null), llr_poisson(poisson)
    forward = _roc(l_null, l_member, ALPHAS)  # 1 - T(P, Q)
    backward = _roc(-l_member, -l_null, ALPHAS)  # 1 - T(Q, P): "non-member" tested with the roles swapped
    claimed = _concave_hull(ALPHAS, np.maximum(forward, backward))
    statistic = llr_shuffle if mechanism == "shuffle" else llr_poisson
    shuffled = _roc(statistic(null), statistic(shuffle), ALPHAS)
    excess = shuffled - claimed
    i = int(np.argmax(excess))
    return {"epsilon": epsilon, "b": b, "epochs": epochs, "steps": steps, "q": q, "sigma": sigma,
            "max_excess": float(excess[i]), "at_fpr": float(ALPHAS[i]), "claimed_tpr": float(claimed[i]),
            "shuffled_tpr": float(shuffled[i]),
            "max_excess_one_direction": float((shuffled - _concave_hull(ALPHAS, forward)).max()),
            "max_excess_fpr_le_0.01": float(excess[ALPHAS <= 0.01].max()),
            "members_for_3_se": _members_needed(float(excess[i]), float(shuffled[i]), float(ALPHAS[i]))}


def _members_needed(excess: float, tpr: float, fpr: float) -> float | None:
    """Members (and as many non-members) for the excess to reach 3 standard errors of
    TPR - hull(FPR) measured at one threshold fixed in advance (no multiplicity, the
    slope of the curve taken as 1): the most optimistic count a one-run test could need."""
    if excess <= 0:
        return None
    var = tpr * (1 - tpr) + fpr * (1 - fpr)
    return 9.0 * var / excess**2


def markdown(rows: list[dict], samples: int, wall_s: float, check: dict) -> str:
    lines = [
        "# Shuffled batches accounted as Poisson: what one canary can see (issue 15)",
        "",
        "`python -m experiments.shuffle_gap`",
        "",
        __doc__.split("\n\n", 1)[1].split("``python -m")[0].strip(),
        "",
        f"{samples:,} Monte Carlo readings per hypothesis and design; FPRs from 1e-4 to 0.99.",
        "",
        "| claimed ε | b (batches/epoch) | epochs | σ (PRV) | largest excess of the shuffle ROC over the claimed curve | at FPR | claimed TPR there | shuffle TPR there | members for 3 SE (m/2, at best) | SE of that TPR with 5,000 members | excess over 1 − T(P, Q) alone |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        need = "never above" if r["members_for_3_se"] is None else f"{r['members_for_3_se']:,.0f}"
        se = math.sqrt(r["shuffled_tpr"] * (1 - r["shuffled_tpr"]) / 5000)
        lines.append(f"| {r['epsilon']:g} | {r['b']} | {r['epochs']} | {r['sigma']:.3f} | {r['max_excess']:+.4f} | "
                     f"{r['at_fpr']:.3g} | {r['claimed_tpr']:.4f} | {r['shuffled_tpr']:.4f} | {need} | {se:.4f} | "
                     f"{r['max_excess_one_direction']:+.4f} |")
    worst = max(rows, key=lambda r: r["max_excess"])
    need = worst["members_for_3_se"]
    low = max(r["max_excess_fpr_le_0.01"] for r in rows)
    reach = ("so no one-run audit with 10,000 canaries (5,000 members) flags this bug reliably at these claims, "
             "whatever its statistic: the signal is below the noise of the measurement"
             if need is not None and need > 5000 else
             "within reach of a one-run audit with 10,000 canaries (5,000 members) at a well-placed threshold")
    lines += [
        "",
        f"The largest excess in any design is {worst['max_excess']:.4f} in TPR (claimed ε {worst['epsilon']:g}, "
        f"b = {worst['b']}, {worst['epochs']} epoch(s), at FPR {worst['at_fpr']:.2g}). Seeing it at 3 standard errors "
        f"takes at least {need or math.inf:,.0f} members (as many non-members) at one threshold fixed in advance; "
        f"{reach}. At FPR ≤ 0.01, where one-run bounds and the curve test have their power, the largest excess is "
        f"{low:+.4f} (the shuffled canary is never absent, but it is never present twice either). The multi-run "
        "audit on an auditor-chosen dataset catches the bug ([`real_bugs.md`](real_bugs.md)). The last column sets "
        "the shuffle ROC against one direction of the claim only, 1 − T(P, Q) (not a valid bound under add/remove "
        "adjacency; shown because it is the larger excess).",
        "",
        f"Check of the method: the claimed mechanism itself in the shuffle's place (claimed ε {check['epsilon']:g}, "
        f"b = {check['b']}, {check['epochs']} epoch, its own likelihood ratio) exceeds its curve by at most "
        f"{check['max_excess']:+.4f}, which is the Monte Carlo noise of these figures.",
        "",
        f"Total wall time {wall_s:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.shuffle_gap", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one design, 5,000 samples; writes no files")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    rows = [gap(eps, b, e, preset["samples"], seed=0) for eps, b, e in preset["designs"]]
    check = gap(4.0, 4, 1, preset["samples"], seed=0, mechanism="poisson")
    text = markdown(rows, preset["samples"], time.perf_counter() - t0, check)
    print(text)
    if not args.quick:
        with atomic_open(RESULTS / "shuffle_gap.md") as fh:
            fh.write(text)
        with atomic_open(RESULTS / "shuffle_gap.json") as fh:
            json.dump({"samples": preset["samples"], "delta": DELTA, "rows": rows, "method_check": check}, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
