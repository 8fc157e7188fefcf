"""Performance (issue 8, section 6): the fast trainer against Opacus loops for K in
{1, 4, 16, 64}, a LiRA audit with 64 shadow models end to end, the overhead of a
one-run white-box audit over a plain DP-SGD run, and the peak memory of each.

1. **Trainers**: :func:`experiments.bench_trainers.run` at K models (its interleaved
   rounds, best and median): examples/s of the fast trainer, of Opacus ``hooks`` and
   ``ghost`` loops fed tensor batches, and of the loops a user writes from Opacus'
   documentation (DataLoader, set-up timed apart); speed-ups; fraction of the matmul
   FLOP/s measured in the same run.
2. **LiRA end to end**: :func:`audit.pipeline.run_audit` on synthetic Purchase-100
   (MLP 600 -> 256 -> 100, DP-SGD) with the *fast trainer* and 65 models (each model the
   target once, the other 64 its shadows), online and offline LiRA; wall-clock and the
   report's stage ``timings``.
3. **One-run audit overhead**: the pipeline's white-box gradient-canary audit (Opacus
   DP-SGD with Dirac canaries, ``trainer.kind = "dp"``) against
   :func:`trainers.opacus_dp.train_dp` on the same model, data, seeds and steps without
   canaries. Interleaved repeats; the ratio of medians.
4. **Memory**: every measurement runs in a fresh Python process that reports its own
   peak resident set (``VmHWM`` from ``/proc/self/status``); for the trainers, one process
   per trainer and K (a few steps), beside a process that only builds the data.

``python -m experiments.performance [--quick]``: the full run (about 10 minutes on a
quiet machine) writes ``experiments/results/performance.md`` and ``.json``; ``--quick``
prints the tables of a small run and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("fast", "hooks", "ghost", "doc_hooks", "doc_ghost")
METHOD_LABELS = {
    "fast": "fast trainer, K models at once",
    "hooks": "Opacus hooks, tensor batches",
    "ghost": "Opacus ghost, tensor batches",
    "doc_hooks": "Opacus hooks, documented loop",
    "doc_ghost": "Opacus ghost, documented loop",
}


@dataclass(frozen=True)
class Setting:
    """Sizes of one run (:data:`FULL`, :data:`QUICK`)."""

    ks: tuple[int, ...] = (1, 4, 16, 64)
    widths: tuple[int, ...] = (600, 256, 100)
    n_records: int = 20_000
    batch: int = 256
    bench_rounds: int = 4
    bench_examples_per_round: int = 8_192
    hooks_models: int = 4
    rss_steps: int = 2
    rss_methods: tuple[str, ...] = ("data", *METHODS)
    # LiRA end to end (pipeline, fast trainer)
    lira_data: str = "purchase"
    lira_n: int = 12_000
    lira_population: int = 1_000
    lira_test: int = 1_000
    lira_widths: tuple[int, ...] = (256,)
    lira_models: int = 65
    lira_canaries: int = 2_000
    lira_epochs: float = 5.0
    lira_batch: int = 256
    # white-box one-run audit vs plain DP-SGD (pipeline, Opacus)
    wb_data: str = "purchase"
    wb_n: int = 12_000
    wb_test: int = 1_000
    wb_model: str = "mlp"
    wb_widths: tuple[int, ...] = (256,)
    wb_canaries: int = 1_000
    wb_epochs: float = 1.0
    wb_batch: int = 256
    wb_repeats: int = 2
    noise_multiplier: float = 1.0
    lr: float = 0.1
    threads: int = 2
    seed: int = 0


FULL = Setting()
QUICK = Setting(
    ks=(2,), n_records=2_000, bench_rounds=2, bench_examples_per_round=1_024, hooks_models=1, rss_steps=1,
    rss_methods=("data", "fast", "ghost"),
    lira_data="fair", lira_n=None, lira_population=100, lira_test=100, lira_widths=(16,), lira_models=5,
    lira_canaries=50, lira_epochs=2.0, lira_batch=64,
    wb_data="fair", wb_n=1_500, wb_test=100, wb_model="logreg", wb_widths=(), wb_canaries=100, wb_epochs=1.0,
    wb_batch=64, wb_repeats=1,
)


# ---------------------------------------------------------------- children (one process each)

def _peak_rss_mib() -> float:
    """This process's peak resident set (``VmHWM``), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def bench_config(s: Setting, k: int):
    """The benchmark's configuration at K = ``k`` models: the issue's workload; steps per
    round sized so every method processes about ``bench_examples_per_round`` examples."""
    from experiments.bench_trainers import BenchConfig

    steps = max(1, round(s.bench_examples_per_round / (k * s.batch)))
    hooks_models = min(k, s.hooks_models)
    return BenchConfig(
        n_models=k, widths=tuple(s.widths), n_records=s.n_records, expected_batch_size=s.batch,
        noise_multiplier=s.noise_multiplier, lr=s.lr, rounds=s.bench_rounds, fast_steps=max(2, steps),
        hooks_steps=max(1, round(s.bench_examples_per_round / (8 * hooks_models * s.batch))),
        hooks_models=hooks_models, ghost_steps=steps, documented_steps=steps, threads=s.threads, seed=s.seed,
    )


