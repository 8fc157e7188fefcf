"""The yardstick: a one-run audit of the idealised DP-SGD mechanism itself.

What the best white-box one-run audit can show about DP-SGD, with no model in the way:
m Dirac gradient canaries (Steinke, Nasr & Jagielski 2023, Section 7; Nasr et al. 2023),
each included independently with probability 1/2. At each of T steps an included canary
is present with probability q (Poisson sampling, like every real record), and its
coordinate of the noisy summed gradient reads

    x_t = b_t * C + N(0, sigma^2 C^2)       (b_t = 0 always for a non-included canary).

Each canary is scored by the log-likelihood ratio of its T readings
(:func:`canaries.iterate_scores.likelihood_ratio`) and, as a second score, by the plain
sum of its readings (:func:`canaries.iterate_scores.all_iterates`). The one-run epsilon
lower bound (Steinke, Nasr & Jagielski 2023, Theorem 5.2, with the valid search over
guess counts of :func:`audit.stats.one_run.epsilon_one_run_from_scores`) is computed for
each score. sigma is chosen so that Opacus' PRV accountant gives the claimed epsilon for
(q, T, delta).

The same audit is also run through real DP-SGD (:func:`opacus_audit`: Opacus, logistic
regression on synthetic data, canaries from :mod:`canaries.gradient`), which should match
the simulation if Opacus clips and noises as claimed.

``python -m experiments.yardstick [--quick] [--seeds N] [--no-opacus]``: the full run
writes ``experiments/results/yardstick.md``; ``--quick`` prints a two-epsilon,
simulation-only table. The simulation core is :func:`canaries.simulate.simulate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from audit.atomic import atomic_open
from audit.errors import InputError
from canaries.simulate import simulate  # noqa: F401  (the simulation core, importable from here too)

RESULTS = Path(__file__).resolve().parent / "results" / "yardstick.md"


@dataclasses.dataclass(frozen=True)
class OpacusRun:
    """The same audit run through Opacus' DP-SGD (:func:`opacus_audit`).

    Attributes:
      members: bool[canaries].
      llr: float[canaries]; likelihood ratio of the readings.
      total: float[canaries]; all-iterates sum.
      last_iterate: float[canaries]; descent of the canary slot along each canary.
      steps: number of optimizer steps taken.
    """

    members: np.ndarray
    llr: np.ndarray
    total: np.ndarray
    last_iterate: np.ndarray
    steps: int


def opacus_audit(
    *,
    n_canaries: int,
    steps: int,
    sample_rate: float,
    noise_multiplier: float,
    seed: int,
    n_records: int = 1000,
    features: int = 10,
    max_grad_norm: float = 1.0,
) -> OpacusRun:
    """Dirac canaries in real DP-SGD: logistic regression on synthetic data with Opacus.

    ``n_records`` Gaussian records (two classes, shifted means) are trained on with
    ``PrivacyEngine.make_private`` (Poisson sampling at rate ``1 / round(1 / sample_rate)``,
    the given noise multiplier and clipping norm) and plain SGD; ``n_canaries`` Dirac
    canaries on a :class:`canaries.gradient.CanarySlots` parameter, each included with
    probability 1/2, are inserted with :func:`canaries.gradient.with_canaries`.
    Everything is seeded from ``seed``; nothing is downloaded.
    """
    import torch
    from opacus import PrivacyEngine
    from torch import nn

    from canaries.gradient import CanarySlots, GradientCanaries, with_canaries

    batches = int(round(1.0 / sample_rate))
    rng = np.random.default_rng([seed, 1])
    y = rng.integers(0, 2, size=n_records)
    x = rng.normal(size=(n_records, features)) + 0.5 * (2 * y[:, None] - 1)
    members = rng.random(n_canaries) < 0.5
    torch.manual_seed(seed)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(features, 2)
            self.canary_slots = CanarySlots(n_canaries)

        def forward(self, inputs):
            return self.linear(inputs)

    model = Model()
    data = torch.utils.data.TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))
    loader = torch.utils.data.DataLoader(data, batch_size=max(1, n_records // batches))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "secure RNG turned off": seeded on purpose
        engine = PrivacyEngine(accountant="prv")
        private, optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(seed),
        )
    canaries = GradientCanaries.dirac(
        model.canary_slots.slots[0], sample_rate=1.0 / batches, members=members
    )
    with_canaries(optimizer, canaries, generator=torch.Generator().manual_seed(seed + 1))
    taken = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Opacus' backward-hook notes
        while taken < steps:
            for inputs, labels in private_loader:
                nn.functional.cross_entropy(private(inputs), labels).backward()
                optimizer.step()
                optimizer.zero_grad()
                taken += 1
                if taken == steps:
                    break
    obs = optimizer.canary_observations()
    return OpacusRun(obs.members, obs.likelihood_ratio, obs.all_iterates, obs.last_iterate, taken)


def noise_for_epsilon(epsilon: float, *, delta: float, sample_rate: float, steps: int) -> float:
    """sigma such that Opacus' PRV accountant gives ``epsilon`` for (q, T, delta)."""
    from audit.stats.accountant import noise_multiplier_for

    return noise_multiplier_for(target_epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps)


