"""Benchmark: what ``attach_audit`` costs a user's own Opacus training loop (issue 15, item 2).

For each of three small models (an MLP, a CNN and a one-layer transformer on 8 x 8
inputs, 10 classes), the same Opacus loop (``make_private``, Poisson sampling,
``grad_sample_mode="hooks"``, plain SGD, sigma = 1, C = 1) is timed with and without
``attach_audit(optimizer, canaries=1000)``. In each round the arms are built side by side
in one process and trained on the same Poisson batches, interleaved step by step (the
order rotating at every step), so that load from other processes on this shared machine
falls on every arm alike; each figure is the median over rounds of an arm's summed step
times, wall-clock and CPU (set-up, ``make_private``, ``attach_audit`` and the data loader
not timed). ``finish`` (scoring the canaries and deciding, once per audit) is timed
separately and reported, not counted in the ratio.

The goal (issue 15): audited / plain <= 1.1. The canaries add m = 1,000 coordinates per
step against params x batch per-sample gradient entries, so the floor is near 1.0.

A third arm, "padded", is the audit with the canary rows appended after the backward pass
(every real per-sample gradient copied once more per step, as before
:mod:`canaries.reserved_rows`), timed in the same rounds against a plain arm of its own, so
the effect of reserving the rows in Opacus' hooks is measured side by side. Arms are
compared in pairs: three arms stepping in turn gave the padded arm's kept buffers a hand in
the memory allocator's state of the others (padded 1.6-1.8x, audited 1.0-1.12x for the MLP,
against 1.15x and 1.05x in pairs).

``python -m experiments.bench_audit_overhead [--quick] [--json]``: ``--json`` prints one
JSON object on the last line of stdout (``overhead`` maps each model to its ratio); the
full run (no ``--quick``) writes ``experiments/results/bench_audit_overhead.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from audit.atomic import atomic_open

RESULTS = Path(__file__).resolve().parent / "results"
MODEL_NAMES = ("mlp", "cnn", "transformer")


@dataclass(frozen=True)
class BenchConfig:
    """What is measured; :data:`QUICK` and :data:`FULL` are the two presets.

    ``n_records`` synthetic records, Poisson batches of expected size ``batch_size``
    (q = batch_size / n_records), ``steps`` timed optimizer steps per arm and round (after
    ``warmup`` untimed steps), ``rounds`` rounds.
    """

    n_records: int = 8192
    batch_size: int = 128
    steps: int = 60
    warmup: int = 2
    rounds: int = 9
    canaries: int = 1000
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5


QUICK = BenchConfig(n_records=1024, batch_size=64, steps=4, warmup=1, rounds=1)
FULL = BenchConfig()


class MLP(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.norm1 = nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.norm2 = nn.GroupNorm(4, 32)
        self.out = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.norm1(self.conv1(x.view(-1, 1, 8, 8)))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.norm2(self.conv2(x))), 2)
        return self.out(x.flatten(1))


class Transformer(nn.Module):
    """The 8 rows of an 8 x 8 input as 8 tokens through one encoder layer."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 64)
        self.encoder = nn.TransformerEncoderLayer(64, nhead=4, dim_feedforward=128, dropout=0.0, batch_first=True)
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        return self.out(self.encoder(self.embed(x.view(-1, 8, 8))).mean(dim=1))


def build_model(name: str) -> nn.Module:
    from opacus.validators import ModuleValidator

    model = {"mlp": MLP, "cnn": CNN, "transformer": Transformer}[name]()
    return ModuleValidator.fix(model) if name == "transformer" else model  # DPMultiheadAttention


def synthetic_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``float[n, 64]`` inputs in [0, 1) and ``int64[n]`` labels from a random linear teacher."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 64, generator=g)
    teacher = torch.randn(64, 10, generator=g)
    return x, (x @ teacher).argmax(dim=1)


@dataclass(frozen=True)
class ArmTiming:
    loop_s: float
    loop_cpu_s: float
    finish_s: float | None


ARMS = ("plain", "audited", "padded")


def _build_arm(name: str, data, cfg: BenchConfig, *, arm: str, seed: int):
    """The user's set-up for one arm: model, ``make_private``, and for "audited" and "padded"
    ``attach_audit`` ("padded": without the rows reserved in Opacus' hooks). Returns
    (model, optimizer, loader, engine, audit or None)."""
    from opacus import PrivacyEngine

    from audit import attach_audit
    from canaries import reserved_rows

    x, y = data
    torch.manual_seed(seed)
    model = build_model(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=cfg.batch_size)
    engine = PrivacyEngine(accountant="prv")
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=cfg.noise_multiplier,
        max_grad_norm=cfg.max_grad_norm, grad_sample_mode="hooks", poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(seed + 1))
    reserve = reserved_rows.reserve
    if arm == "padded":
        reserved_rows.reserve = lambda *args, **kwargs: None
    try:
        audit = attach_audit(optimizer, canaries=cfg.canaries, seed=seed) if arm != "plain" else None
    finally:
        reserved_rows.reserve = reserve
    model.train()
    return model, optimizer, loader, engine, audit


