"""Defences compared: utility against membership leakage, one audit per defence setting.

Every row is one black-box audit through the pipeline (:func:`audit.config.load_config`
on ``experiments/defences.toml`` plus the row's ``--set`` overrides, then
:func:`audit.pipeline.run_audit`): the same data, model, canaries and number of models K
for every row. Rows:

* plain SGD (``trainer.kind = "plain"``): no defence, weight decay, dropout, early
  stopping, label smoothing, distillation (the released model is a student fit to the
  teacher's soft labels on the base records);
* the fast vectorised trainer (``trainer.kind = "fast"``; it has no dropout, label
  smoothing, early stopping or distillation): no defence again (the baseline of this
  group), the output-side defences top-1, rounding and label-only outputs (Shokri et
  al. 2017; Choquette-Choo et al. 2021), and DP-SGD at target epsilons from 100 down to 1 (the large one to see how much
  utility DP-SGD recovers on this small 100-class task).

From each report the table takes train and test accuracy (mean over the K models),
LOSS and LiRA (online, fixed variance) AUC and TPR at 1% and 0.1% FPR, pooled
leave-one-out over the K targets with 95% Clopper-Pearson intervals, the label-only
attack's AUC and TPR, the guaranteed one-run epsilon lower bound on model 0 (Steinke,
Nasr & Jagielski 2023; best over the configured bound attacks, each at Bonferroni-split
confidence, 95% overall) with its power, and the claimed epsilon of the DP rows. The
privacy-utility figure and its Pareto fronts come from :func:`audit.report.compare_reports`
(the code behind ``dpaudit report``), whose TPR axis is each run's strongest attack at
0.1% FPR.

``python -m experiments.defences [--quick] [--runs DIR] [--out DIR]``: audits go to run
directories under ``--runs`` (default ``runs/defences``; a re-run resumes them, so
finished models are not retrained), then ``defences.md``, ``defences.png`` and
``defences.json`` are written to ``--out`` (default ``experiments/results``). ``--quick``
shrinks data, model and K and, without ``--out``, only prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from audit.atomic import atomic_open
from audit.config import AuditConfig, load_config
from audit.errors import InputError
from audit.pipeline import run_audit
from audit.pipeline.rundir import write_json
from audit.report import compare_reports
from audit.report import fields as F
from audit.report import formatting as fmt

HERE = Path(__file__).resolve().parent
BASE_CONFIG = HERE / "defences.toml"
RESULTS = HERE / "results"
DEFAULT_RUNS = Path("runs/defences")

LIRA = "lira-online-fixed"
LABEL_ONLY = "label-only"
LOSS = "loss"
FAST = ('trainer.kind="fast"',)


@dataclass(frozen=True)
class Defence:
    """One row: ``slug`` names the run directory, ``label`` the run (short: it labels the figure)."""

    slug: str
    label: str
    defence: str
    setting: str
    overrides: tuple[str, ...] = ()


DEFENCES: tuple[Defence, ...] = (
    Defence("none-plain", "none", "no defence", "-"),
    Defence("weight-decay", "wd 5e-3", "weight decay", "weight_decay = 5e-3", ("trainer.weight_decay=5e-3",)),
    Defence("weight-decay-strong", "wd 5e-2", "weight decay", "weight_decay = 5e-2", ("trainer.weight_decay=5e-2",)),
    Defence("dropout", "dropout 0.5", "dropout", "p = 0.5 after the hidden layer", ("model.dropout=0.5",)),
    Defence("early-stopping", "early stop", "early stopping", "patience 2 epochs on a 10% validation split",
            ("trainer.patience=2",)),
    Defence("label-smoothing", "smooth 0.3", "label smoothing", "0.3", ("trainer.label_smoothing=0.3",)),
    Defence("distillation", "distill T=4", "distillation", "student on the teacher's soft labels, T = 4",
            ("defence.distillation=true", "defence.distill_temperature=4.0")),
    Defence("none-fast", "none (fast)", "no defence", "-", FAST),
    Defence("top-1", "top-1", "top-k outputs", "k = 1 (top probability only)", (*FAST, "defence.top_k=1")),
    Defence("rounding", "round 1dp", "rounded outputs", "1 decimal", (*FAST, "defence.decimals=1")),
    Defence("label-output", "label only", "label-only outputs", "arg-max label only", (*FAST, "defence.label_only=true")),
    Defence("dp-eps100", "DP eps=100", "DP-SGD", "target eps 100", (*FAST, "dp.target_epsilon=100.0")),
    Defence("dp-eps16", "DP eps=16", "DP-SGD", "target eps 16", (*FAST, "dp.target_epsilon=16.0")),
    Defence("dp-eps4", "DP eps=4", "DP-SGD", "target eps 4", (*FAST, "dp.target_epsilon=4.0")),
    Defence("dp-eps1", "DP eps=1", "DP-SGD", "target eps 1", (*FAST, "dp.target_epsilon=1.0")),
)

QUICK_OVERRIDES: tuple[str, ...] = (
    'data.name="fair"', "data.n=900", "data.population=100", "data.test=200", "model.widths=[8]",
    "trainer.epochs=2", "audit.models=5", "audit.canaries=60",
)
"""``--quick``: tiny audits (2-class fair data, 5 models, 60 canaries)..."""
QUICK_ROWS = ("none-plain", "distillation", "none-fast", "top-1", "dp-eps4")
"""... of one row per kind of mechanism (plain training, a two-stage trainer, the fast
trainer, an output defence, DP-SGD); every row's config is validated all the same."""


