"""Benchmark: the fast many-model DP-SGD trainer against training the same K models
one after another with Opacus (``grad_sample_mode="hooks"``, the default, and
``"ghost"``), and against the machine's float32 matmul peak.

Workload (the issue's): K = 16 MLPs 600 -> 256 -> 100 (ReLU), DP-SGD with Poisson
batches of expected size 256, on synthetic Purchase-100-like data (600 binary
features, 100 classes) generated here. Every model has its own training half of the
data and its own batches. All three trainers do the same work per step: draw the
model's Poisson batch, gather it, per-example clipping, noise, SGD update. Opacus is
fed those batches directly (no DataLoader collation), which only makes it faster.

Figures are medians over rounds; each round times every method once, interleaved, so
that load from other processes hits them alike. Examples/s counts the examples
actually processed (sum of batch sizes over models and steps). FLOP/s of the fast
trainer counts matmul FLOPs analytically (:meth:`MLPShape.matmul_flops_per_example`);
the peak is the best of a few 2048 x 2048 float32 matmuls in the same run.

``python -m experiments.bench_trainers [--quick] [--json]``: ``--json`` prints exactly
one JSON object on stdout; the full run (no ``--quick``) writes
``experiments/results/bench_trainers.md`` and ``.json``.
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
from trainers.fast import DPSGDConfig, FastDPSGD, MLPShape, StackedMLP, Subsets, poisson_batch, spawn_generators

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    """What is measured; ``quick`` and ``full`` below are the two presets."""

    n_models: int = 16
    widths: tuple[int, ...] = (600, 256, 100)
    n_records: int = 20_000
    expected_batch_size: int = 256
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    lr: float = 0.1
    rounds: int = 5
    fast_steps: int = 20
    opacus_steps_per_model: int = 4
    hooks_models: int = 16
    threads: int = 2
    seed: int = 0


QUICK = BenchConfig(rounds=3, fast_steps=6, opacus_steps_per_model=2, hooks_models=4)
"""Short run; Opacus ``hooks`` (about 70x slower) is timed on the first 4 of the 16
models only: every model costs the same, so examples/s is estimated the same way."""
FULL = BenchConfig(rounds=5, fast_steps=30, opacus_steps_per_model=3)


def synthetic_purchase(n: int, d: int, classes: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``x: float[n, d]`` binary, ``y: long[n]``: each class a random binary prototype,
    each record its class prototype with every bit flipped with probability 0.1."""
    prototypes = torch.rand(classes, d, generator=generator) < 0.5
    y = torch.randint(0, classes, (n,), generator=generator)
    flips = torch.rand(n, d, generator=generator) < 0.1
    return (prototypes[y] ^ flips).float(), y


def matmul_peak_flops(repeats: int = 5, size: int = 2048) -> float:
    """Best float32 matmul FLOP/s of ``repeats`` timed ``size x size`` products."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


class Workload:
    """Data, subsets and per-model generators shared by all methods."""

    def __init__(self, cfg: BenchConfig):
        g = torch.Generator().manual_seed(cfg.seed)
        self.cfg = cfg
        self.shape = MLPShape(cfg.widths)
        self.x, self.y = synthetic_purchase(cfg.n_records, cfg.widths[0], cfg.widths[-1], g)
        keep = torch.rand(cfg.n_models, cfg.n_records, generator=g) < 0.5
        self.subsets = Subsets.from_keep(keep)
        self.rates = self.subsets.sample_rates(cfg.expected_batch_size)
        self.generators = spawn_generators(g, cfg.n_models)
        self.dp = DPSGDConfig(
            lr=cfg.lr, max_grad_norm=cfg.max_grad_norm, noise_multiplier=cfg.noise_multiplier,
            expected_batch_size=cfg.expected_batch_size,
        )

    def model_batch(self, k: int) -> torch.Tensor:
        """Model ``k``'s next Poisson batch, as record indices ``long[b]``."""
        sub = Subsets(members=self.subsets.members[k : k + 1], counts=self.subsets.counts[k : k + 1])
        b = poisson_batch(sub, self.rates[k : k + 1], [self.generators[k]])
        return b.index[0][b.mask[0]]


