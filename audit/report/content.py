"""What the human report and the comparison say, as document blocks (no I/O, no plotting).

The wording follows ARCHITECTURE.md: a pass is "no violation detected", stated with the
audit's power (the largest epsilon it could have shown), and never a claim that the model
is private; estimates sit in their own section and never decide the verdict.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, Sequence

from audit.report import fields as F
from audit.report import formatting as fmt
from audit.report.document import Block, Bullets, Code, Heading, Image, Paragraph, Table

PASSES = {"NO VIOLATION DETECTED", "GATE PASSED"}

ESTIMATES_NOTE = (
    "Estimates assume a Gaussian trade-off curve; they never decide the verdict. "
    "They are not guaranteed bounds: the true epsilon may be below an estimate."
)

HOW_TO_READ = (
    "An epsilon lower bound holds with probability at least its confidence whatever the "
    "training algorithm is, so a lower bound above the claimed epsilon (VIOLATION) shows "
    "that the claim, its accounting or its implementation is wrong. NO VIOLATION DETECTED "
    "only means this audit found no evidence against the claim: it does not show that "
    "the model is private. The power is the largest epsilon this audit could have shown "
    "even with a perfect attack; a claim above the power cannot be refuted by this audit, "
    "however leaky the model. Estimates rest on an assumption (a Gaussian trade-off curve) "
    "and are shown for context only. For the attacks, read the true-positive rate (TPR) at "
    "low false-positive rates (FPR) rather than the AUC, which averages over all error "
    "rates and hides confident leakage of a few records (Carlini et al. 2022, "
    "\"Membership inference attacks from first principles\"). Intervals are two-sided "
    "Clopper-Pearson intervals at the audit's confidence. A TPR at a target FPR below 1/(number of non-members) is "
    "read at zero false positives and is marked with *."
)

_NEGATION = re.compile(r"\b(not|never|no|cannot|nor|neither)\b|n't\b", re.IGNORECASE)
_PRIVATE = re.compile(r"\bprivate\b", re.IGNORECASE)


def claims_privacy(text: str) -> bool:
    """True if a sentence of ``text`` mentions "private" without a negation."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return any(_PRIVATE.search(s) and not _NEGATION.search(s) for s in sentences)


def _eps(value: float | None) -> str:
    return fmt.num(value)


# --- verdict --------------------------------------------------------------------------


def _power_sentence(power: float | None) -> str:
    if power is None:
        return "The power of this audit (the largest epsilon it could have shown) was not reported."
    return f"This audit could have shown at most {_eps(power)}."


def composed_message(report: Mapping[str, Any]) -> str:
    """A verdict message built from the numbers, for reports whose message is missing."""
    verdict = F.section(report, "verdict")
    decision = F.decision(report)
    lower = F.number(verdict.get("epsilon_lower_bound"), "verdict.epsilon_lower_bound")
    if lower is None:
        lower = F.best_bound(report)
    claimed = F.claimed_epsilon(report)
    conf = F.number(verdict.get("confidence"), "verdict.confidence")
    at = f" ({fmt.confidence(conf)} confidence)" if conf is not None else ""
    if decision == "VIOLATION":
        return f"Violation: the epsilon lower bound {_eps(lower)} exceeds the claimed epsilon {_eps(claimed)}{at}."
    if decision in PASSES:
        head = "Gate passed" if decision == "GATE PASSED" else "No violation detected"
        return (f"{head}: the epsilon lower bound {_eps(lower)} does not exceed the claimed epsilon "
                f"{_eps(claimed)}{at}. {_power_sentence(F.power(report))} "
                "A pass does not show the model is private.")
    if decision == "GATE FAILED":
        return f"Gate failed: the epsilon lower bound {_eps(lower)} against the claimed epsilon {_eps(claimed)}{at}."
    if decision == "REPORTED":
        return "Results reported without a privacy claim to test."
    return "This report has no verdict."


def verdict_text(report: Mapping[str, Any]) -> str:
    """The verdict message, made safe for a pass: it states the power and claims no privacy."""
    message = F.text(F.section(report, "verdict").get("message"))
    decision = F.decision(report)
    if not message or (decision in PASSES and claims_privacy(message)):
        return composed_message(report)
    if decision in PASSES and "could have shown" not in message:
        message = f"{message} {_power_sentence(F.power(report))}"
    return message


