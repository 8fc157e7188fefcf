"""Shared audits of faulty and correct DP-SGD for ``experiments.bug_zoo`` and ``experiments.false_alarms``.

Three audits, each returning what ``dpaudit run`` would report (bounds, verdict, power):

* :func:`pipeline_whitebox`: the Opacus trainer or a zoo variant, one training run with m
  Dirac gradient canaries, through :func:`audit.pipeline.run_audit` (a user's
  ``dpaudit run`` with ``audit.canary_kind = "gradient"``).
* :func:`fast_one_run`: K independent fast-trainer runs (``canaries.fast_gradient``), each
  audited alone with the one-run bound of Steinke, Nasr & Jagielski 2023 over a family of
  canary statistics (:data:`STATISTICS`), Bonferroni over the family exactly as the
  pipeline does for several ``audit.statistics`` (``audit.pipeline.analysis.bounds_and_estimates``)
  and the pipeline's verdict (``audit.pipeline.verdict.dp_verdict``).
* :func:`multi_run`: a multi-run audit of one DP-SGD step in the fast trainer: N runs with
  the canary and N without, a statistic and threshold picked on separate pilot runs, then
  the Clopper-Pearson counts bound (:func:`audit.stats.epsilon_from_counts`) on the counted
  runs. The dataset is chosen by the auditor, as DP must hold for every dataset (Nasr et al.
  2023, "Tight auditing", worst-case datasets): one real record, one crafted "background"
  gradient record of norm 1000 C on the canary's coordinate pointing against the canary,
  and P always-zero probe coordinates. Full batch (q = 1), one step, so the claim is the
  accountant's epsilon for one Gaussian step.

Every random draw comes from a seed given by the caller.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

DELTA = 1e-5
CONFIDENCE = 0.95
STATISTICS = ("likelihood-ratio", "likelihood-ratio-half-sigma", "spread")
"""One-run canary statistics of the fast audits (higher = more likely included):
LLR under the claimed (q, sigma, C) (the pipeline's default), LLR under half the claimed
noise, and the standard deviation of a canary's readings over the steps (a canary that
was never present reads pure noise, so its spread is the noise's spread)."""

PIPELINE_STATISTICS = ("likelihood-ratio", "likelihood-ratio-half-sigma", "spread")
"""The white-box statistics :func:`pipeline_whitebox` runs (the pipeline's defaults, set
explicitly so that a change of defaults is a change of the run cache's key)."""

ACCOUNTING_FAULTS = {"accountant_rate_10x_small": 0.1}
"""Faults of the accounting, not of the step (the fast trainer runs the correct step): the
accountant, and so the noise multiplier set from the target epsilon and the claimed curve,
see the sample rate times this factor (the Opacus zoo's ``accounting_rate_factor``)."""


@dataclasses.dataclass(frozen=True)
class Design:
    """The white-box one-run design shared by the Opacus (pipeline) and fast audits."""

    canaries: int = 1000
    records: int = 1000
    batch_size: int = 10
    epochs: int = 10
    lr: float = 0.5
    max_grad_norm: float = 1.0
    dataset: str = "fair"
    data_seed: int = 0

    @property
    def sample_rate(self) -> float:
        return self.batch_size / self.records

    @property
    def steps(self) -> int:
        return self.epochs * self.records // self.batch_size


@functools.lru_cache(maxsize=None)
def sigma_for(epsilon: float, sample_rate: float, steps: int, delta: float = DELTA) -> float:
    """The noise multiplier Opacus' PRV accountant gives for the target epsilon (cached)."""
    from experiments.yardstick import noise_for_epsilon

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        return noise_for_epsilon(epsilon, delta=delta, sample_rate=sample_rate, steps=steps)


def claim(sigma: float, sample_rate: float, steps: int, delta: float = DELTA) -> float:
    from audit.stats import claimed_epsilon

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        return claimed_epsilon(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, delta=delta).value


# --- Opacus / zoo through the pipeline -------------------------------------------------

def pipeline_whitebox(variant: str, epsilon: float, design: Design, *, seed: int = 0) -> dict:
    """``dpaudit run`` of ``variant`` ("correct" is the Opacus trainer, ``trainer.kind = "dp"``)
    at ``dp.target_epsilon = epsilon``; the summary of its report."""
    from audit.config import parse_config
    from audit.pipeline import run_audit

    trainer = {"kind": "dp"} if variant == "correct" else {"kind": "zoo", "variant": variant}
    with tempfile.TemporaryDirectory() as tmp:
        tree = {
            "name": f"zoo-{variant}-{epsilon:g}", "seed": seed, "output_dir": str(Path(tmp) / "run"),
            "data": {"name": design.dataset, "n": design.records, "population": 0, "test": 0},
            "model": {"name": "logreg"},
            "trainer": {**trainer, "epochs": design.epochs, "batch_size": design.batch_size, "lr": design.lr},
            "dp": {"target_epsilon": epsilon, "max_grad_norm": design.max_grad_norm, "delta": DELTA},
            "audit": {"canaries": design.canaries, "canary_kind": "gradient", "statistics": list(PIPELINE_STATISTICS)},
            "confidence": CONFIDENCE,
            "mlflow": {"enabled": False},
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = run_audit(parse_config(tree), progress=False)
    v = report["verdict"]
    model = report["utility"]["models"][0]
    return {"bound": v["epsilon_lower_bound"], "power": v["power"], "claimed": v["claimed_epsilon"],
            "decision": v["decision"], "sigma": model["noise_multiplier"], "steps": model["steps"],
            "claim_p": v.get("claim_p_value"), "effective": v.get("effective_epsilon")}


# --- fast trainer, one run per model ----------------------------------------------------

def _fair(design: Design):
    import torch

    from trainers.data import load_dataset

    data = load_dataset(design.dataset, seed=design.data_seed, n=design.records)
    return torch.as_tensor(data.x.reshape(len(data), -1), dtype=torch.float32), torch.as_tensor(data.y), data.n_classes


def fast_statistics(result) -> dict[str, np.ndarray]:
    """float[canaries] per name of :data:`STATISTICS`, from a ``FastCanaryResult``."""
    from canaries.iterate_scores import noise_level_statistics

    return noise_level_statistics(result.readings, sample_rate=result.sample_rate,
                                  noise_multiplier=result.noise_multiplier, max_grad_norm=result.max_grad_norm)


def verdict_of(scores: dict[str, np.ndarray], members: np.ndarray, claimed: float, *, full_guess_share: float = 0.0,
               curve: tuple[float, float, int] | None = None, readings=None, effective: bool = False) -> dict:
    """The pipeline's bounds and verdict for one run: with ``curve`` = the claimed DP-SGD
    (sigma, q, T) also its one-run curve test per score (Bonferroni over every bound and
    test, as the pipeline does), and with ``effective`` the effective noise (``readings``
    = (float[steps, canaries], C) adds its noise test)."""
    from audit.config import parse_config
    from audit.pipeline.analysis import bounds_and_estimates
    from audit.pipeline.verdict import dp_verdict

    cfg = parse_config({"confidence": CONFIDENCE, "audit": {"full_guess_share": full_guess_share}})
    bounds, _, tests = bounds_and_estimates(cfg, scores, members, DELTA, claim=curve, readings=readings,
                                            effective=effective)
    v = dp_verdict(bounds, claimed, CONFIDENCE, claim_tests=tests)
    per = {b["name"].removeprefix("one-run/"): b["epsilon_lower_bound"] for b in bounds}
    return {"bound": v["epsilon_lower_bound"], "power": v["power"], "decision": v["decision"],
            "best": (v["best_bound"] or "").removeprefix("one-run/"), "per_statistic": per,
            "claim_p": v.get("claim_p_value"), "effective": v.get("effective_epsilon") if effective else None}


def fast_one_run(
    variant: str, epsilon: float, design: Design, *, seeds: Sequence[int], statistics: Sequence[str] = STATISTICS,
    full_guess_share: float = 0.0, block: int = 25, families: dict[str, Sequence[str]] | None = None,
    progress=None,
) -> list[dict]:
    """One audit per seed: fast-trainer DP-SGD (``variant`` a key of ``trainers.fast.FAULTS``,
    of :data:`ACCOUNTING_FAULTS`, or "correct") with m Dirac canaries, sigma from the accountant
    for ``epsilon`` (at the accounting fault's rate, which is also the claimed curve's); models are
    trained ``block`` at a time (model s depends only on its seed). ``families``: more
    statistic sets to audit the same runs with (``result["families"][name]``)."""
    import torch

    from canaries.fast_gradient import train_with_canaries
    from trainers.fast import CORRECT, DPSGDConfig, MLPShape, fault

    x, y, classes = _fair(design)
    q_claimed = design.sample_rate * ACCOUNTING_FAULTS.get(variant, 1.0)
    sigma = sigma_for(epsilon, q_claimed, design.steps)
    claimed = claim(sigma, q_claimed, design.steps)
    spec = CORRECT if variant == "correct" or variant in ACCOUNTING_FAULTS else fault(variant)
    config = DPSGDConfig(lr=design.lr, max_grad_norm=design.max_grad_norm, noise_multiplier=sigma,
                         expected_batch_size=design.batch_size, spec=spec)
    out = []
    for start in range(0, len(seeds), block):
        chunk = list(seeds[start:start + block])
        run = train_with_canaries(
            x, y, torch.ones(len(chunk), len(y), dtype=torch.bool), MLPShape((x.shape[1], classes)), config,
            n_canaries=design.canaries, steps=design.steps,
            generator=[torch.Generator().manual_seed(int(np.random.SeedSequence([s, 1]).generate_state(1)[0])) for s in chunk],
            canary_generator=[torch.Generator().manual_seed(int(np.random.SeedSequence([s, 2]).generate_state(1)[0])) for s in chunk],
        )
        for s, res in zip(chunk, run.models):
            stats = fast_statistics(res)
            curve = (sigma, q_claimed, design.steps)
            v = verdict_of({k: stats[k] for k in statistics}, res.members, claimed, full_guess_share=full_guess_share,
                           curve=curve, readings=(res.readings, res.max_grad_norm), effective=s == seeds[0])
            extra = {name: verdict_of({k: stats[k] for k in fam}, res.members, claimed, full_guess_share=full_guess_share)
                     for name, fam in (families or {}).items()}
            out.append({"seed": s, "claimed": claimed, "sigma": sigma, **v, "families": extra})
        del run
        if progress is not None:
            progress(f"{variant} eps={epsilon:g}: {len(out)}/{len(seeds)} runs audited")
    return out


# --- fast trainer, multi-run audit of one step -----------------------------------------

@dataclasses.dataclass(frozen=True)
class MultiRunDesign:
    runs_per_world: int = 20000
    pilot_per_world: int = 3000
    probes: int = 64
    background_factor: float = 1000.0
    canary_factor: float = 2000.0


def _one_step_scores(variant: str, sigma: float, md: MultiRunDesign, design: Design, n_per_world: int, seed: int):
    """scores {name: float[2N]}, members bool[2N]: 2N one-step runs of the fast trainer."""
    import torch

    from trainers.fast import CORRECT, DPSGDConfig, GradientRows, MLPShape, StepHooks, fault, train

    x_all, y_all, classes = _fair(design)
    d, c = x_all.shape[1], float(design.max_grad_norm)
    x = torch.cat([x_all[:1], x_all.new_zeros(1, 1 + md.probes)], dim=1)  # one real record
    shape = MLPShape((d + 1 + md.probes, classes))
    watch = torch.tensor([shape.weight_coord(0, 0, d + j) for j in range(1 + md.probes)], dtype=torch.long)
    k = 2 * n_per_world
    members = np.arange(k) < n_per_world
    incl = torch.as_tensor(np.flatnonzero(members))
    rows = GradientRows(
        model=torch.cat([torch.arange(k), incl]),
        coords=watch[:1].repeat(k + len(incl), 1),
        values=torch.cat([torch.full((k, 1), -md.background_factor * c), torch.full((len(incl), 1), md.canary_factor * c)]),
    )
    config = DPSGDConfig(lr=design.lr, max_grad_norm=c, noise_multiplier=sigma, expected_batch_size=1,
                         spec=CORRECT if variant == "correct" else fault(variant))
    result = train(x, y_all[:1], torch.ones(k, 1, dtype=torch.bool), shape, config, steps=1,
                   generator=torch.Generator().manual_seed(seed), hooks=StepHooks(extra_rows=lambda step: rows, watch=watch))
    readings = result.watched[0].double().numpy()  # [K, 1 + P], times the expected batch size 1
    return {"reading": readings[:, 0], "probe-scale": -readings[:, 1:].std(axis=1)}, members


def best_threshold(scores: np.ndarray, members: np.ndarray) -> tuple[float, float]:
    """(threshold, bound) maximising the counts bound over score quantiles (pilot runs only)."""
    from audit.stats import epsilon_from_counts
    from experiments.multi_run_whitebox import counts_at

    grid = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, 401)[1:-1]))
    values = [epsilon_from_counts(*counts_at(scores, members, t), delta=DELTA, confidence=CONFIDENCE).value for t in grid]
    i = int(np.argmax(values))
    return float(grid[i]), float(values[i])