def time_fast(work: Workload, steps: int) -> tuple[float, int]:
    """(seconds, examples) of ``steps`` K-model steps, after one untimed warm-up step."""
    trainer = FastDPSGD(StackedMLP.init(work.shape, work.generators), work.dp)

    def one() -> int:
        batch = poisson_batch(work.subsets, work.rates, work.generators)
        out = trainer.step(work.x[batch.index], work.y[batch.index], batch.mask, noise_generators=work.generators)
        return int(out.batch_sizes.sum())

    one()
    t = time.perf_counter()
    examples = sum(one() for _ in range(steps))
    return time.perf_counter() - t, examples


def time_opacus_loop(work: Workload, steps: int, mode: str, n_models: int) -> tuple[float, int]:
    """(seconds, examples) of training the K models one after another with Opacus'
    ``PrivacyEngine.make_private(grad_sample_mode=mode)``, ``steps`` steps each, after
    one untimed warm-up step per model; set-up is not timed. Only the first
    ``n_models`` models are trained."""
    from opacus import PrivacyEngine

    seconds, examples = 0.0, 0
    dataset = torch.utils.data.TensorDataset(work.x[:512], work.y[:512])
    for k in range(n_models):
        module = work.shape.module()
        optimizer = torch.optim.SGD(module.parameters(), lr=work.cfg.lr)
        loader = torch.utils.data.DataLoader(dataset, batch_size=work.cfg.expected_batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            made = PrivacyEngine().make_private(
                module=module, optimizer=optimizer, data_loader=loader,
                noise_multiplier=work.cfg.noise_multiplier, max_grad_norm=work.cfg.max_grad_norm,
                criterion=nn.CrossEntropyLoss(), grad_sample_mode=mode,
                noise_generator=torch.Generator().manual_seed(k),
            )
        model, optimizer, criterion = made[0], made[1], (made[2] if mode == "ghost" else nn.CrossEntropyLoss())
        # make_private sets the normaliser from its own loader; use the workload's
        optimizer.expected_batch_size = work.cfg.expected_batch_size

        def one() -> int:
            idx = work.model_batch(k)
            optimizer.zero_grad()
            loss = criterion(model(work.x[idx]), work.y[idx])
            loss.backward()
            optimizer.step()
            return len(idx)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one()
            t = time.perf_counter()
            n = sum(one() for _ in range(steps))
            seconds += time.perf_counter() - t
        examples += n
    return seconds, examples


@dataclass(frozen=True)
class BenchResult:
    fast_examples_per_s: float
    opacus_hooks_loop_examples_per_s: float
    opacus_ghost_loop_examples_per_s: float
    speedup_vs_opacus_hooks_loop: float
    speedup_vs_opacus_ghost_loop: float
    fast_gflops: float
    matmul_peak_gflops: float
    fraction_of_matmul_peak: float
    per_round: dict
    load_average: tuple[float, float, float]
    config: dict
    machine: dict


def run(cfg: BenchConfig) -> BenchResult:
    torch.set_num_threads(cfg.threads)
    work = Workload(cfg)
    rounds = {"fast": [], "hooks": [], "ghost": [], "peak": []}
    for _ in range(cfg.rounds):
        rounds["peak"].append(matmul_peak_flops())
        s, n = time_fast(work, cfg.fast_steps)
        rounds["fast"].append(n / s)
        s, n = time_opacus_loop(work, cfg.opacus_steps_per_model, "hooks", cfg.hooks_models)
        rounds["hooks"].append(n / s)
        s, n = time_opacus_loop(work, cfg.opacus_steps_per_model, "ghost", cfg.n_models)
        rounds["ghost"].append(n / s)
    med = {k: statistics.median(v) for k, v in rounds.items()}
    fast_flops = med["fast"] * work.shape.matmul_flops_per_example()
    return BenchResult(
        fast_examples_per_s=med["fast"],
        opacus_hooks_loop_examples_per_s=med["hooks"],
        opacus_ghost_loop_examples_per_s=med["ghost"],
        speedup_vs_opacus_hooks_loop=med["fast"] / med["hooks"],
        speedup_vs_opacus_ghost_loop=med["fast"] / med["ghost"],
        fast_gflops=fast_flops / 1e9,
        matmul_peak_gflops=med["peak"] / 1e9,
        fraction_of_matmul_peak=fast_flops / med["peak"],
        per_round={k: [round(x, 1) for x in v] for k, v in rounds.items()},
        load_average=os.getloadavg(),
        config=asdict(cfg),
        machine={
            "cpus": os.cpu_count(), "threads": cfg.threads, "torch": torch.__version__,
            "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
        },
    )


def markdown(res: BenchResult) -> str:
    cfg = res.config
    load = ", ".join(f"{x:.2f}" for x in res.load_average)
    return f"""# Fast many-model DP-SGD trainer: benchmark

K = {cfg['n_models']} MLPs {' -> '.join(map(str, cfg['widths']))} (ReLU), DP-SGD (sigma = {cfg['noise_multiplier']},
C = {cfg['max_grad_norm']}), Poisson batches of expected size {cfg['expected_batch_size']}, each model on its own
random half of {cfg['n_records']} synthetic records (600 binary features, 100 classes).
Medians over {cfg['rounds']} interleaved rounds, all measured side by side in one run.

| trainer | examples/s (summed over models) | fast trainer's speed-up |
|---|---:|---:|
| fast trainer, 16 models at once (`trainers.fast`) | {res.fast_examples_per_s:,.0f} | 1.0x |
| Opacus `hooks` (default), 16 models one after another | {res.opacus_hooks_loop_examples_per_s:,.0f} | **{res.speedup_vs_opacus_hooks_loop:.1f}x** |
| Opacus `ghost`, 16 models one after another | {res.opacus_ghost_loop_examples_per_s:,.0f} | **{res.speedup_vs_opacus_ghost_loop:.1f}x** |

| compute | value |
|---|---:|
| fast trainer, matmul FLOP/s (analytic count: forward, input and weight gradients) | {res.fast_gflops:.1f} GFLOP/s |
| float32 matmul peak measured in the same run (2048 x 2048) | {res.matmul_peak_gflops:.1f} GFLOP/s |
| fraction of matmul peak | **{res.fraction_of_matmul_peak:.0%}** |

Per-round examples/s (and peak FLOP/s): `{json.dumps(res.per_round)}`

**Caveat: 2 CPU cores** (`torch.set_num_threads({res.machine['threads']})`, {res.machine['cpus']} CPUs visible), shared
with other processes: load average during the run {load} (1, 5, 15 min). Absolute
figures move with the load; the interleaved rounds are meant to keep the ratios fair.
Opacus is fed the same Poisson batches as tensors (no DataLoader collation) and its
set-up and first step per model are not timed, which favours Opacus. torch
{res.machine['torch']}, Python {res.machine['python']}.

Reproduce: `.venv/bin/python -m experiments.bench_trainers` (writes this file and
`bench_trainers.json`); `--quick --json` for a short run printing one JSON object.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_trainers", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 1 min); writes no files")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    res = run(QUICK if args.quick else FULL)
    payload = asdict(res)
    if args.json:
        print(json.dumps(payload))
    else:
        print(markdown(res))
    if not args.quick:
        with atomic_open(RESULTS / "bench_trainers.md") as fh:
            fh.write(markdown(res))
        with atomic_open(RESULTS / "bench_trainers.json") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