def run_round(name: str, data, cfg: BenchConfig, *, arms: tuple[str, ...], seed: int) -> dict[str, ArmTiming]:
    """One round: ``arms`` built side by side and trained on the same Poisson batches,
    interleaved step by step (the arm order rotates at every step), so that load from other
    processes, which moves on a scale of seconds, falls on every arm alike. Each arm's
    time is the sum of its ``cfg.steps`` timed steps (``zero_grad``, forward, backward,
    ``step``), after ``cfg.warmup`` untimed ones; the batches are drawn beforehand (the
    loader is the same in every arm and not timed)."""
    order = tuple(arms)
    arms = {arm: _build_arm(name, data, cfg, arm=arm, seed=seed) for arm in order}
    torch.manual_seed(seed)
    loader = arms[order[0]][2]
    batches = []
    while len(batches) < cfg.warmup + cfg.steps:
        batches.extend(b for b in loader if len(b[0]) > 0)
    wall = dict.fromkeys(order, 0.0)
    cpu = dict.fromkeys(order, 0.0)
    for i, (xb, yb) in enumerate(batches[: cfg.warmup + cfg.steps]):
        j = i % len(order)
        for arm in order[j:] + order[:j]:
            model, optimizer = arms[arm][0], arms[arm][1]
            t0, c0 = time.perf_counter(), time.process_time()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            if i >= cfg.warmup:
                wall[arm] += time.perf_counter() - t0
                cpu[arm] += time.process_time() - c0
    out = {}
    for arm in order:
        audit, engine = arms[arm][4], arms[arm][3]
        finish_s = None
        if audit is not None:
            t0 = time.perf_counter()
            audit.finish(accountant=engine.accountant, delta=cfg.delta)
            finish_s = time.perf_counter() - t0
        out[arm] = ArmTiming(wall[arm], cpu[arm], finish_s)
    return out


@dataclass(frozen=True)
class ModelResult:
    model: str
    params: int
    batch_size: int
    steps: int
    plain_s: float
    audited_s: float
    padded_s: float
    ratio: float
    paired_ratio: float
    padded_ratio: float
    cpu_ratio: float
    padded_cpu_ratio: float
    finish_s: float
    plain_rounds: list[float]
    audited_rounds: list[float]
    padded_rounds: list[float]


@dataclass(frozen=True)
class BenchResult:
    config: dict
    overhead: dict[str, float]
    models: list[ModelResult]
    machine: dict
    command: str
    wall_s: float


def run(cfg: BenchConfig, *, seed: int = 0) -> BenchResult:
    t_start = time.perf_counter()
    data = synthetic_data(cfg.n_records, seed)
    load_start = os.getloadavg()
    keys = (*ARMS, "plain_with_padded")
    times = {name: {**{k: [] for k in keys}, **{k + "_cpu": [] for k in keys}, "finish": []} for name in MODEL_NAMES}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        for r in range(cfg.rounds):
            for name in MODEL_NAMES:
                # Two pairs, each interleaved: three arms stepping in turn would have the
                # kept buffers of "padded" shape the memory allocator's state for the others.
                for pair in (("plain", "audited"), ("plain", "padded")):
                    for arm, t in run_round(name, data, cfg, arms=pair, seed=seed + r).items():
                        key = "plain_with_padded" if pair[1] == "padded" and arm == "plain" else arm
                        times[name][key].append(t.loop_s)
                        times[name][key + "_cpu"].append(t.loop_cpu_s)
                        if arm == "audited":
                            times[name]["finish"].append(t.finish_s)
    models = []
    for name in MODEL_NAMES:
        plain, audited, padded = (statistics.median(times[name][arm]) for arm in ARMS)
        models.append(ModelResult(
            model=name, params=sum(p.numel() for p in build_model(name).parameters()), batch_size=cfg.batch_size,
            steps=cfg.steps, plain_s=plain, audited_s=audited, padded_s=padded, ratio=audited / plain,
            paired_ratio=statistics.median(a / b for a, b in zip(times[name]["audited"], times[name]["plain"])),
            padded_ratio=padded / statistics.median(times[name]["plain_with_padded"]),
            finish_s=statistics.median(times[name]["finish"]),
            cpu_ratio=statistics.median(times[name]["audited_cpu"]) / statistics.median(times[name]["plain_cpu"]),
            padded_cpu_ratio=(statistics.median(times[name]["padded_cpu"])
                              / statistics.median(times[name]["plain_with_padded_cpu"])),
            plain_rounds=times[name]["plain"], audited_rounds=times[name]["audited"],
            padded_rounds=times[name]["padded"]))
    import opacus

    machine = {"torch": torch.__version__, "opacus": opacus.__version__, "python": platform.python_version(),
               "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "note": "2 shared CPU cores, single-threaded torch (torch.set_num_threads(1))",
               "load_average_start": [round(v, 2) for v in load_start],
               "load_average_end": [round(v, 2) for v in os.getloadavg()]}
    return BenchResult(config=asdict(cfg), overhead={m.model: m.ratio for m in models}, models=models,
                       machine=machine, command="", wall_s=time.perf_counter() - t_start)