ACCOUNTING_FAULTS = {"accountant_rate_10x_small": 0.1}
"""Zoo variants whose step is correct and whose accountant is handed the sample rate times this factor."""


def multi_run(variant: str, epsilon: float, md: MultiRunDesign, design: Design, *, seed: int) -> dict:
    """Multi-run counts bound of one full-batch DP-SGD step (claim: the accountant's epsilon
    at q = 1, T = 1, or at the wrong rate of an accounting fault, which runs the correct
    step); statistic and threshold chosen on independent pilot runs."""
    from audit.stats import epsilon_from_counts
    from experiments.multi_run_whitebox import counts_at

    rate = ACCOUNTING_FAULTS.get(variant, 1.0)
    sigma = sigma_for(epsilon, rate, 1)
    claimed = claim(sigma, rate, 1)
    step = "correct" if variant in ACCOUNTING_FAULTS else variant
    pilot, pm = _one_step_scores(step, sigma, md, design, md.pilot_per_world, seed=int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
    choice = max(pilot, key=lambda name: best_threshold(pilot[name], pm)[1])
    threshold, _ = best_threshold(pilot[choice], pm)
    scores, members = _one_step_scores(step, sigma, md, design, md.runs_per_world, seed=int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]))
    counts = counts_at(scores[choice], members, threshold)
    bound = epsilon_from_counts(*counts, delta=DELTA, confidence=CONFIDENCE).value
    n = md.runs_per_world
    ceiling = epsilon_from_counts(n, 0, 0, n, delta=DELTA, confidence=CONFIDENCE).value
    return {"claimed": claimed, "sigma": sigma, "bound": bound, "power": ceiling, "statistic": choice,
            "counts": counts, "decision": "VIOLATION" if bound > claimed else "NO VIOLATION DETECTED"}