def child_bench(s: Setting, k: int) -> dict:
    from experiments import bench_trainers

    return asdict(bench_trainers.run(bench_config(s, k)))


def child_rss(s: Setting, k: int, method: str) -> dict:
    """Peak RSS of one trainer alone: data, K models and ``rss_steps`` steps each
    (``method="data"``: the data and imports only)."""
    import torch

    from experiments import bench_trainers as b

    cfg = bench_config(s, k)
    torch.set_num_threads(cfg.threads)
    work = b.Workload(cfg)
    if method != "data":
        n_models = cfg.hooks_models if method in ("hooks", "doc_hooks") else k
        runner = {
            "fast": lambda: b.FastRunner(work),
            "hooks": lambda: b.OpacusLoop(work, "hooks", n_models),
            "ghost": lambda: b.OpacusLoop(work, "ghost", n_models),
            "doc_hooks": lambda: b.DocumentedOpacusLoop(work, "hooks", n_models),
            "doc_ghost": lambda: b.DocumentedOpacusLoop(work, "ghost", n_models),
        }[method]()
        runner.steps(s.rss_steps)
    else:
        n_models = 0
    return {"n_models_run": n_models}


def lira_tree(s: Setting, out: Path) -> dict:
    data = {"name": s.lira_data, "population": s.lira_population, "test": s.lira_test}
    if s.lira_n is not None:
        data["n"] = s.lira_n
    return {
        "name": "performance-lira", "seed": s.seed, "output_dir": str(out), "data": data,
        "model": {"name": "mlp", "widths": list(s.lira_widths)},
        "trainer": {"kind": "fast", "epochs": s.lira_epochs, "batch_size": s.lira_batch, "lr": s.lr},
        "dp": {"noise_multiplier": s.noise_multiplier, "max_grad_norm": 1.0},
        "audit": {"models": s.lira_models, "canaries": s.lira_canaries, "canary_kind": "natural",
                  "attacks": ["lira-online", "lira-offline", "lira-offline-fixed"],
                  "bound_attacks": ["lira-offline-fixed"]},
        "mlflow": {"enabled": False},
    }


def whitebox_tree(s: Setting, out: Path) -> dict:
    data = {"name": s.wb_data, "population": 0, "test": s.wb_test}
    if s.wb_n is not None:
        data["n"] = s.wb_n
    model = {"name": s.wb_model} | ({"widths": list(s.wb_widths)} if s.wb_model == "mlp" else {})
    return {
        "name": "performance-whitebox", "seed": s.seed, "output_dir": str(out), "data": data, "model": model,
        "trainer": {"kind": "dp", "epochs": s.wb_epochs, "batch_size": s.wb_batch, "lr": s.lr},
        "dp": {"noise_multiplier": s.noise_multiplier, "max_grad_norm": 1.0},
        "audit": {"canaries": s.wb_canaries, "canary_kind": "gradient"},
        "mlflow": {"enabled": False},
    }


