"""The audit pipeline: one validated config -> train -> observe -> attack -> bound -> verdict.

``run_audit(config, resume=...)`` first checks every input that can be checked without
work (``audit.pipeline.preflight``: plugins and their claims, data, memory, accounting),
then creates the run directory, runs every stage and writes ``report.json`` atomically in
it. Bad input found later (a plugin returning malformed outputs) removes a run directory
that this call created, so the corrected rerun starts clean. The ``dpaudit run`` and
``dpaudit gate`` commands wrap it: they render the human report, log to MLflow (a tracking
failure is a warning, never a lost report) and, with ``[gate] model_name``, tag the registry.

Black-box audits (``audit.canary_kind`` natural, mislabeled, clipbkd, ood) train K models;
model 0 includes each canary independently with probability 1/2 and is the target of
the guaranteed one-run bound (Steinke, Nasr & Jagielski 2023), the other K - 1 are its
shadows. Attack figures (AUC, TPR at low FPR) are pooled leave-one-out over all K.
White-box audits (``canary_kind = "gradient"``) run DP-SGD once with m Dirac gradient
canaries and bound epsilon from their per-step readings.

``[executor]`` says where black-box models are trained: in this process (``local``) or
as Ray tasks (``ray``, ``audit.pipeline.executors``); the observations are the same.
A white-box audit is a single training run and always runs in this process.
"""

from __future__ import annotations

import datetime
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

import audit
from audit.config import AuditConfig
from audit.errors import InputError
from audit.pipeline import analysis, data, preflight, rundir, training, verdict

SCHEMA = "dpaudit.report/1"


def report_document(*, name: str, run_dir: str | None, config: dict, mode: str, claimed: dict, plugin: dict | None,
                    utility: dict, attacks, bounds, claim_tests, estimates, verdict: dict, timings: dict) -> dict[str, Any]:
    """The ``report.json`` document (schema :data:`SCHEMA`) of one audit, whoever ran it
    (``dpaudit run``, or ``audit.attach`` in the user's own loop); ``gate`` is filled later
    by ``dpaudit gate``."""
    return {
        "schema": SCHEMA,
        "dpaudit_version": audit.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "name": name,
        "run_dir": run_dir,
        "config": config,
        "mode": mode,
        "claimed": claimed,
        "plugin": plugin,
        "utility": utility,
        "attacks": attacks,
        "bounds": bounds,
        "claim_tests": claim_tests,
        "estimates": estimates,
        "verdict": verdict,
        "gate": None,
        "timings": timings,
    }


def _claim(config: AuditConfig, utility: dict[int, dict]) -> dict[str, Any]:
    if config.mode == "non-dp":
        return {"epsilon": None, "delta": None, "source": "non-private training"}
    if config.trainer.kind == "blackbox-plugin":
        return {"epsilon": config.dp.claimed_epsilon, "delta": config.dp.delta,
                "source": f"stated for the black-box plugin {config.trainer.plugin!r} (its constants or dp.claimed_epsilon)"}
    if config.trainer.kind == "command":
        import shlex

        return {"epsilon": config.dp.claimed_epsilon, "delta": config.dp.delta,
                "source": f"stated in dp.claimed_epsilon for the command {shlex.join(config.trainer.command)!r}"}
    eps = float(utility[0]["epsilon"])  # "inf" in JSON for an unbounded claim
    source = f"opacus-{config.dp.accountant} accountant"
    if config.trainer.kind == "fast":
        source += " (fast trainer, model 0's sample rate)"
        if config.trainer.variant:
            source += f", claim of faulty variant {config.trainer.variant!r}"
    if config.trainer.kind == "zoo":
        source += f" (claim of zoo variant {config.trainer.variant!r})"
    return {"epsilon": eps, "delta": config.dp.delta, "source": source}


