"""From bounds to a verdict (ARCHITECTURE.md, "Contracts worth keeping stable").

``VIOLATION`` when the best guaranteed epsilon lower bound exceeds the claimed epsilon
at the configured confidence; otherwise ``NO VIOLATION DETECTED`` with the audit's power
(the largest epsilon the design could have shown). A pass never says the model is
private. Estimates never decide. Non-DP audits may gate on a risk threshold (TPR at a
fixed FPR of one attack); without one they are ``REPORTED``.
"""

from __future__ import annotations

from typing import Any

EXIT_PASS, EXIT_FAIL = 0, 1


def dp_verdict(bounds: list[dict], claimed: float, confidence: float) -> dict[str, Any]:
    best = max(bounds, key=lambda b: b["epsilon_lower_bound"], default=None)
    lb = best["epsilon_lower_bound"] if best else 0.0
    power = max((b["details"].get("power", 0.0) or 0.0 for b in bounds), default=0.0)
    pct = f"{confidence:.0%}"
    if lb > claimed:
        decision, code = "VIOLATION", EXIT_FAIL
        message = (
            f"Violation: the epsilon lower bound {lb:.3f} ({best['name']}) exceeds the claimed epsilon "
            f"{claimed:.3f} at {pct} confidence. The implementation leaks more than it claims."
        )
    else:
        decision, code = "NO VIOLATION DETECTED", EXIT_PASS
        message = (
            f"No violation detected: the epsilon lower bound {lb:.3f} does not exceed the claimed epsilon "
            f"{claimed:.3f} ({pct} confidence). This audit could have shown at most {power:.3f}"
            + (" (below the claim, so it could not have caught a violation of it)" if power <= claimed else "")
            + ". A pass does not show that the model is private."
        )
    return {
        "decision": decision,
        "exit_code": code,
        "epsilon_lower_bound": lb,
        "claimed_epsilon": claimed,
        "power": power,
        "confidence": confidence,
        "best_bound": best["name"] if best else None,
        "message": message,
    }


def risk_verdict(attacks: dict, *, attack: str, at_fpr: float, max_tpr: float | None) -> dict[str, Any]:
    if max_tpr is None:
        return {
            "decision": "REPORTED",
            "exit_code": EXIT_PASS,
            "message": "Non-DP audit: attack figures reported; no risk threshold configured ([gate] max_tpr).",
        }
    if attack not in attacks or "tpr_at_fpr" not in attacks[attack]:
        raise ValueError(f"gate.attack={attack!r} was not run; expected one of {sorted(attacks)}")
    rows = {round(r["target_fpr"], 12): r for r in attacks[attack]["tpr_at_fpr"]}
    row = rows.get(round(at_fpr, 12))
    if row is None:
        raise ValueError(f"gate.at_fpr={at_fpr} is not among audit.fprs")
    tpr = row["tpr"]
    ok = tpr <= max_tpr
    return {
        "decision": "GATE PASSED" if ok else "GATE FAILED",
        "exit_code": EXIT_PASS if ok else EXIT_FAIL,
        "risk": {"attack": attack, "at_fpr": at_fpr, "tpr": tpr, "max_tpr": max_tpr},
        "message": f"{attack} TPR at {at_fpr:g} FPR is {tpr:.4f}; the gate allows at most {max_tpr:.4f}: "
        + ("passed." if ok else "failed."),
    }