def config_for(defence: Defence, runs: Path, extra: Sequence[str] = ()) -> AuditConfig:
    """The row's validated config: the base file, then ``extra`` and the row's overrides."""
    names = (f"name={json.dumps(defence.label)}", f"output_dir={json.dumps(str(runs / defence.slug))}")
    return load_config(BASE_CONFIG, (*extra, *defence.overrides, *names))


def _attack(report: dict, name: str) -> F.Attack | None:
    return next((a for a in F.attacks(report) if a.name == name), None)


def _point(attack: F.Attack | None, fpr: float) -> dict[str, Any]:
    p = attack.at(fpr) if attack else None
    return {"tpr": None if p is None else p.tpr, "interval": None if p is None or p.interval is None else list(p.interval)}


def row(defence: Defence, config: AuditConfig, report: dict) -> dict[str, Any]:
    """The table's numbers for one audit, read from its report (:mod:`audit.report.fields`)."""
    out: dict[str, Any] = {
        "slug": defence.slug, "label": defence.label, "defence": defence.defence, "setting": defence.setting,
        "overrides": list(defence.overrides),
        "trainer": config.trainer.kind, "mode": report["mode"],
        "train_accuracy": F.accuracy(report, "train"), "test_accuracy": F.accuracy(report, "test"),
        "claimed_epsilon": F.claimed_epsilon(report),
        "epsilon_lower_bound": F.best_bound(report), "power": F.power(report),
        "bound_confidence": config.confidence,
        "strongest_attack": F.summarize(report).attack,
        "run_dir": report["run_dir"], "timings": report["timings"],
    }
    for key, name in (("loss", LOSS), ("lira", LIRA), ("label_only", LABEL_ONLY)):
        attack = _attack(report, name)
        out[key] = {
            "attack": name,
            "auc": attack.auc if attack else None,
            "n_members": attack.n_members if attack else None,
            "n_nonmembers": attack.n_nonmembers if attack else None,
            "tpr_at_1%": _point(attack, 0.01),
            "tpr_at_0.1%": _point(attack, 0.001),
        }
    return out


def run_all(defences: Sequence[Defence], runs: Path, extra: Sequence[str] = (), *,
            progress: bool = False) -> tuple[list[dict], list[dict]]:
    """Run (or resume) each row's audit; returns (reports, rows) in the order given.

    Every config is validated before the first audit starts, so a bad row fails fast."""
    configs = [config_for(defence, runs, extra) for defence in defences]
    reports, rows = [], []
    for defence, config in zip(defences, configs):
        start = time.perf_counter()
        report = run_audit(config, resume=True, progress=progress)
        elapsed = time.perf_counter() - start
        print(f"{defence.label}: {elapsed:.0f} s", file=sys.stderr)
        reports.append(report)
        rows.append({**row(defence, config, report), "seconds": elapsed})
    return reports, rows


# --- the Markdown ------------------------------------------------------------------------

LABEL_ONLY_NOTE = (
    "The label-only attack here has one query per record (the pipeline's augmentations are for images), so "
    "it sees whether the released label is correct and, to order ties, the released outputs' margin. Under "
    "top-1 and rounding that margin still carries the (coarsened) confidence; under label-only outputs it is "
    "constant and every correct record ties, so no threshold reaches a low FPR: a TPR of 0 at 1% or 0.1% FPR "
    "there is a limit of this one-query attack, not evidence that label-only outputs stop membership "
    "inference (Choquette-Choo et al. 2021 query perturbed copies of each record). The label-only AUC, which "
    "ties do not hide, shows the leak that remains. The same holds for the epsilon lower bound: it is only "
    "as strong as the attacks that score the canaries."
)


