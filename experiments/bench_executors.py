"""Benchmark: the same 16-model black-box audit with the in-process executor and with
Ray (a local Ray on this machine's CPUs, one model per task).

Each round runs, in turn: the audit in-process; ``ray.init`` (a fresh local Ray, timed
as start-up); the audit on Ray twice, first with cold workers (each worker process
imports torch and dpaudit on its first task) and then again with the workers warm;
``ray.shutdown`` (timed). Figures are medians over rounds. Every audit's observations
are compared bit for bit with the in-process run's.

On a 2-core machine Ray cannot be faster than the in-process loop (which already uses
both cores through torch's threads) and adds its start-up and per-task overhead; the
point of the executor is that the same config, with ``executor.address`` set, fans the
models out on a cluster.

``python -m experiments.bench_executors [--quick] [--out DIR]``: writes
``bench_executors.md`` to ``experiments/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audit.atomic import atomic_open
from audit.config import AuditConfig, parse_config

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    """The audit timed (``models`` plain MLPs on the fair dataset) and the rounds."""

    models: int = 16
    n: int = 4000
    canaries: int = 500
    epochs: int = 5
    widths: tuple[int, ...] = (64,)
    rounds: int = 3
    ray_cpus: int = 2
    seed: int = 0


FULL = BenchConfig()
QUICK = BenchConfig(models=5, n=1000, canaries=100, epochs=1, rounds=1)


def audit_config(bench: BenchConfig, out: Path, executor: str) -> AuditConfig:
    return parse_config({
        "name": f"bench-{executor}",
        "seed": bench.seed,
        "output_dir": str(out),
        "data": {"name": "fair", "n": bench.n, "population": 200, "test": 500},
        "model": {"widths": list(bench.widths)},
        "trainer": {"kind": "plain", "epochs": bench.epochs, "batch_size": 64},
        "audit": {"models": bench.models, "canaries": bench.canaries, "canary_kind": "mislabeled",
                  "attacks": ["loss", "lira-offline-fixed"]},
        "executor": {"kind": executor},
        "mlflow": {"enabled": False},
    })


def _timed_audit(config: AuditConfig) -> tuple[float, float, np.ndarray]:
    """(audit wall-clock s, training s, logits) of one audit."""
    from audit.observations import load_observations
    from audit.pipeline import run_audit

    t0 = time.perf_counter()
    report = run_audit(config, progress=False)
    wall = time.perf_counter() - t0
    return wall, report["timings"]["train_s"], load_observations(Path(config.output_dir) / "observations").logits


def measure(bench: BenchConfig, scratch: Path) -> dict:
    import ray

    rows: dict[str, list[float]] = {k: [] for k in (
        "local_s", "local_train_s", "ray_start_s", "ray_cold_s", "ray_cold_train_s",
        "ray_warm_s", "ray_warm_train_s", "ray_stop_s", "ray_total_s")}
    identical = True
    # Untimed warm-up: the first audit in a process pays for importing torch and the trainers.
    _timed_audit(audit_config(QUICK, scratch / "warm-up", "local"))
    for r in range(bench.rounds):
        wall, train, reference = _timed_audit(audit_config(bench, scratch / f"local-{r}", "local"))
        rows["local_s"].append(wall)
        rows["local_train_s"].append(train)
        t0 = time.perf_counter()
        ray.init(num_cpus=bench.ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
        rows["ray_start_s"].append(time.perf_counter() - t0)
        try:
            for phase in ("cold", "warm"):
                wall, train, logits = _timed_audit(audit_config(bench, scratch / f"ray-{phase}-{r}", "ray"))
                rows[f"ray_{phase}_s"].append(wall)
                rows[f"ray_{phase}_train_s"].append(train)
                identical &= bool(np.array_equal(logits, reference))
        finally:
            t0 = time.perf_counter()
            ray.shutdown()
            rows["ray_stop_s"].append(time.perf_counter() - t0)
        rows["ray_total_s"].append(rows["ray_start_s"][-1] + rows["ray_cold_s"][-1] + rows["ray_stop_s"][-1])
    medians = {k: statistics.median(v) for k, v in rows.items()}
    return {"medians": medians, "rounds": rows, "identical": identical, "ray_version": ray.__version__}


def render(bench: BenchConfig, result: dict, command: str) -> str:
    m = result["medians"]
    per_model = lambda s: s / bench.models  # noqa: E731
    lines = [
        "# In-process executor against local Ray",
        "",
        f"Command: `{command}` ({bench.rounds} round(s), medians). Machine: {os.cpu_count()} CPU cores "
        f"({platform.machine()}, Python {platform.python_version()}, Ray {result['ray_version']}), "
        "shared with other work while it ran.",
        "",
        f"Workload: one black-box audit, {bench.models} plain MLPs (widths {list(bench.widths)}, {bench.epochs} epochs) "
        f"on the fair dataset (n = {bench.n}, {bench.canaries} mislabeled canaries), one model per unit. "
        f"Ray: a local Ray with {bench.ray_cpus} CPUs, 1 CPU per task, so {bench.ray_cpus} models at a time; "
        f"the in-process loop trains one model at a time; every unit computes on `executor.threads` = "
        f"{audit_config(bench, Path('.'), 'local').executor.unit_threads} torch thread(s) under both executors "
        "(float sums depend on the thread count; the same count makes the observations bit-identical). "
        "An untimed local audit first pays for the imports.",
        "",
        "| executor | whole audit (s) | training (s) | training per model (s) |",
        "| --- | ---: | ---: | ---: |",
        f"| in-process (`kind = \"local\"`) | {m['local_s']:.3g} | {m['local_train_s']:.3g} | {per_model(m['local_train_s']):.3g} |",
        f"| Ray, cold workers | {m['ray_cold_s']:.3g} | {m['ray_cold_train_s']:.3g} | {per_model(m['ray_cold_train_s']):.3g} |",
        f"| Ray, warm workers (same Ray, second audit) | {m['ray_warm_s']:.3g} | {m['ray_warm_train_s']:.3g} | {per_model(m['ray_warm_train_s']):.3g} |",
        "",
        f"Ray start-up (`ray.init`, local): {m['ray_start_s']:.1f} s; shutdown: {m['ray_stop_s']:.1f} s. "
        f"A first audit on a fresh local Ray, start-up and shutdown included: {m['ray_total_s']:.1f} s "
        f"against {m['local_s']:.1f} s in-process ({m['ray_total_s'] / m['local_s']:.2f}x).",
        "",
        "Observations bit-identical to the in-process run in every Ray audit: "
        f"{'yes' if result['identical'] else 'NO'}.",
        "",
        f"Caveat: this is {os.cpu_count()} cores shared with other processes, not a cluster. A local Ray runs at "
        f"most {bench.ray_cpus} models at once and pays for its start-up, for worker processes that each import "
        "torch and dpaudit, and for the object store; nothing here measures scaling. The point of the executor "
        "is that the same config, with `executor.address` pointing at a cluster, trains the models on as many "
        "CPUs or GPUs as the cluster has, with the same observations.",
        "",
        "Rounds (s): " + "; ".join(f"{k} {', '.join(f'{x:.1f}' for x in v)}" for k, v in result["rounds"].items()),
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_executors", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small audit, one round (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for bench_executors.md")
    args = parser.parse_args(argv)
    from audit.pipeline.executors import import_ray

    import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    bench = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as scratch:
        result = measure(bench, Path(scratch))
    command = "python -m experiments.bench_executors" + (" --quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    text = render(bench, result, command)
    with atomic_open(args.out / "bench_executors.md") as fh:
        fh.write(text)
    print(text)
    return 0 if result["identical"] else 3


if __name__ == "__main__":
    sys.exit(main())
