"""Black-box canaries compared: natural, mislabeled, crafted (ClipBKD) and out-of-distribution.

Setting (the canaries issue's): the same data, model and trainer for every
``audit.canary_kind``, the same number of canaries and K models, through the pipeline
(:func:`audit.config.parse_config` + :func:`audit.pipeline.run_audit`). Each model
includes each canary independently with probability 1/2 (the pipeline's one-run design).
Two trainers: plain SGD and DP-SGD, both with the fast vectorised trainer
(``trainer.kind = "fast"``, DP-SGD when ``dp.noise_multiplier`` is set).

Per kind and seed the table takes, from the audit report:

* the *strongest attack*: the one of :data:`ATTACKS` with the highest AUC (pooled over
  the K targets, leave-one-out), and its TPR at 1% and 0.1% FPR;
* the one-run epsilon lower bound on model 0 (``report["verdict"]``: the best of
  ``report["bounds"]``, Steinke, Nasr & Jagielski 2023; 95% confidence) and, for
  DP-SGD, the claimed epsilon and the audit's power.

Data: synthetic Purchase-100-like records (600 binary features, 100 classes), so ClipBKD,
which takes one direction of least variance per canary, has room for every canary.

``python -m experiments.blackbox_canaries [--quick] [--out DIR]``: the full run writes
``blackbox_canaries.md`` under ``experiments/results`` (or ``--out``); ``--quick`` runs a
tiny version (fair data, 8 canaries, 5 models, one seed) and prints the table only.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audit.atomic import atomic_open
from audit.config import parse_config
from audit.pipeline import run_audit

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("natural", "mislabeled", "clipbkd", "ood")
ATTACKS = ("loss", "lira-online-fixed", "lira-offline-fixed", "rmia")


@dataclass(frozen=True)
class Setting:
    data: str = "purchase"
    n: int = 2500
    population: int = 200
    test: int = 300
    widths: tuple[int, ...] = (64,)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    noise_multipliers: tuple[float, ...] = (1.0, 0.5)
    max_grad_norm: float = 1.0
    models: int = 8
    canaries: int = 200
    seeds: tuple[int, ...] = (0, 1, 2)


FULL = Setting()
QUICK = Setting(data="fair", n=600, population=50, test=50, widths=(16,), epochs=2, models=5, canaries=8, seeds=(0,),
                noise_multipliers=(1.0,))


def config_tree(setting: Setting, kind: str, *, noise: float | None, seed: int, out: Path) -> dict:
    """The audit config for one kind and seed; ``noise=None`` trains without privacy."""
    tree = {
        "name": f"canaries-{kind}-{'plain' if noise is None else f'dp{noise:g}'}-{seed}",
        "seed": seed,
        "output_dir": str(out),
        "data": {"name": setting.data, "n": setting.n, "population": setting.population, "test": setting.test},
        "model": {"widths": list(setting.widths)},
        "trainer": {"kind": "fast", "epochs": setting.epochs, "batch_size": setting.batch_size, "lr": setting.lr},
        "audit": {"models": setting.models, "canaries": setting.canaries, "canary_kind": kind, "attacks": list(ATTACKS)},
        "mlflow": {"enabled": False},
    }
    if noise is not None:
        tree["dp"] = {"noise_multiplier": noise, "max_grad_norm": setting.max_grad_norm}
    return tree


def summarise(report: dict) -> dict:
    """The strongest attack's AUC and TPR at 1% / 0.1% FPR, and the one-run bound on model 0."""
    name, best = max(report["attacks"].items(), key=lambda item: item[1]["auc"])
    tpr = {p["target_fpr"]: p["tpr"] for p in best["tpr_at_fpr"]}
    verdict = report["verdict"]
    # In a non-DP audit the verdict carries no bound; the report's bounds are there all the same.
    bound = max(report["bounds"], key=lambda b: b["epsilon_lower_bound"])
    return {
        "attack": name,
        "auc": best["auc"],
        "tpr_1": tpr[0.01],
        "tpr_01": tpr[0.001],
        "members": best["n_members"],
        "non_members": best["n_nonmembers"],
        "bound": bound["epsilon_lower_bound"],
        "bound_name": bound["name"],
        "claimed": verdict.get("claimed_epsilon"),
        "power": bound["details"].get("power"),
        "decision": verdict["decision"],
    }


def run(setting: Setting) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for noise in (None, *setting.noise_multipliers):
            for kind in KINDS:
                for seed in setting.seeds:
                    start = time.perf_counter()
                    out = Path(tmp) / f"{kind}-{noise}-{seed}"
                    report = run_audit(parse_config(config_tree(setting, kind, noise=noise, seed=seed, out=out)), progress=False)
                    rows.append({"kind": kind, "noise": noise, "seed": seed, "seconds": time.perf_counter() - start,
                                 **summarise(report)})
    return rows


def _stat(values) -> str:
    values = np.array([np.nan if v is None else v for v in values], dtype=float)
    if values.size == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} [{np.min(values):.3f}, {np.max(values):.3f}]"