@dataclasses.dataclass(frozen=True)
class YardstickRow:
    """Bounds over seeds for one claimed epsilon: float[seeds] each."""

    claimed_epsilon: float
    noise_multiplier: float
    llr_bounds: np.ndarray
    sum_bounds: np.ndarray
    opacus_llr_bounds: np.ndarray | None = None
    opacus_sum_bounds: np.ndarray | None = None
    llr_fdp_estimates: np.ndarray | None = None  # f-DP estimates (Gaussian assumption), not bounds


def run(
    epsilons,
    *,
    seeds: int,
    n_canaries: int = 1000,
    steps: int = 1000,
    sample_rate: float = 0.01,
    delta: float = 1e-5,
    confidence: float = 0.95,
    opacus: bool = False,
    progress=None,
) -> list[YardstickRow]:
    """One-run bounds for each claimed epsilon, over seeds 0..seeds-1.

    With ``opacus=True`` each seed also runs :func:`opacus_audit` with the same settings.
    """
    from audit.stats.estimates import fdp_one_run_estimate
    from audit.stats.one_run import epsilon_one_run_from_scores

    rows = []
    for eps in epsilons:
        sigma = noise_for_epsilon(eps, delta=delta, sample_rate=sample_rate, steps=steps)
        llr_b, sum_b, op_llr, op_sum, fdp = [], [], [], [], []
        for seed in range(seeds):
            sim = simulate(
                n_canaries=n_canaries,
                steps=steps,
                sample_rate=sample_rate,
                noise_multiplier=sigma,
                rng=np.random.default_rng([seed, int(round(eps * 1000))]),
            )
            llr = epsilon_one_run_from_scores(sim.llr, sim.members, delta=delta, confidence=confidence)
            llr_b.append(llr.value)
            d = llr.details  # the f-DP estimate at the guesses the bound chose (Mahloujifar et al. 2024)
            fdp.append(
                fdp_one_run_estimate(d["canaries"], d["guesses"], d["correct"], delta=delta, confidence=confidence).value
                if d.get("guesses") else 0.0
            )
            sum_b.append(epsilon_one_run_from_scores(sim.total, sim.members, delta=delta, confidence=confidence).value)
            if opacus:
                real = opacus_audit(
                    n_canaries=n_canaries, steps=steps, sample_rate=sample_rate, noise_multiplier=sigma, seed=seed
                )
                op_llr.append(epsilon_one_run_from_scores(real.llr, real.members, delta=delta, confidence=confidence).value)
                op_sum.append(epsilon_one_run_from_scores(real.total, real.members, delta=delta, confidence=confidence).value)
        rows.append(
            YardstickRow(
                eps,
                sigma,
                np.array(llr_b),
                np.array(sum_b),
                np.array(op_llr) if opacus else None,
                np.array(op_sum) if opacus else None,
                np.array(fdp),
            )
        )
        if progress is not None:
            progress(rows[-1])
    return rows


def _cell(values: np.ndarray) -> str:
    return f"{values.mean():.2f} ({values.min():.2f} to {values.max():.2f})"


def format_table(rows: list[YardstickRow]) -> str:
    opacus = any(row.opacus_llr_bounds is not None for row in rows)
    head = "| claimed ε | σ (PRV) | simulation, LLR score | simulation, sum score |"
    rule = "|---:|---:|---:|---:|"
    if opacus:
        head += " Opacus DP-SGD, LLR score | Opacus DP-SGD, sum score |"
        rule += "---:|---:|"
    estimates = any(row.llr_fdp_estimates is not None for row in rows)
    if estimates:
        head += " f-DP estimate, simulation, LLR (an estimate, assumes a Gaussian trade-off curve) |"
        rule += "---:|"
    lines = [head, rule]
    for row in rows:
        line = f"| {row.claimed_epsilon:g} | {row.noise_multiplier:.4f} | {_cell(row.llr_bounds)} | {_cell(row.sum_bounds)} |"
        if opacus:
            line += f" {_cell(row.opacus_llr_bounds)} | {_cell(row.opacus_sum_bounds)} |"
        if estimates:
            line += f" {_cell(row.llr_fdp_estimates)} |" if row.llr_fdp_estimates is not None else " - |"
        lines.append(line)
    return "\n".join(lines)