def _claimed_dpsgd(config: AuditConfig, utility: dict[int, dict]) -> tuple[float, float, int] | None:
    """The claimed DP-SGD (sigma, q, T) whose privacy curve the audit tests on model 0 (the
    target of the one-run bound, white-box or black-box): its noise multiplier and steps,
    and the sample rate its accountant was given (a zoo variant's claim may be the bug).
    None for non-DP runs, trainers that state no DP-SGD claim (a black-box plugin's bare
    epsilon) and runs without noise (an infinite claim)."""
    if config.mode != "dp":
        return None
    model = utility[0]
    sigma, steps = float(model.get("noise_multiplier") or 0.0), int(model.get("steps") or 0)
    q = float(model.get("accounting_sample_rate") or model.get("sample_rate") or 0.0)
    if not (sigma > 0 and steps > 0 and 0 < q <= 1) or math.isinf(float(model.get("epsilon", math.inf))):
        return None
    return sigma, q, steps


def _utility_summary(utility: dict[int, dict]) -> dict[str, Any]:
    models = [utility[k] for k in sorted(utility)]
    tests = [m["test_accuracy"] for m in models if m.get("test_accuracy") is not None]
    return {
        "train_accuracy": float(np.mean([m["train_accuracy"] for m in models])),
        "test_accuracy": float(np.mean(tests)) if tests else None,
        "models": models,
    }


def run_audit(config: AuditConfig, *, resume: bool = False, progress: bool = True,
              checked: preflight.Checked | None = None) -> dict[str, Any]:
    """Run the audit described by ``config``; return the report (also written to disk).

    ``checked``: the result of ``preflight.check(config)`` when the caller ran it already.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    checked = checked if checked is not None else preflight.check(config)
    config = checked.config
    timings["data_s"] = time.perf_counter() - t0
    created = not Path(config.output_dir).exists()  # only a directory this call made is removed
    run_dir = rundir.prepare(config, resume=resume, plugin=checked.plugin)
    try:
        return _run(config, checked, run_dir, timings, progress=progress)
    except InputError:
        if created:  # bad input found late: leave nothing behind that blocks the corrected rerun
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run(config: AuditConfig, checked: preflight.Checked, run_dir, timings: dict[str, float], *,
         progress: bool) -> dict[str, Any]:
    audit_data = checked.data

    t0 = time.perf_counter()
    if config.audit.canary_kind == "gradient":
        observations, utility = training.train_whitebox(config, audit_data, run_dir)
        timings["train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        names = observations.metadata["stat_names"]
        members = observations.keep[0]
        all_scores = {n: observations.stats[0, :, names.index(n)] for n in names}
        attacks = analysis.canary_table(config, all_scores, members)
        scores = {n: all_scores[n] for n in config.audit.statistics}
        readings = rundir.load_readings(run_dir)
    else:
        keep = data.inclusion(config, len(audit_data.canaries))
        run, utility = training.train_blackbox(config, audit_data, keep, run_dir, progress=progress)
        timings["train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        observations = run.load()
        computed: dict = {}
        attacks = analysis.attack_table(config, observations, keep, computed=computed)
        scores, members = analysis.target_scores(config, observations, keep, computed=computed)
        readings = None
    timings["attacks_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    claimed = _claim(config, utility)
    delta = claimed["delta"] if claimed["delta"] is not None else config.dp.delta
    curve = _claimed_dpsgd(config, utility)
    bounds, estimates, claim_tests = analysis.bounds_and_estimates(config, scores, members, delta, claim=curve,
                                                                   readings=readings)
    g = config.gate
    if config.mode == "dp":
        decision = verdict.dp_verdict(bounds, claimed["epsilon"], config.confidence, on_inconclusive=g.on_inconclusive,
                                      claim_tests=claim_tests)
    else:
        decision = verdict.risk_verdict(attacks, bounds, attack=g.attack, at_fpr=g.at_fpr, max_tpr=g.max_tpr,
                                        decide_on=g.decide_on, on_inconclusive=g.on_inconclusive)
    timings["stats_s"] = time.perf_counter() - t0

    report = report_document(
        name=config.name, run_dir=str(run_dir), config=config.model_dump(mode="json"), mode=config.mode,
        claimed=claimed, plugin=checked.plugin, utility=_utility_summary(utility), attacks=attacks, bounds=bounds,
        claim_tests=claim_tests, estimates=estimates, verdict=decision, timings=timings)
    rundir.write_json(run_dir / "report.json", report)
    return report