def _run_pipeline(tree: dict) -> dict:
    import torch

    from audit.config import parse_config
    from audit.pipeline import run_audit

    torch.set_num_threads(tree.pop("_threads"))
    t = time.perf_counter()
    report = run_audit(parse_config(tree), progress=False)
    wall = time.perf_counter() - t
    return {"wall_s": wall, "timings": report["timings"], "verdict": report["verdict"]["decision"],
            "claimed_epsilon": report["claimed"]["epsilon"],
            "attacks": {name: {"auc": a.get("auc")} for name, a in report["attacks"].items()}}


def child_lira(s: Setting) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return _run_pipeline(lira_tree(s, Path(tmp) / "run") | {"_threads": s.threads})


def child_whitebox(s: Setting) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = _run_pipeline(whitebox_tree(s, Path(tmp) / "run") | {"_threads": s.threads})
    return out


def child_plain_dp(s: Setting) -> dict:
    """The same model, data and steps as :func:`child_whitebox`, trained with
    :func:`trainers.opacus_dp.train_dp` and no canaries (the seeds the white-box
    stage derives, so the same initial model and batches)."""
    import numpy as np
    import torch

    from audit.config import parse_config
    from audit.pipeline import data as pipeline_data
    from audit.pipeline.training import _dp_config, model_kwargs
    from trainers.models import build_model
    from trainers.opacus_dp import train_dp

    torch.set_num_threads(s.threads)
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(whitebox_tree(s, Path(tmp) / "run"))
    t0 = time.perf_counter()
    audit_data = pipeline_data.build(config)
    t1 = time.perf_counter()
    seeds = np.random.SeedSequence([config.seed, 4]).generate_state(4)
    net = build_model(config.model.name, audit_data.base.in_shape, audit_data.base.n_classes,
                      generator=torch.Generator().manual_seed(int(seeds[1])), **model_kwargs(config))
    result = train_dp(net, audit_data.base, config=_dp_config(config), seed=int(seeds[3]),
                      test=audit_data.test if len(audit_data.test) else None)
    t2 = time.perf_counter()
    return {"wall_s": t2 - t0, "timings": {"data_s": t1 - t0, "train_s": t2 - t1}, "steps": result.steps,
            "epsilon": result.epsilon}


CHILDREN = {"bench": child_bench, "rss": child_rss, "lira": child_lira, "whitebox": child_whitebox,
            "plain_dp": child_plain_dp}


def _child_main(spec: dict) -> int:
    setting = Setting(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.pop("setting").items()})
    part = spec.pop("part")
    result = CHILDREN[part](setting, **spec)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))
    return 0


def run_child(setting: Setting, part: str, **kwargs) -> dict:
    """Run one measurement in a fresh interpreter at this process's priority; its last
    stdout line is its JSON result (peak RSS included); ``process_s`` is its wall-clock
    from start to exit, imports included."""
    spec = json.dumps({"setting": asdict(setting), "part": part, **kwargs})
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "experiments.performance", "--child", spec],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"child {part} {kwargs} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t
    return result


# ---------------------------------------------------------------- the run

_BENCH_KEYS = (
    "fast_examples_per_s", "fast_noise2_examples_per_s", "opacus_hooks_loop_examples_per_s",
    "opacus_ghost_loop_examples_per_s", "documented_hooks_examples_per_s", "documented_ghost_examples_per_s",
    "speedup_vs_opacus_hooks_loop", "speedup_vs_opacus_ghost_loop", "speedup_vs_documented_hooks",
    "speedup_vs_documented_ghost", "fraction_of_matmul_peak", "fraction_of_matmul_peak_noise2",
    "matmul_peak_gflops", "fast_gflops", "noise_ms_per_fast_step",
)


def _progress(message: str) -> None:
    print(f"[performance] {message}", file=sys.stderr, flush=True)