def _report(rows, *, seeds, n_canaries, steps, sample_rate, delta, confidence, seconds, opacus) -> str:
    opacus_text = (
        f"""
The Opacus columns run the same audit through real DP-SGD (`opacus_audit`): logistic regression on
1000 synthetic Gaussian records, `PrivacyEngine.make_private` with Poisson sampling at q = {sample_rate},
the same σ and C = 1, plain SGD, and {n_canaries} Dirac canaries on a `canaries.gradient.CanarySlots`
parameter inserted by `canaries.gradient.with_canaries` (seed s for data, noise and canary draws).
If Opacus clips and noises as claimed, these columns match the simulation up to seed-to-seed spread.
"""
        if opacus
        else ""
    )
    return f"""# Yardstick: one-run audit of the idealised DP-SGD mechanism

Simulation of m = {n_canaries} Dirac gradient canaries, each included with probability 1/2; at each of
T = {steps} steps an included canary is present with probability q = {sample_rate} and its coordinate reads
`presence * C + N(0, σ² C²)` (non-included canaries read pure noise). σ is the noise multiplier for
which Opacus' PRV accountant gives the claimed ε at δ = {delta:g}. Bounds are the one-run lower bound of
Steinke, Nasr & Jagielski 2023 (Theorem 5.2) at confidence {confidence}, with the Bonferroni-corrected
search over guess counts of `audit.stats.one_run.epsilon_one_run_from_scores` (default `GuessSearch`).
Scores: the log-likelihood ratio of the T readings (`canaries.iterate_scores.likelihood_ratio`) and
the plain sum of readings (`canaries.iterate_scores.all_iterates`). {seeds} seeds per row
(simulation seed s uses `np.random.default_rng([s, round(1000 ε)])`). Cells: mean (min to max) of the
ε lower bound over seeds. The last column is not a bound: the f-DP one-run estimate of Mahloujifar,
Melis & Chaudhuri 2024 (`audit.stats.fdp_one_run_estimate`) at the guesses the LLR bound chose; it
assumes the mechanism's trade-off curve is Gaussian and never decides a verdict.
{opacus_text}
{format_table(rows)}

For comparison, the reference figures quoted in the issue for a simulation of this kind (m = 1000,
δ = 1e-5, q = 0.01, T = 1000, 5 seeds; the issue does not say which guess-count rule it used) were
0.9 (0.5 to 1.5) at ε = 4, 1.6 (1.1 to 2.2) at ε = 8 and 2.6 at ε = 16 with the likelihood-ratio
score, and 0.36 at ε = 8 with the plain sum. Our bound pays for a valid search over guess counts, so it
may be slightly lower. These canaries see every iterate and no real gradient interferes with them, so
the gap between the bound and the claimed ε is mostly the price of a one-run audit with m = {n_canaries} canaries
(Steinke, Nasr & Jagielski 2023, Section 7, see the same gap), not slack in the accountant.

Reproduce: `python -m experiments.yardstick --seeds {seeds}{"" if opacus else " --no-opacus"}` ({seconds:.0f} s wall-clock, single-threaded torch, on a 2-core machine shared with other jobs).
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.yardstick", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two claimed epsilons, two seeds, simulation only; prints only")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per claimed epsilon (default 5; 2 with --quick)")
    parser.add_argument("--no-opacus", action="store_true", help="skip the Opacus DP-SGD columns in full mode")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    if seeds < 1:
        print(f"--seeds={seeds}: expected at least 1", file=sys.stderr)
        return 2
    epsilons = (4.0, 8.0) if args.quick else (1.0, 2.0, 4.0, 8.0, 16.0)
    opacus = not (args.quick or args.no_opacus)
    settings = dict(n_canaries=1000, steps=1000, sample_rate=0.01, delta=1e-5, confidence=0.95)
    if opacus:
        import torch

        torch.set_num_threads(1)

    def progress(row: YardstickRow) -> None:
        line = f"eps={row.claimed_epsilon:g}: simulation LLR {_cell(row.llr_bounds)}, sum {_cell(row.sum_bounds)}"
        if row.opacus_llr_bounds is not None:
            line += f"; Opacus LLR {_cell(row.opacus_llr_bounds)}, sum {_cell(row.opacus_sum_bounds)}"
        print(line, flush=True)

    start = time.perf_counter()
    rows = run(epsilons, seeds=seeds, opacus=opacus, progress=progress, **settings)
    seconds = time.perf_counter() - start
    print(format_table(rows))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(RESULTS, "w", encoding="utf-8") as handle:
            handle.write(_report(rows, seeds=seeds, seconds=seconds, opacus=opacus, **settings))
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
