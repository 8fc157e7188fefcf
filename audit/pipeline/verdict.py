"""From bounds to a verdict (ARCHITECTURE.md, "Contracts worth keeping stable").

DP audits:

- ``VIOLATION`` when the best guaranteed epsilon lower bound exceeds the claimed epsilon
  at the configured confidence (exit 1);
- ``INCONCLUSIVE`` when the audit could not have seen a violation: nothing was measured,
  the claim is infinite, or the audit's power (the largest epsilon its design could have
  shown, every guess right) does not exceed the claim. It fails (exit 1) unless the
  config says ``gate.on_inconclusive = "pass"``: a gate must never pass an audit that was
  blind to the claim it tests;
- otherwise ``NO VIOLATION DETECTED`` with the power (exit 0). A pass never says the
  model is private. Estimates never decide.

Non-DP audits may gate on a risk threshold (TPR at a fixed FPR of one attack, decided
from the chosen end of its Clopper-Pearson interval, the upper end by default); without
one they are ``REPORTED`` (exit 0), with their numbers.
"""

from __future__ import annotations

import math
from typing import Any

from audit.stats.roc import fpr_measurable

EXIT_PASS, EXIT_FAIL = 0, 1
# The decisions a registry gate may act on, and whether each passes.
PASSING = frozenset({"NO VIOLATION DETECTED", "GATE PASSED"})
FAILING = frozenset({"VIOLATION", "GATE FAILED"})
INCONCLUSIVE = "INCONCLUSIVE"


def _best(bounds: list[dict]) -> tuple[dict | None, float, float]:
    best = max(bounds, key=lambda b: b["epsilon_lower_bound"], default=None)
    lb = float(best["epsilon_lower_bound"]) if best else 0.0
    power = max((float(b["details"].get("power", 0.0) or 0.0) for b in bounds), default=0.0)
    return best, lb, power


def _inconclusive_code(on_inconclusive: str) -> int:
    if on_inconclusive not in ("fail", "pass"):
        raise ValueError(f"on_inconclusive={on_inconclusive!r}; expected 'fail' or 'pass'")
    return EXIT_PASS if on_inconclusive == "pass" else EXIT_FAIL


def _inconclusive_tail(code: int) -> str:
    return (" Treated as a pass because gate.on_inconclusive = 'pass'." if code == EXIT_PASS
            else " Treated as a failure (set gate.on_inconclusive = 'pass' to accept it).")


def _claim_fields(claim_tests: list[dict]) -> dict[str, Any]:
    """The verdict's claim-test fields: the smallest p-value and the strongest effective noise."""
    if not claim_tests:
        return {}
    best = min(claim_tests, key=lambda t: t["p_value"])
    effective = [t["effective"] for t in claim_tests if t.get("effective", {}).get("noise_multiplier") is not None]
    eff = max(effective, key=lambda e: e["epsilon"], default=None)
    return {
        "claim_rejected": any(t["rejected"] for t in claim_tests),
        "claim_p_value": best["p_value"],
        "claim_tested": best["claim"],
        "claim_testable": any(t["testable"] for t in claim_tests),
        "effective_epsilon": eff["epsilon"] if eff else 0.0,
        "effective_noise_multiplier": eff["noise_multiplier"] if eff else None,
    }


def dp_verdict(bounds: list[dict], claimed: float, confidence: float, *, on_inconclusive: str = "fail",
               claim_tests: list[dict] | None = None) -> dict[str, Any]:
    """The verdict of a DP audit: ``bounds`` are guaranteed bound rows (``epsilon_lower_bound``,
    ``details.power``, ``name``), ``claimed`` the claimed epsilon (may be ``inf``).

    ``claim_tests``: tests of the claimed DP-SGD privacy curve (rows of
    :func:`audit.pipeline.analysis.bounds_and_estimates`, Bonferroni-shared with the bounds).
    A rejection is a violation of the claimed privacy profile; an audit whose design could
    reject the curve (``testable``) could see a violation even when its (epsilon, delta)
    power does not exceed the claim.
    """
    best, lb, power = _best(bounds)
    claim_tests = claim_tests or []
    rejecting = [t for t in claim_tests if t["rejected"]]
    testable = any(t["testable"] for t in claim_tests)
    claimed = float(claimed)
    pct = f"{confidence:.0%}"
    if lb > claimed:
        decision, code = "VIOLATION", EXIT_FAIL
        message = (
            f"Violation: the epsilon lower bound {lb:.3f} ({best['name']}) exceeds the claimed epsilon "
            f"{claimed:.3f} at {pct} confidence. The implementation leaks more than it claims."
        )
    elif rejecting:
        decision, code = "VIOLATION", EXIT_FAIL
        t = min(rejecting, key=lambda r: r["p_value"])
        message = (
            f"Violation of the claimed DP-SGD privacy profile ({t['claim']}): the test of that curve "
            f"({t['name']}) rejects it, p = {t['p_value']:.3g} at level {1 - t['confidence']:.3g} "
            f"(Bonferroni over the deciding tests, {pct} confidence overall). The implementation "
            f"leaks more than its claim allows, although the (epsilon, delta) bound {lb:.3f} does not exceed "
            f"{claimed:.3f}."
        )
    elif not bounds or math.isinf(claimed) or (power <= claimed and not testable):
        decision, code = INCONCLUSIVE, _inconclusive_code(on_inconclusive)
        if not bounds:
            why = "no guaranteed bound was computed, so nothing was measured"
        elif math.isinf(claimed):
            why = "the claimed epsilon is infinite, so no observation can contradict it"
        else:
            why = (f"this audit could have shown at most epsilon {power:.3f} (every guess right), which does not "
                   f"exceed the claimed {claimed:.3f}, and no outcome could have rejected the claimed privacy "
                   "curve, so it could not have detected a violation")
        message = (f"Inconclusive: {why}. The epsilon lower bound is {lb:.3f} ({pct} confidence). "
                   "Raise the power (more canaries, a stronger statistic) to test this claim."
                   + _inconclusive_tail(code))
    else:
        decision, code = "NO VIOLATION DETECTED", EXIT_PASS
        curve = (f" The claimed privacy curve was not rejected (p = {min(t['p_value'] for t in claim_tests):.3g})."
                 if claim_tests else "")
        message = (
            f"No violation detected: the epsilon lower bound {lb:.3f} does not exceed the claimed epsilon "
            f"{claimed:.3f} ({pct} confidence). This audit could have shown at most {power:.3f}.{curve} "
            "A pass does not show that the model is private."
        )
    return {
        **_claim_fields(claim_tests),
        "decision": decision,
        "exit_code": code,
        "epsilon_lower_bound": lb,
        "claimed_epsilon": claimed,
        "power": power,
        "confidence": confidence,
        "best_bound": best["name"] if best else None,
        "message": message,
    }