def run(s: Setting) -> dict:
    load_start = os.getloadavg()
    trainers = {}
    for k in s.ks:
        _progress(f"trainers, K = {k}")
        b = run_child(s, "bench", k=k)
        row = {key: b[key] for key in _BENCH_KEYS}
        row["median"] = {key: b["median"][key] for key in _BENCH_KEYS if key in b["median"]}
        row["documented_hooks_setup_s_per_model"] = b["documented_hooks_setup_s_per_model"]
        row["documented_ghost_setup_s_per_model"] = b["documented_ghost_setup_s_per_model"]
        row["load_average"] = [b["load_average_start"], b["load_average"]]
        row["hooks_models"] = b["config"]["hooks_models"]
        row["peak_rss_mib"] = {m: run_child(s, "rss", k=k, method=m)["peak_rss_mib"] for m in s.rss_methods}
        trainers[k] = row
    _progress("LiRA end to end")
    lira = run_child(s, "lira")
    overhead = {"whitebox": [], "plain_dp": []}
    for r in range(s.wb_repeats):
        for part in ("whitebox", "plain_dp"):
            _progress(f"one-run audit overhead: {part}, repeat {r + 1}/{s.wb_repeats}")
            overhead[part].append(run_child(s, part))
    med = lambda part, f: statistics.median(f(x) for x in overhead[part])  # noqa: E731
    summary = {
        "audit_wall_s": med("whitebox", lambda x: x["wall_s"]),
        "plain_wall_s": med("plain_dp", lambda x: x["wall_s"]),
        "audit_train_s": med("whitebox", lambda x: x["timings"]["train_s"]),
        "plain_train_s": med("plain_dp", lambda x: x["timings"]["train_s"]),
        "audit_process_s": med("whitebox", lambda x: x["process_s"]),
        "plain_process_s": med("plain_dp", lambda x: x["process_s"]),
    }
    summary["ratio_wall"] = summary["audit_wall_s"] / summary["plain_wall_s"]
    summary["ratio_train"] = summary["audit_train_s"] / summary["plain_train_s"]
    summary["ratio_process"] = summary["audit_process_s"] / summary["plain_process_s"]
    import torch

    return {
        "setting": asdict(s),
        "trainers": trainers,
        "lira": lira,
        "overhead": {"runs": overhead, "summary": summary},
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "threads": s.threads, "torch": torch.__version__,
                    "python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }


# ---------------------------------------------------------------- report

def _load(xs) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def trainer_table(res: dict) -> list[str]:
    lines = [
        "| K | fast ex/s | fast, `noise_threads=2` | hooks loop ex/s | ghost loop ex/s | documented hooks ex/s | documented ghost ex/s "
        "| vs hooks loop | vs ghost loop | vs documented hooks | vs documented ghost | fast GFLOP/s | matmul peak GFLOP/s | fraction of peak (1 / 2 noise threads) | load at start / end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for k, r in res["trainers"].items():
        lines.append(
            f"| {k} | {r['fast_examples_per_s']:,.0f} | {r['fast_noise2_examples_per_s']:,.0f} "
            f"| {r['opacus_hooks_loop_examples_per_s']:,.0f} | {r['opacus_ghost_loop_examples_per_s']:,.0f} "
            f"| {r['documented_hooks_examples_per_s']:,.0f} | {r['documented_ghost_examples_per_s']:,.0f} "
            f"| {r['speedup_vs_opacus_hooks_loop']:.1f}x | {r['speedup_vs_opacus_ghost_loop']:.2f}x "
            f"| {r['speedup_vs_documented_hooks']:.1f}x | {r['speedup_vs_documented_ghost']:.2f}x "
            f"| {r['fast_gflops']:.1f} | {r['matmul_peak_gflops']:.1f} "
            f"| {r['fraction_of_matmul_peak']:.0%} / {r['fraction_of_matmul_peak_noise2']:.0%} "
            f"| {r['load_average'][0][0]:.2f} / {r['load_average'][1][0]:.2f} |"
        )
    return lines


def memory_table(res: dict) -> list[str]:
    lines = ["| K | data only | " + " | ".join(METHOD_LABELS[m] for m in METHODS) + " |",
             "|---:|---:|" + "---:|" * len(METHODS)]
    for k, r in res["trainers"].items():
        rss = r["peak_rss_mib"]
        cell = lambda m: f"{rss[m]:,.0f}" if m in rss else "not measured"  # noqa: E731
        lines.append(f"| {k} | {cell('data')} | " + " | ".join(cell(m) for m in METHODS) + " |")
    return lines


def loaded_warning(res: dict) -> list[str]:
    """A warning paragraph when the machine was busy at the start or end of the run."""
    from experiments.bench_trainers import OWN_LOAD, QUIET_LOAD, machine_was_busy

    if not machine_was_busy(res["load_average_start"][0], res["load_average_end"][0]):
        return []
    return [
        f"**The machine was not quiet** (1-minute load average above {QUIET_LOAD} at the start, or above "
        f"{QUIET_LOAD + OWN_LOAD} at the end counting the run's own two threads): other processes "
        "took much of both cores, unevenly over time. Every wall-clock figure here is slower than on a quiet "
        "machine, ratios of methods timed minutes apart (the one-run overhead repeats) are noisy, and "
        "Opacus' many small parallel ops lose more under contention than the fast trainer's large matmuls, "
        "which inflates the speed-ups. Memory figures are not affected.",
        "",
    ]


def markdown(res: dict, quick: bool) -> str:
    s = res["setting"]
    lira, ov = res["lira"], res["overhead"]["summary"]
    lt = lira["timings"]
    stage = " | ".join(f"{name.removesuffix('_s')} {v:.1f} s ({v / lira['wall_s']:.0%})" for name, v in lt.items())
    wb_runs = res["overhead"]["runs"]
    per_repeat = "; ".join(
        f"audit {a['wall_s']:.1f} s (train {a['timings']['train_s']:.1f} s) vs plain {p['wall_s']:.1f} s "
        f"(train {p['timings']['train_s']:.1f} s)"
        for a, p in zip(wb_runs["whitebox"], wb_runs["plain_dp"])
    )
    lira_n = "" if s["lira_n"] is None else f" (n = {s['lira_n']:,})"
    wb_widths = list(s["wb_widths"]) if s["wb_model"] == "mlp" else ""
    verdict_13 = "met" if ov["ratio_wall"] <= 1.3 else "**not met**"
    return "\n".join([
        "# Performance (issue 8, section 6)",
        "",
        f"Reproduce: `.venv/bin/python -m experiments.performance{' --quick' if quick else ''}` "
        f"({'quick run, not written' if quick else 'writes this file and performance.json'}). "
        "**Measured on 2 shared CPU cores** (other agents' processes ran beside it: the load averages "
        "are in every table); every figure comes from this one run, each measurement in a fresh process. "
        f"Load average (1, 5, 15 min) {_load(res['load_average_start'])} at the start, "
        f"{_load(res['load_average_end'])} at the end. torch {res['machine']['torch']}, "
        f"`torch.set_num_threads({s['threads']})`.",
        "",
        *loaded_warning(res),
        "## 1. Fast trainer against Opacus loops",
        "",
        f"MLP {' -> '.join(map(str, s['widths']))}, DP-SGD (sigma {s['noise_multiplier']}, C 1), Poisson batches "
        f"of expected size {s['batch']}, each model on its own random half of {s['n_records']:,} synthetic "
        f"Purchase-like records; `experiments.bench_trainers` at K models, {s['bench_rounds']} interleaved rounds, "
        "best round of each method (medians in the JSON). Speed-ups are the fast trainer's (noise on one thread) "
        "over each loop. Opacus `hooks` is timed on the first "
        f"min(K, {s['hooks_models']}) models and its examples/s used for all (every model costs the same). "
        "\"Tensor batches\": Opacus fed pre-built Poisson batches (no DataLoader, set-up untimed); "
        "\"documented\": the loop from Opacus' tutorials (`DataLoader(TensorDataset)`, `make_private(..., "
        "poisson_sampling=True)`), set-up below. FLOP/s of the fast trainer are analytic matmul FLOPs "
        "(forward, input and weight gradients) over time; the peak is the best 2048 x 2048 float32 matmul "
        "in the same run.",
        "",
        *trainer_table(res),
        "",
        "Set-up of the documented loops (DataLoader, `PrivacyEngine`, `make_private`), seconds per model: "
        + "; ".join(f"K={k}: hooks {r['documented_hooks_setup_s_per_model']:.3f}, ghost "
                    f"{r['documented_ghost_setup_s_per_model']:.3f}" for k, r in res["trainers"].items()) + ".",
        "",
        "## 2. LiRA audit with 64 shadow models, end to end",
        "",
        f"`audit.pipeline.run_audit` with the **fast trainer** (`trainer.kind = \"fast\"`): data `{s['lira_data']}`"
        f"{lira_n}, MLP widths {list(s['lira_widths'])}, "
        f"DP-SGD sigma {s['noise_multiplier']}, {s['lira_epochs']:g} epochs at batch {s['lira_batch']}, "
        f"{s['lira_models']} models (each the target once, the other {s['lira_models'] - 1} its shadows), "
        f"{s['lira_canaries']:,} natural canaries, {s['lira_population']:,} population records; attacks "
        "lira-online, lira-offline, lira-offline-fixed.",
        "",
        "| wall-clock (run_audit) | process (imports included) | peak RSS | stages (report `timings`) |",
        "|---:|---:|---:|---|",
        f"| {lira['wall_s']:.1f} s | {lira['process_s']:.1f} s | {lira['peak_rss_mib']:,.0f} MiB | {stage} |",
        "",
        "AUC: " + ", ".join(f"{n} {a['auc']:.3f}" for n, a in lira["attacks"].items() if a["auc"] is not None)
        + f"; verdict {lira['verdict']} at claimed epsilon {lira['claimed_epsilon']}.",
        "",
        "## 3. Overhead of a one-run audit",
        "",
        f"The pipeline's white-box audit ({s['wb_canaries']:,} Dirac gradient canaries, Opacus DP-SGD, "
        f"`trainer.kind = \"dp\"`; data `{s['wb_data']}`, model {s['wb_model']} {wb_widths}, "
        f"{s['wb_epochs']:g} epochs at batch {s['wb_batch']}, sigma {s['noise_multiplier']}) against "
        "`trainers.opacus_dp.train_dp` on the same model, data, seeds and steps without canaries (data "
        f"loading included in both). {s['wb_repeats']} interleaved repeats, medians. Target: at most 1.3x.",
        "",
        "| | one-run audit | plain DP-SGD | ratio |",
        "|---|---:|---:|---:|",
        f"| wall-clock (data, training, attacks, bounds) | {ov['audit_wall_s']:.1f} s | {ov['plain_wall_s']:.1f} s | **{ov['ratio_wall']:.2f}x** ({verdict_13}) |",
        f"| training only | {ov['audit_train_s']:.1f} s | {ov['plain_train_s']:.1f} s | {ov['ratio_train']:.2f}x |",
        f"| whole process (imports included) | {ov['audit_process_s']:.1f} s | {ov['plain_process_s']:.1f} s | {ov['ratio_process']:.2f}x |",
        f"| peak RSS (first repeat) | {wb_runs['whitebox'][0]['peak_rss_mib']:,.0f} MiB | {wb_runs['plain_dp'][0]['peak_rss_mib']:,.0f} MiB | "
        f"{wb_runs['whitebox'][0]['peak_rss_mib'] / wb_runs['plain_dp'][0]['peak_rss_mib']:.2f}x |",
        "",
        f"Per repeat: {per_repeat}. Audit stages (first repeat): "
        + ", ".join(f"{n} {v:.2f} s" for n, v in wb_runs["whitebox"][0]["timings"].items()) + ".",
        "",
        "## 4. Peak memory (RSS, MiB)",
        "",
        "Each cell a fresh process: the benchmark data (and imports) alone, or the data plus one "
        f"trainer's K models and {s['rss_steps']} step(s) of each (Opacus hooks: the first "
        f"min(K, {s['hooks_models']}) models). The documented loops hold each model's own copy of its "
        "training half (`TensorDataset(x[members], y[members])`), as a user's code would. The LiRA audit "
        "and the one-run audit are above.",
        "",
        *memory_table(res),
        "",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.performance", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (about 30 s); writes no files")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child_main(json.loads(args.child))
    res = run(QUICK if args.quick else FULL)
    md = markdown(res, args.quick)
    print(md)
    if not args.quick:
        from audit.atomic import atomic_open

        with atomic_open(RESULTS / "performance.md") as fh:
            fh.write(md)
        with atomic_open(RESULTS / "performance.json") as fh:
            json.dump(res, fh, indent=2, default=str)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