# --- the report -----------------------------------------------------------------------


def _headline(report: Mapping[str, Any]) -> Bullets:
    s = F.summarize(report)
    delta = F.number(F.section(report, "claimed").get("delta"), "claimed.delta")
    bullets = [
        f"Mode: {s.mode or fmt.MISSING}",
        (f"Claimed epsilon: {_eps(s.claimed_epsilon)} at delta {fmt.num(delta)}"
         if s.claimed_epsilon is not None else "Claimed epsilon: none (no privacy claim to test)"),
        f"Best epsilon lower bound: {_eps(s.epsilon_lower_bound)}",
        f"Power (the most this audit could have shown): {_eps(F.power(report))}",
    ]
    if s.attack is not None:
        bullets.append(f"Strongest attack at 0.1% FPR: {s.attack}, TPR {fmt.pct_interval(s.tpr, s.tpr_interval)}")
    bullets.append(f"Test accuracy: {fmt.pct(s.test_accuracy)}")
    return Bullets(tuple(bullets))


def _epsilon_section(report: Mapping[str, Any], figure: str | None) -> list[Block]:
    out: list[Block] = [Heading("Claimed epsilon and guaranteed lower bounds")]
    claimed = F.section(report, "claimed")
    eps = F.claimed_epsilon(report)
    if eps is None:
        out.append(Paragraph("No claimed epsilon: this audit has no privacy claim to test."))
    else:
        delta = F.number(claimed.get("delta"), "claimed.delta")
        source = F.text(claimed.get("source"))
        out.append(Paragraph(f"Claimed epsilon = {_eps(eps)} at delta = {fmt.num(delta)}"
                             + (f" (source: {source})." if source else ".")))
    rows = []
    best = F.text(F.section(report, "verdict").get("best_bound"))
    for b in F.bounds(report):
        exceeds = fmt.MISSING if b.value is None or eps is None else ("yes" if b.value > eps else "no")
        rows.append((b.name + (" (best)" if best and b.name == best else ""), _eps(b.value), b.method or fmt.MISSING,
                     fmt.confidence(b.confidence), fmt.num(b.delta), _eps(b.power), exceeds))
    if rows:
        out.append(Table(("bound", "epsilon lower bound", "method", "confidence", "delta",
                          "power (could have shown at most)", "exceeds claim"), tuple(rows)))
    else:
        out.append(Paragraph("No guaranteed epsilon lower bound was computed in this audit."))
    if figure:
        out.append(Image(figure, "epsilon lower bounds against the claimed epsilon"))
    return out


def _claim_section(report: Mapping[str, Any]) -> list[Block]:
    """The tests of the claimed DP-SGD privacy curve and the effective noise, when run."""
    tests = [t for t in report.get("claim_tests") or [] if isinstance(t, Mapping)]
    if not tests:
        return []
    out: list[Block] = [
        Heading("Claimed privacy curve"),
        Paragraph("The claim of DP-SGD is a whole trade-off curve, not one (epsilon, delta) point. Each test below "
                  "asks whether the run could come from a mechanism that meets the claimed curve for every canary "
                  "(one-run f-DP test, Mahloujifar, Melis & Chaudhuri 2024); a rejection is a violation. The "
                  "effective noise assumes the implementation is DP-SGD with the claimed sampling rate, steps and "
                  "clipping norm: it behaves as if it added less noise than sigma_eff, and its epsilon exceeds the "
                  "effective epsilon within that family (not an assumption-free bound, so it never decides). "
                  "sigma_eff comes from whichever of two tests reaches further: the canary scores against the "
                  "curve of each noise level (signal), or the noise measured on the coordinates of the canaries "
                  "never inserted (noise, white-box only)."),
    ]
    rows = []
    for t in tests:
        eff = t.get("effective") if isinstance(t.get("effective"), Mapping) else {}
        sigma_eff = eff.get("noise_multiplier")
        details = eff.get("details") if isinstance(eff.get("details"), Mapping) else {}
        rows.append((F.text(t.get("name")) or fmt.MISSING, F.text(t.get("claim")) or fmt.MISSING,
                     "rejected" if t.get("rejected") else "not rejected", fmt.num(t.get("p_value")),
                     fmt.confidence(t.get("confidence")), "yes" if t.get("testable") else "no",
                     fmt.num(sigma_eff) if sigma_eff is not None else "none rejected",
                     _eps(F.number(eff.get("epsilon"), "effective.epsilon")),
                     F.text(details.get("decided_by")) or fmt.MISSING))
    out.append(Table(("test", "claimed curve", "result", "p-value", "confidence", "could reject",
                      "effective sigma (below)", "effective epsilon", "decided by"), tuple(rows)))
    return out


