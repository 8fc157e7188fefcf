"""Soundness and power of the claimed-curve test and the effective noise, on the exact mechanism.

Each audit simulates one white-box one-run audit of DP-SGD itself
(:func:`canaries.simulate.simulate`: m = 1,000 Dirac canaries, each included with
probability 1/2, q = 0.01, T = 1,000 steps, Gaussian noise; the likelihood-ratio score,
the most powerful), with the noise multiplier that Opacus' PRV accountant gives for the
claimed epsilon at delta = 1e-5. Three things are measured per claimed epsilon:

* **false rejections** of the correct claim by the one-run test of its privacy curve
  (:func:`audit.stats.claim_test.claim_test_one_run`, 95% confidence): the rate must be
  consistent with at most 5%;
* **effective noise** on correct runs (:func:`audit.stats.effective_noise.effective_noise_one_run`,
  with the readings, as the pipeline runs it):
  the fraction of audits whose sigma_eff is at or below the true sigma (its statement
  "the run behaves as if it added less noise than sigma_eff" is then false; at most 5%),
  and the mean effective epsilon against the claim (tightness);
* **power** against half the claimed noise (the zoo's ``half_noise``): how often the claim
  test rejects, how often the (epsilon, delta) one-run bound exceeds the claim.

Each rate has its two-sided 95% Clopper-Pearson interval.

``python -m experiments.claim_test_soundness [--quick] [--runs N] [--effective-runs N]``:
the full run writes ``claim_test_soundness.md`` / ``.json`` under ``experiments/results``;
``--quick`` runs a few small audits and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from audit.atomic import atomic_open
from audit.stats import epsilon_one_run_from_scores
from audit.stats.accountant import noise_multiplier_for
from audit.stats.claim_test import claim_test_one_run
from audit.stats.effective_noise import effective_noise_one_run
from audit.stats.intervals import two_sided
from audit.stats.privacy_curve import dpsgd_curve
from canaries.simulate import simulate

RESULTS = Path(__file__).resolve().parent / "results"
DELTA = 1e-5


@dataclass(frozen=True)
class Setting:
    epsilons: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    runs: int = 1000
    effective_runs: int = 100
    power_runs: int = 100
    canaries: int = 1000
    steps: int = 1000
    sample_rate: float = 0.01


FULL = Setting()
QUICK = Setting(epsilons=(2.0,), runs=5, effective_runs=1, power_runs=2, steps=300)


def _rate(count: int, n: int) -> dict:
    low, high = two_sided(count, n, 0.95)
    return {"count": count, "n": n, "rate": count / n, "interval": [float(low), float(high)]}


def _run(setting: Setting, sigma: float, seed: list[int]):
    return simulate(n_canaries=setting.canaries, steps=setting.steps, sample_rate=setting.sample_rate,
                    noise_multiplier=sigma, rng=np.random.default_rng(seed))


def measure(setting: Setting, log) -> list[dict]:
    rows = []
    q, steps = setting.sample_rate, setting.steps
    for eps in setting.epsilons:
        sigma = noise_multiplier_for(target_epsilon=eps, delta=DELTA, sample_rate=q, steps=steps)
        curve = dpsgd_curve(sigma, q, steps)
        started = time.perf_counter()
        rejected = 0
        for k in range(setting.runs):
            run = _run(setting, sigma, [41, int(eps * 1000), k])
            rejected += claim_test_one_run(run.llr, run.members, curve).rejected
        below, effective = 0, []
        for k in range(setting.effective_runs):
            run = _run(setting, sigma, [43, int(eps * 1000), k])
            eff = effective_noise_one_run(run.llr, run.members, noise_multiplier=sigma, sample_rate=q, steps=steps,
                                          delta=DELTA, readings=run.readings)
            below += eff.noise_multiplier is not None and eff.noise_multiplier <= sigma
            effective.append(eff.epsilon)
        caught, bound_caught, bugged_eff = 0, 0, []
        for k in range(setting.power_runs):
            run = _run(setting, sigma / 2, [47, int(eps * 1000), k])
            caught += claim_test_one_run(run.llr, run.members, curve).rejected
            bound_caught += epsilon_one_run_from_scores(run.llr, run.members, delta=DELTA).value > eps
            if k < setting.effective_runs:
                bugged_eff.append(effective_noise_one_run(run.llr, run.members, noise_multiplier=sigma, sample_rate=q,
                                                          steps=steps, delta=DELTA, readings=run.readings).epsilon)
        rows.append({
            "claimed_epsilon": eps, "noise_multiplier": sigma,
            "false_rejections": _rate(rejected, setting.runs),
            "effective_noise_above_truth_failures": _rate(below, setting.effective_runs),
            "effective_epsilon_mean": float(np.mean(effective)) if effective else None,
            "half_noise_claim_test": _rate(caught, setting.power_runs),
            "half_noise_bound": _rate(bound_caught, setting.power_runs),
            "half_noise_effective_epsilon_mean": float(np.mean(bugged_eff)) if bugged_eff else None,
            "seconds": time.perf_counter() - started,
        })
        log(f"eps {eps:g}: {rejected}/{setting.runs} false rejections, {caught}/{setting.power_runs} half-noise caught "
            f"({time.perf_counter() - started:.0f} s)")
    return rows


def _cell(r: dict) -> str:
    lo, hi = r["interval"]
    return f"{r['count']}/{r['n']} = {r['rate']:.3f} [{lo:.3f}, {hi:.3f}]"


def report(rows: list[dict], setting: Setting, seconds: float, quick: bool) -> str:
    lines = [
        "# The claimed-curve test and the effective noise on the exact mechanism",
        "",
        f"Reproduce: `.venv/bin/python -m experiments.claim_test_soundness{' --quick' if quick else ''}` "
        f"(seeded; {platform.python_implementation()} {platform.python_version()}, {seconds:.0f} s in all).",
        "",
        f"Simulated one-run white-box audits of DP-SGD (m = {setting.canaries} Dirac canaries, q = {setting.sample_rate}, "
        f"T = {setting.steps}, likelihood-ratio score; `canaries.simulate`), noise multiplier from Opacus' PRV accountant "
        f"for the claimed epsilon at delta = {DELTA:g}; 95% confidence; rates with two-sided 95% Clopper-Pearson intervals. "
        "A false rejection or an effective sigma at or below the true sigma is a soundness failure (each at most 5% if "
        "sound). The effective noise uses the readings as the pipeline does (signal and noise tests, each at half the "
        "level; `effective_tightness.md` has 1,000 audits per claim of its soundness). Half noise: the same claim, half "
        "the noise added (the zoo's `half_noise`).",
        "",
        "| claimed ε | σ | false rejections of the correct claim | σ_eff ≤ true σ (failures) | mean effective ε, correct | "
        "half noise: claim test rejects | half noise: (ε, δ) bound > claim | mean effective ε, half noise |",
        "|---:|---:|---|---|---:|---|---|---:|",
    ]
    for r in rows:
        mean_eff = "-" if r["effective_epsilon_mean"] is None else f"{r['effective_epsilon_mean']:.2f}"
        bug_eff = "-" if r["half_noise_effective_epsilon_mean"] is None else f"{r['half_noise_effective_epsilon_mean']:.2f}"
        lines.append(f"| {r['claimed_epsilon']:g} | {r['noise_multiplier']:.3f} | {_cell(r['false_rejections'])} | "
                     f"{_cell(r['effective_noise_above_truth_failures'])} | {mean_eff} | {_cell(r['half_noise_claim_test'])} | "
                     f"{_cell(r['half_noise_bound'])} | {bug_eff} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.claim_test_soundness", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small audits; print only")
    parser.add_argument("--runs", type=int, default=None, help="claim-test audits per claimed epsilon")
    parser.add_argument("--effective-runs", type=int, default=None, help="effective-noise audits per claimed epsilon")
    parser.add_argument("--power-runs", type=int, default=None, help="half-noise audits per claimed epsilon")
    args = parser.parse_args(argv)
    setting = QUICK if args.quick else FULL
    for name in ("runs", "effective_runs", "power_runs"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                print(f"--{name.replace('_', '-')} {value}: expected an integer >= 1", file=sys.stderr)
                return 2
            setting = Setting(**{**asdict(setting), name: value})
    started = time.perf_counter()
    rows = measure(setting, lambda message: print(message, file=sys.stderr, flush=True))
    text = report(rows, setting, time.perf_counter() - started, args.quick)
    print(text)
    if not args.quick:
        with atomic_open(RESULTS / "claim_test_soundness.md") as handle:
            handle.write(text)
        with atomic_open(RESULTS / "claim_test_soundness.json") as handle:
            json.dump({"setting": asdict(setting), "rows": rows}, handle, indent=1)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