def _tpr(point: dict) -> str:
    interval = point["interval"]
    return fmt.pct_interval(point["tpr"], None if interval is None else tuple(interval))


def table(rows: Sequence[dict]) -> str:
    header = ("defence", "setting", "trainer", "train acc", "test acc", "LOSS AUC", "LiRA AUC",
              "LiRA TPR @ 1% FPR", "LiRA TPR @ 0.1% FPR", "label-only AUC", "label-only TPR @ 1% FPR",
              "label-only TPR @ 0.1% FPR", "eps lower bound (power)", "claimed eps")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = (
            r["defence"], r["setting"], r["trainer"], fmt.pct(r["train_accuracy"]), fmt.pct(r["test_accuracy"]),
            fmt.num(r["loss"]["auc"]), fmt.num(r["lira"]["auc"]), _tpr(r["lira"]["tpr_at_1%"]),
            _tpr(r["lira"]["tpr_at_0.1%"]), fmt.num(r["label_only"]["auc"]), _tpr(r["label_only"]["tpr_at_1%"]),
            _tpr(r["label_only"]["tpr_at_0.1%"]), f"{fmt.num(r['epsilon_lower_bound'])} ({fmt.num(r['power'])})",
            fmt.num(r["claimed_epsilon"]),
        )
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _baseline(rows: Sequence[dict], trainer: str) -> dict | None:
    return next((r for r in rows if r["defence"] == "no defence" and r["trainer"] == trainer), None)


def findings(rows: Sequence[dict]) -> list[str]:
    """Sentences computed from the rows: each defence against the undefended run of its trainer."""
    out = []
    for r in rows:
        base = _baseline(rows, r["trainer"])
        if base is None or r is base:
            continue
        lira, lira0 = r["lira"]["tpr_at_0.1%"]["tpr"], base["lira"]["tpr_at_0.1%"]["tpr"]
        acc, acc0 = r["test_accuracy"], base["test_accuracy"]
        if not all(F.finite(v) for v in (lira, lira0, acc, acc0)):
            continue
        label = r["label_only"]["auc"]
        text = (f"{r['defence']} ({r['setting']}): LiRA TPR @ 0.1% FPR {fmt.pct(lira0)} -> {fmt.pct(lira)}, "
                f"test accuracy {fmt.pct(acc0)} -> {fmt.pct(acc)}")
        if F.finite(label) and F.finite(base["label_only"]["auc"]):
            text += f", label-only AUC {fmt.num(base['label_only']['auc'])} -> {fmt.num(label)}"
        text += f", epsilon lower bound {fmt.num(base['epsilon_lower_bound'])} -> {fmt.num(r['epsilon_lower_bound'])}"
        out.append(text + f" (against the undefended {r['trainer']} run).")
    return out


def _comparison_section(path: Path) -> str:
    """The table of ``dpaudit report``'s comparison.md, without its title and figure."""
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not line.startswith("# ") and not line.startswith("![")]
    return "\n".join(kept).strip()