def comparison(rows: list[dict]) -> str:
    """Which kind leads on each figure, and whether it leads on every seed (its worst above the others' best)."""
    parts = []
    for key, label in (("auc", "AUC"), ("tpr_1", "TPR @ 1% FPR"), ("tpr_01", "TPR @ 0.1% FPR"), ("bound", "eps lower bound")):
        by_kind = {k: [r[key] for r in rows if r["kind"] == k] for k in KINDS}
        means = {k: float(np.mean(v)) for k, v in by_kind.items()}
        top = max(means.values())
        leads = [k for k in KINDS if means[k] == top]
        if len(leads) > 1:
            parts.append(f"{label}: tie ({', '.join(leads)} at {top:.3f})")
            continue
        lead = leads[0]
        others = max(max(v) for k, v in by_kind.items() if k != lead)
        separated = min(by_kind[lead]) > others
        parts.append(f"{label}: {lead}" + (" (above every other kind on every seed)" if separated else " (ranges overlap)"))
    return "Highest mean: " + "; ".join(parts) + "."


def markdown(rows: list[dict], setting: Setting, seconds: float, quick: bool) -> str:
    lines = [
        "# Black-box canaries compared" + (" (quick)" if quick else ""),
        "",
        f"Data `{setting.data}` (n = {setting.n}, population {setting.population}, test {setting.test}), MLP "
        f"widths {list(setting.widths)}, fast trainer, {setting.epochs} epochs, batch {setting.batch_size}, lr {setting.lr}; "
        f"K = {setting.models} models, {setting.canaries} canaries of each kind, each included in each model with "
        f"probability 1/2. DP-SGD: noise multipliers {list(setting.noise_multipliers)}, C = {setting.max_grad_norm}, delta 1e-5. "
        f"Seeds {list(setting.seeds)}: mean [min, max].",
        "",
        f"Strongest attack = highest AUC among {', '.join(ATTACKS)} (leave-one-out over the K targets, scores pooled). "
        "The epsilon lower bound is the pipeline's one-run bound on model 0 (Steinke, Nasr & Jagielski 2023, "
        "95% confidence; best of `report['bounds']`, which is also `report['verdict']`'s bound under DP-SGD; "
        "without DP there is no claim and the bound is only a measure of leakage). Power = the largest epsilon the one-run audit could show "
        "with these canaries.",
        "",
    ]
    for noise in (None, *setting.noise_multipliers):
        dp = noise is not None
        lines += [
            f"## {f'DP-SGD, noise multiplier {noise:g}' if dp else 'Plain SGD (no privacy)'}",
            "",
            "| canary kind | strongest attack (per seed) | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | eps lower bound (model 0) | power |"
            + (" claimed eps | verdicts |" if dp else ""),
            "|---|---|---|---|---|---|---:|" + ("---:|---|" if dp else ""),
        ]
        for kind in KINDS:
            sel = [r for r in rows if r["kind"] == kind and r["noise"] == noise]
            line = (f"| {kind} | {', '.join(r['attack'] for r in sel)} | {_stat(r['auc'] for r in sel)} | "
                    f"{_stat(r['tpr_1'] for r in sel)} | {_stat(r['tpr_01'] for r in sel)} | "
                    f"{_stat(r['bound'] for r in sel)} | {np.mean([r['power'] for r in sel]):.2f} |")
            if dp:
                decisions = sorted({r["decision"] for r in sel})
                line += f" {np.mean([r['claimed'] for r in sel]):.2f} | {', '.join(decisions)} |"
            lines.append(line)
        lines += ["", comparison([r for r in rows if r["noise"] == noise]), ""]
    members = [r["members"] + r["non_members"] for r in rows]
    lines += [
        f"Each AUC / TPR pools {min(members)}-{max(members)} (target, canary) pairs (a canary counts for a target "
        f"when its shadows include it at least once and exclude it at least once); with {min(r['non_members'] for r in rows)}-"
        f"{max(r['non_members'] for r in rows)} non-members, 0.1% FPR allows "
        f"{max(r['non_members'] for r in rows) // 1000} false positives, so the TPR at 0.1% is the TPR at (almost) zero "
        "false positives and is coarse. Natural and mislabeled canaries are taken out of the training pool, so "
        f"those models train on {setting.canaries} fewer records and their claimed epsilon is a little higher.",
        "",
        f"Reproduce: `.venv/bin/python -m experiments.blackbox_canaries{' --quick' if quick else ''}`. "
        f"Total {seconds:.0f} s ({len(rows)} audits) on {platform.machine()} Python {platform.python_version()}, "
        "2 CPU cores shared with another job: timings are indicative only.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny version; print only")
    parser.add_argument("--out", type=Path, default=None, help="write the table here (default: experiments/results for the full run)")
    args = parser.parse_args(argv)
    setting = QUICK if args.quick else FULL
    start = time.perf_counter()
    rows = run(setting)
    text = markdown(rows, setting, time.perf_counter() - start, args.quick)
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "blackbox_canaries.md", "w") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