def _estimates_section(report: Mapping[str, Any]) -> list[Block]:
    out: list[Block] = [Heading("Estimates (not guaranteed bounds)"), Paragraph(ESTIMATES_NOTE)]
    rows = [(e.name, _eps(e.value), e.method or fmt.MISSING, fmt.num(e.delta), e.assumption or fmt.MISSING)
            for e in F.estimates(report)]
    if rows:
        out.append(Table(("estimate", "epsilon estimate", "method", "delta", "assumption"), tuple(rows)))
    else:
        out.append(Paragraph("No estimates in this audit."))
    return out


def _fpr_columns(attacks: Sequence[F.Attack]) -> list[float]:
    extra = {p.target_fpr for a in attacks for p in a.points
             if not any(math.isclose(p.target_fpr, s, rel_tol=1e-6) for s in F.STANDARD_FPRS)}
    return sorted(set(F.STANDARD_FPRS) | extra, reverse=True)


def _tpr_cell(attack: F.Attack, target: float) -> str:
    point = attack.at(target)
    if point is None:
        return fmt.MISSING
    cell = fmt.pct_interval(point.tpr, point.interval)
    if attack.n_nonmembers and not attack.measurable(target):
        cell += " *"
    return cell


def _attacks_section(report: Mapping[str, Any], figure: str | None) -> list[Block]:
    out: list[Block] = [Heading("Membership-inference attacks")]
    attacks = F.attacks(report)
    if not attacks:
        out.append(Paragraph("No attack results in this report."))
        return out
    targets = _fpr_columns(attacks)
    header = ("attack", "AUC", *(f"TPR at {fmt.pct(t)} FPR" for t in targets), "members / non-members")
    rows = tuple(
        (a.name, fmt.num(a.auc), *(_tpr_cell(a, t) for t in targets),
         f"{a.n_members if a.n_members is not None else fmt.MISSING} / "
         f"{a.n_nonmembers if a.n_nonmembers is not None else fmt.MISSING}")
        for a in attacks)
    out.append(Table(header, rows))
    if any("*" in cell for row in rows for cell in row[2:-1]):
        out.append(Paragraph("* target FPR below 1/(non-members): the TPR is read at zero false positives."))
    out += [Paragraph(message, lead="Warning:") for message in F.attack_warnings(report)]
    if figure:
        out.append(Image(figure, "log-log ROC of every attack"))
    return out


def _utility_section(report: Mapping[str, Any]) -> list[Block]:
    utility = F.section(report, "utility")
    train, test = F.accuracy(report, "train"), F.accuracy(report, "test")
    models = F.items(utility, "models", "utility.models")
    gap = train - test if F.finite(train) and F.finite(test) else None
    rows = (("train accuracy", fmt.pct(train)), ("test accuracy", fmt.pct(test)),
            ("train - test gap", fmt.MISSING if gap is None else f"{100 * gap:.3g} percentage points"),
            ("models", str(len(models)) if models else fmt.MISSING))
    return [Heading("Utility"), Table(("", "value"), rows)]


def _scalar(value: Any) -> str:
    if value is None:
        return fmt.MISSING
    if isinstance(value, float):
        return fmt.num(value)
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _gate_section(report: Mapping[str, Any]) -> list[Block]:
    gate = F.section(report, "gate")
    if not gate:
        return []
    return [Heading("Gate"), Table(("", "value"), tuple((str(k), _scalar(v)) for k, v in gate.items()))]