def markdown(res: BenchResult) -> str:
    cfg = res.config
    rows = "\n".join(
        f"| {m.model} | {m.params:,} | {m.batch_size} | {m.steps} | {m.plain_s:.3f} | {m.audited_s:.3f} | "
        f"{m.ratio:.3f} | {m.paired_ratio:.3f} | {m.cpu_ratio:.3f} | {m.padded_s:.3f} | {m.padded_ratio:.3f} | "
        f"{m.padded_cpu_ratio:.3f} | {m.finish_s:.2f} |"
        for m in res.models)
    per_round = {m.model: {"plain": [round(t, 4) for t in m.plain_rounds],
                           "audited": [round(t, 4) for t in m.audited_rounds],
                           "padded": [round(t, 4) for t in m.padded_rounds]} for m in res.models}
    met = all(m.ratio <= 1.1 for m in res.models)
    return f"""# The audit's overhead on the user's own loop (issue 15, item 2)

`{res.command}`

Same Opacus loop (make_private, Poisson sampling, hooks mode, SGD, sigma = {cfg['noise_multiplier']:g},
C = {cfg['max_grad_norm']:g}) with and without `attach_audit(optimizer, canaries={cfg['canaries']})`;
{cfg['n_records']:,} synthetic records, expected batch {cfg['batch_size']} (q = {cfg['batch_size'] / cfg['n_records']:g}),
{cfg['steps']} timed steps per arm after {cfg['warmup']} untimed, medians over {cfg['rounds']} rounds; in each round two
pairs, (plain, audited) and (plain, padded), each training side by side on the same
batches, interleaved step by step (the order rotating at every step). `finish` (scoring and verdict, once per audit) is not in the
ratio. Ratio: median audited / median plain wall-clock seconds (the `overhead` in the
JSON); paired ratio: median over rounds of that round's audited / plain; CPU ratio: the
same as the ratio, in the process's CPU seconds. "Padded" is the audit with the canary
rows appended after the backward pass (a second copy of every real per-sample gradient per
step, the implementation before `canaries.reserved_rows`), timed in the same rounds against
its own plain arm ("padded / plain").
Goal: ratio <= 1.1 for each model: **{"met" if met else "not met"}**.

| model | params | batch | steps | plain s | audited s | ratio | paired ratio | CPU ratio | padded s | padded / plain | padded / plain, CPU | finish s |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

Machine: {res.machine['note']}; torch {res.machine['torch']}, opacus {res.machine['opacus']},
Python {res.machine['python']}, {res.machine['processor']}. Load average (1, 5, 15 min)
{", ".join(f"{v:.2f}" for v in res.machine["load_average_start"])} at the start,
{", ".join(f"{v:.2f}" for v in res.machine["load_average_end"])} at the end (above 1: another process
shared the two cores, and single rounds vary more). Total wall time {res.wall_s:.0f} s.

Per-round loop seconds: `{json.dumps(per_round)}`
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_audit_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 30 s); writes no files")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line of stdout")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run(QUICK if args.quick else FULL)
    finally:
        torch.set_num_threads(threads)
    command = "python -m experiments.bench_audit_overhead" + (" --quick" if args.quick else "") + (" --json" if args.json else "")
    res = BenchResult(**{**asdict(res), "models": res.models, "command": command})
    payload = asdict(res)
    print(markdown(res))
    if args.json:
        print(json.dumps(payload))
    if not args.quick:
        with atomic_open(RESULTS / "bench_audit_overhead.md") as fh:
            fh.write(markdown(res))
        with atomic_open(RESULTS / "bench_audit_overhead.json") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