_ENDS = {"upper": "upper end of its", "lower": "lower end of its", "point": "point estimate, not its"}


def _figures(attacks: dict, bounds: list[dict], at_fpr: float) -> str:
    """The headline numbers of a non-DP audit: its best bound, and the attack with the highest
    TPR at ``at_fpr`` (every attack's figures are in the report and the terminal table)."""
    _, lb, power = _best(bounds)
    parts = [f"epsilon lower bound {lb:.3f}" + (f" (the audit could show at most {power:.3f})" if power else "")]
    rows = [(row["tpr"], name, attack["auc"]) for name, attack in attacks.items()
            for row in attack.get("tpr_at_fpr", []) if math.isclose(row["target_fpr"], at_fpr, rel_tol=1e-9)
            and fpr_measurable(row["n_nonmembers"], at_fpr)]
    if rows:
        tpr, name, auc = max(rows)
        parts.append(f"strongest attack at {at_fpr * 100:g}% FPR: {name}, TPR {tpr:.2%} (AUC {auc:.3f})")
    return "; ".join(parts)


def risk_verdict(attacks: dict, bounds: list[dict], *, attack: str, at_fpr: float, max_tpr: float | None,
                 decide_on: str = "upper", on_inconclusive: str = "fail") -> dict[str, Any]:
    """The verdict of a non-DP audit: ``REPORTED`` without ``max_tpr``, else the risk gate on
    ``attack``'s TPR at ``at_fpr`` against ``max_tpr``, decided on the ``decide_on`` end
    ("upper", "lower" or "point") of its Clopper-Pearson interval. ``INCONCLUSIVE`` when
    the non-members are too few to measure an FPR of ``at_fpr`` at all (fewer than 1/at_fpr)."""
    best, lb, power = _best(bounds)
    common = {"epsilon_lower_bound": lb, "power": power, "best_bound": best["name"] if best else None,
              "claimed_epsilon": None}
    if max_tpr is None:
        return {
            **common,
            "decision": "REPORTED",
            "exit_code": EXIT_PASS,
            "message": f"Non-DP audit, no privacy claim to test: {_figures(attacks, bounds, at_fpr)}. "
                       "No risk threshold configured ([gate] max_tpr), so nothing was gated.",
        }
    if decide_on not in _ENDS:
        raise ValueError(f"decide_on={decide_on!r}; expected one of {', '.join(_ENDS)}")
    if attack not in attacks or "tpr_at_fpr" not in attacks[attack]:
        raise ValueError(f"gate.attack={attack!r} was not run; expected one of {sorted(attacks)}")
    row = next((r for r in attacks[attack]["tpr_at_fpr"] if math.isclose(r["target_fpr"], at_fpr, rel_tol=1e-9)), None)
    if row is None:
        raise ValueError(f"gate.at_fpr={at_fpr} is not among audit.fprs")
    tpr, (lo, hi) = row["tpr"], row["tpr_interval"]
    risk = {"attack": attack, "at_fpr": at_fpr, "tpr": tpr, "tpr_interval": [lo, hi], "max_tpr": max_tpr,
            "decide_on": decide_on, "n_nonmembers": row["n_nonmembers"]}
    if not fpr_measurable(row["n_nonmembers"], at_fpr):
        code = _inconclusive_code(on_inconclusive)
        return {**common, "decision": INCONCLUSIVE, "exit_code": code, "risk": risk,
                "message": f"Inconclusive: {row['n_nonmembers']} non-member scores cannot measure an FPR of {at_fpr:g} "
                           f"(at least {math.ceil(1 / at_fpr)} are needed), so the risk gate on {attack} could not "
                           f"have seen a TPR above {max_tpr:.4f}." + _inconclusive_tail(code)}
    value = {"upper": hi, "lower": lo, "point": tpr}[decide_on]
    ok = value <= max_tpr
    interval = f"{tpr:.4f} [{lo:.4f}, {hi:.4f}] ({row['confidence']:.0%} Clopper-Pearson)"
    return {
        **common,
        "decision": "GATE PASSED" if ok else "GATE FAILED",
        "exit_code": EXIT_PASS if ok else EXIT_FAIL,
        "risk": risk,
        "message": f"{attack} TPR at {at_fpr:g} FPR is {interval}; the gate compares the {_ENDS[decide_on]} interval, "
                   f"{value:.4f}, with the limit {max_tpr:.4f}: " + ("passed." if ok else "failed.")
                   + f" Also measured: {_figures(attacks, bounds, at_fpr)}.",
    }