def markdown(rows: Sequence[dict], config: AuditConfig, comparison: Path, *, seconds: float, quick: bool,
             command: str, figure: str | None, threads: int) -> str:
    d, m, t, a = config.data, config.model, config.trainer, config.audit
    n_pairs = [r["lira"]["n_members"] + r["lira"]["n_nonmembers"] for r in rows if r["lira"]["n_members"] is not None]
    strongest = ", ".join(f"{r['label']}: {r['strongest_attack']}" for r in rows)
    lines = [
        "# Defences compared: utility against membership leakage" + (" (quick)" if quick else ""),
        "",
        f"Reproduce: `{command}` (resumes the audits under its run directory; delete it to retrain). "
        f"Measured on 2 CPU cores shared with other jobs: {seconds:.0f} s in all, Python "
        f"{platform.python_version()} on {platform.machine()}, {threads} torch thread(s); per-row timings are in `defences.json`.",
        "",
        "## Setting",
        "",
        f"- Data `{d.name}` (n = {d.n}: {d.population} population records that no model trains on, {d.test} test "
        f"records, the rest the training pool), {a.canaries} {a.canary_kind} canaries drawn from the pool; the other "
        "pool records are in every model's training set. Same data, canaries and seeds in every row.",
        f"- Model: MLP widths {list(m.widths)}; SGD, {t.epochs} epochs, batch {t.batch_size}, lr {t.lr}, momentum {t.momentum}.",
        f"- K = {a.models} models per row; each includes each canary independently with probability 1/2. Attacks "
        f"({', '.join(a.attacks)}) are pooled leave-one-out: each model the target, the other {a.models - 1} its shadows "
        f"({min(n_pairs) if n_pairs else '-'}-{max(n_pairs) if n_pairs else '-'} (target, canary) pairs per row). "
        f"LiRA = `{LIRA}` (Carlini et al. 2022, online, fixed variance). One query per record, so the label-only "
        "attack is the correctness of the released label, ties ordered by the released outputs' margin.",
        f"- Two trainers: `plain` (one model at a time; the only one with dropout, label smoothing, early stopping and "
        "distillation) and `fast` (all K models at once, Poisson batches, the same SGD settings; DP-SGD with "
        f"C = {config.dp.max_grad_norm}, delta = {config.dp.delta}, noise from the target epsilon by the "
        f"{config.dp.accountant} accountant). Each group has its own undefended row; compare a defence with the "
        "undefended row of its trainer.",
        f"- Epsilon lower bound: the guaranteed one-run bound on model 0 (Steinke, Nasr & Jagielski 2023) at "
        f"{fmt.confidence(config.confidence)} confidence overall, the best over the bound attacks "
        f"({', '.join(a.bound_attacks)}, Bonferroni-split). It holds for any training algorithm, defended or not; "
        "power = the largest bound these canaries could show with a perfect attack. Rows whose bound sits near the "
        "power leak as much as this audit can measure. A bound below the claim is no evidence that a model is private.",
        "",
        "## Results",
        "",
        "TPR cells: pooled TPR [95% Clopper-Pearson interval].",
        "",
        table(rows),
        "",
    ]
    if figure:
        lines += [f"![privacy against utility]({figure})", "",
                  "Figure (from `dpaudit report`'s comparison): test accuracy against the TPR at 0.1% FPR of each "
                  "run's strongest attack (left) and against the epsilon lower bound (right); stars mark the Pareto "
                  f"front. Strongest attack at 0.1% FPR per row: {strongest}.", ""]
    lines += ["## Each defence against its undefended run", "", *(f"- {s}" for s in findings(rows)), "",
              LABEL_ONLY_NOTE, "",
              "## `dpaudit report` comparison", "", _comparison_section(comparison), ""]
    return "\n".join(lines)


# --- entry point -------------------------------------------------------------------------


def _write(path: Path, data: str | bytes) -> None:
    mode = "wb" if isinstance(data, bytes) else "w"
    kwargs = {} if isinstance(data, bytes) else {"encoding": "utf-8"}
    with atomic_open(path, mode, **kwargs) as handle:
        handle.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny version (about 30 s); prints the table unless --out is given")
    parser.add_argument("--runs", type=Path, default=None, help=f"run directories (default {DEFAULT_RUNS}; --quick: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="where defences.md/.png/.json go (default experiments/results)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on shared cores two spinning threads ran 10x slower)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        print(f"error: --threads {args.threads}: expected an int >= 1", file=sys.stderr)
        return 2
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(before)  # main() may run inside a longer process (the tests)


def _run(args: argparse.Namespace) -> int:
    extra = QUICK_OVERRIDES if args.quick else ()
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    command = "python -m experiments.defences" + (" --quick" if args.quick else "")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = args.runs if args.runs is not None else (Path(tmp) / "runs" if args.quick else DEFAULT_RUNS)
            start = time.perf_counter()
            if args.quick:
                for defence in DEFENCES:  # the rows the quick run skips must still be valid configs
                    config_for(defence, runs)
            chosen = [d for d in DEFENCES if d.slug in QUICK_ROWS] if args.quick else list(DEFENCES)
            reports, rows = run_all(chosen, runs, extra)
            comparison_dir = runs / "report"
            compare_reports(reports, comparison_dir)  # the same call as `dpaudit report RUN_DIR ... --out DIR`
            seconds = time.perf_counter() - start
            base = config_for(DEFENCES[0], runs, extra)
            figure = "defences.png" if out is not None else None
            text = markdown(rows, base, comparison_dir / "comparison.md", seconds=seconds, quick=args.quick,
                            command=command, figure=figure, threads=args.threads)
            print(text)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                _write(out / "defences.png", (comparison_dir / "comparison.png").read_bytes())
                _write(out / "defences.md", text)
                payload = {"command": command, "machine": "2 CPU cores shared with other jobs", "seconds": seconds,
                           "base_config": base.model_dump(mode="json"), "rows": rows}
                write_json(out / "defences.json", payload)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