def _timings_section(report: Mapping[str, Any]) -> list[Block]:
    timings = F.section(report, "timings")
    if not timings:
        return [Heading("Timings"), Paragraph("No timings recorded.")]
    rows = []
    total = 0.0
    for key, value in timings.items():
        seconds = F.number(value, f"timings.{key}")
        label = str(key)[:-2] if str(key).endswith("_s") else str(key)
        rows.append((label.replace("_", " "), fmt.seconds(seconds)))
        total += seconds if F.finite(seconds) else 0.0
    rows.append(("total", fmt.seconds(total)))
    return [Heading("Timings"), Table(("stage", "time"), tuple(rows))]


def report_blocks(report: Mapping[str, Any], *, roc_figure: str | None = None,
                  epsilon_figure: str | None = None) -> list[Block]:
    """The whole report; figures are referenced by file name when given."""
    report = F.check_report(report)
    decision = F.decision(report) or "NO VERDICT"
    meta = [f"dpaudit {report['dpaudit_version']}" if report.get("dpaudit_version") else None,
            f"created {report['created']}" if report.get("created") else None,
            f"run directory {report['run_dir']}" if report.get("run_dir") else None]
    blocks: list[Block] = [
        Heading(f"Audit report: {F.run_name(report)}", 1),
        Paragraph(verdict_text(report), lead=f"Verdict: {decision}."),
        _headline(report),
    ]
    if any(meta):
        blocks.append(Paragraph("; ".join(m for m in meta if m) + "."))
    blocks += _epsilon_section(report, epsilon_figure)
    blocks += _claim_section(report)
    blocks += _estimates_section(report)
    blocks += _attacks_section(report, roc_figure)
    blocks += _utility_section(report)
    blocks += _gate_section(report)
    blocks += _timings_section(report)
    blocks += [Heading("How to read this report"), Paragraph(HOW_TO_READ)]
    config = report.get("config")
    if config:
        blocks += [Heading("Configuration"), Code(json.dumps(config, indent=2, sort_keys=True, default=str), "json")]
    return blocks


# --- the comparison -------------------------------------------------------------------


def comparison_blocks(summaries: Sequence[F.RunSummary], front_tpr: Sequence[bool],
                      front_eps: Sequence[bool], figure: str | None = None,
                      settings: Sequence[str] | None = None) -> list[Block]:
    """The comparison; ``settings[i]`` (what sets run ``i`` apart, as the figure labels it)
    gets its own column when it says more than the run names."""
    names = [s.name for s in summaries]
    with_setting = settings is not None and list(settings) != names
    rows = []
    for k, (s, on_tpr, on_eps) in enumerate(zip(summaries, front_tpr, front_eps)):
        tpr = fmt.pct_interval(s.tpr, s.tpr_interval)
        marks = [m for m, on in (("TPR", on_tpr), ("epsilon", on_eps)) if on]
        rows.append((s.name, *((settings[k],) if with_setting else ()), s.mode or fmt.MISSING,
                     _eps(s.claimed_epsilon), _eps(s.epsilon_lower_bound),
                     tpr, s.attack or fmt.MISSING, fmt.num(s.auc), fmt.pct(s.test_accuracy),
                     s.decision or fmt.MISSING, ", ".join(marks) or fmt.MISSING))
    blocks: list[Block] = [
        Heading("Audit comparison", 1),
        Paragraph(f"{len(summaries)} runs. For each run, the strongest attack is the one with the highest "
                  "TPR at 0.1% FPR; its AUC is shown beside it. The epsilon lower bound is the best "
                  "guaranteed bound of the run (estimates are left out)."
                  + (" The setting column gives each run's values of the config keys that differ "
                     "among the runs; the figure labels the runs with it." if with_setting else "")),
        Table(("run", *(("setting",) if with_setting else ()), "mode", "claimed epsilon",
               "best epsilon lower bound", "TPR at 0.1% FPR", "strongest attack", "AUC (same attack)",
               "test accuracy", "verdict", "Pareto front"),
              tuple(rows)),
        Paragraph("Pareto front: no other run has a test accuracy at least as high and a leakage at most as "
                  "low (TPR at 0.1% FPR, or epsilon lower bound), one of them strictly. Runs missing either "
                  "number are not placed. A lower measured leakage is not evidence that a run is private: "
                  "each audit can show at most its power."),
    ]
    if figure:
        blocks.append(Image(figure, "privacy against utility, one point per run"))
    return blocks
