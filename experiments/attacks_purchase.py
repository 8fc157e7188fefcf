"""Membership-inference attacks on overfit MLPs, synthetic Purchase-100-like data.

Setting (the attacks issue's): K MLPs ``600 -> 256 -> 100`` (ReLU) trained without
privacy to ~100% train accuracy on :func:`trainers.data.make_purchase` records with the
LiRA-balanced design of Carlini et al. (2022) (:func:`canaries.designs.lira_balanced`:
every audited record IN for exactly K/2 models), plus population records that no model
trains on (RMIA's reference set). Each model in turn is the target, the other K-1 its
shadows; scores on the audited records are pooled over targets into one ROC
(:mod:`audit.evaluation`). Reported: AUC and TPR at 10%, 1%, 0.1%, 0.01% FPR with
two-sided Clopper-Pearson intervals, for every black-box attack.

Shadow-count curve (Carlini et al. 2022, the figure of TPR against the number of shadow
models): for each target and each count k, k shadows are drawn at random from the
other K-1 models (a fresh draw per target), the attack sees only the target and those k,
and the scores are pooled as above. A record enters for a target only if the k shadows
hold what the attack needs (an OUT model; online LiRA also an IN model); the
fraction of (target, record) pairs that enter is reported.

Cost: attacks that see a record only through ``p_y`` and the other classes' total
(:data:`TRUE_CLASS_ONLY`) run on two-column logits (:func:`true_class_logits`, same
softmax); Shokri's attack (100 scikit-learn fits per target) is run with the first
``Setting.shokri_targets`` models as targets only. The comparison with the published
ML Privacy Meter figures adds RMIA without our tie-break (:class:`RMIAFractionOnly`).

The training, the curve and the tables are shared with ``experiments.attacks_reproduced``
in :mod:`experiments.attack_bench`.

``python -m experiments.attacks_purchase [--quick] [--seed S] [--out DIR]``: the full
run writes ``attacks_purchase.md``, ``attacks_purchase.json``, ``attacks_purchase.png``
(log-log ROC) and ``attacks_shadow_count.png`` under ``experiments/results`` (or
``--out``); ``--quick`` trains 8 small models and prints the tables only (unless
``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from audit.atomic import atomic_open
from audit.evaluation import AttackEvaluation, evaluate_attack
from audit.observations import Observations
from experiments.attack_bench import (
    ATTACKS,
    CURVE_ATTACKS,
    PRIVACY_METER,
    TRUE_CLASS_ONLY,
    CurvePoint,
    MLPTraining,
    RMIAFractionOnly,
    TrainSummary,
    attack_table,
    curve_table,
    fit_summary,
    plot_attack_roc,
    plot_shadow_curve,
    point,
    shadow_count_curve,
    tpr_cell,
    tpr_ratio,
    train_mlps,
    true_class_logits,
)

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = ["ATTACKS", "CURVE_ATTACKS", "FULL", "QUICK", "Setting", "build_observations", "main", "run", "shadow_count_curve"]


@dataclass(frozen=True)
class Setting:
    """One run's sizes and training hyperparameters (:data:`FULL`, :data:`QUICK`)."""

    n_models: int = 64
    n_audited: int = 5000
    n_population: int = 1000
    hidden: int = 256
    epochs: float = 20.0
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 128
    shadow_counts: tuple[int, ...] = (2, 4, 8, 16, 32, 63)
    shokri_targets: int | None = 4  # Shokri fits 100 classifiers per target: ~40 s each here
    threads: int = 2
    seed: int = 0


FULL = Setting()
QUICK = Setting(n_models=8, n_audited=3000, n_population=600, hidden=128, epochs=15.0,
                batch_size=64, shadow_counts=(2, 4, 7), shokri_targets=2, threads=1)


def _seeds(seed: int) -> tuple[int, int, int, int]:
    """Independent seeds for data, design, training and shadow subsampling."""
    return tuple(int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(4))


def build_observations(setting: Setting) -> tuple[Observations, TrainSummary]:
    """Train ``setting.n_models`` non-private MLPs; their logits on every record.

    Records ``[0, n_audited)`` follow the LiRA-balanced design; the last
    ``n_population`` are OUT for every model and marked as population.
    """
    from canaries.designs import lira_balanced
    from trainers.data import make_purchase

    data_seed, design_seed, train_seed, _ = _seeds(setting.seed)
    n = setting.n_audited + setting.n_population
    data = make_purchase(seed=data_seed, n=n)
    keep = np.zeros((setting.n_models, n), dtype=bool)
    keep[:, : setting.n_audited] = lira_balanced(setting.n_models, setting.n_audited, np.random.default_rng(design_seed))
    population = np.zeros(n, dtype=bool)
    population[setting.n_audited :] = True
    training = MLPTraining(hidden=(setting.hidden,), epochs=setting.epochs, lr=setting.lr,
                           momentum=setting.momentum, batch_size=setting.batch_size)
    logits, losses, seconds = train_mlps(data.x, data.y, data.n_classes, keep, training,
                                         subset_size=setting.n_audited // 2, seed=train_seed)
    obs = Observations(keep=keep, labels=data.y, logits=logits, population=population,
                       metadata={"dataset": "purchase", "trainer": "fast", "seed": setting.seed})
    return obs, fit_summary(obs, losses, seconds)


# --- formatting ------------------------------------------------------------------------


def comparison_table(evaluations: dict[str, AttackEvaluation], points: list[CurvePoint], n_shadows: int) -> list[str]:
    cell = {(p.method, p.shadows): p.evaluation for p in points}
    lines = ["| attack | published TPR @ 0.1% (AUC) | ours, " + f"{n_shadows} shadows | ours, 8 shadows |", "|---|---|---|---|"]
    published = {"rmia": "rmia", "rmia-fraction-only": "rmia", "lira-offline": "lira-offline",
                 "lira-offline-fixed": "lira-offline"}
    for name, pub_name in published.items():
        pub = PRIVACY_METER[pub_name]
        pub_auc = f" ({pub['auc']:.3f})" if pub["auc"] is not None else ""
        ours = [evaluations.get(name) or cell.get((name, n_shadows)), cell.get((name, 8))]
        cells = [f"{tpr_cell(point(e, 0.001))} ({e.auc:.3f})" if e is not None else "not run" for e in ours]
        lines.append(f"| {name} | {pub['tpr_at_0.1%']:.3f}{pub_auc} | " + " | ".join(cells) + " |")
    return lines


# --- run -------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(setting: Setting) -> dict:
    """Train, evaluate every attack, the shadow-count curve; everything in one dict."""
    import torch

    torch.set_num_threads(setting.threads)
    t0 = time.perf_counter()
    obs, train_summary = build_observations(setting)
    _progress(f"trained {setting.n_models} models in {train_summary.seconds:.0f} s")
    small = true_class_logits(obs)
    evaluations, attack_seconds = {}, {}
    for method in ATTACKS:
        start = time.perf_counter()
        targets = range(setting.shokri_targets) if method == "shokri" and setting.shokri_targets else None
        evaluations[method] = evaluate_attack(small if method in TRUE_CLASS_ONLY else obs, method, targets=targets)
        attack_seconds[method] = time.perf_counter() - start
        _progress(f"{method}: {attack_seconds[method]:.1f} s")
    t_curve = time.perf_counter()
    counts = tuple(k for k in setting.shadow_counts if k <= setting.n_models - 1)
    points = shadow_count_curve(small, counts, CURVE_ATTACKS, seed=_seeds(setting.seed)[3])
    extra_counts = tuple(k for k in (8, setting.n_models - 1) if k in counts)
    extra = shadow_count_curve(small, extra_counts, (RMIAFractionOnly(),), seed=_seeds(setting.seed)[3])
    curve_seconds = time.perf_counter() - t_curve
    _progress(f"shadow-count curve: {curve_seconds:.0f} s")
    return {
        "setting": setting,
        "observations": obs,
        "train": train_summary,
        "evaluations": evaluations,
        "attack_seconds": attack_seconds,
        "curve": points,
        "extra": extra,
        "curve_seconds": curve_seconds,
        "total_seconds": time.perf_counter() - t0,
    }


def _checks(res: dict) -> list[str]:
    """The issue's expectations, stated as measured (no pass/fail tuning)."""
    ev = res["evaluations"]
    on_p, loss_p = point(ev["lira-online"], 0.001), point(ev["loss"], 0.001)
    on, off, loss = on_p.tpr, point(ev["lira-offline"], 0.001).tpr, loss_p.tpr
    fixed = point(ev["lira-online-fixed"], 0.001).tpr
    if loss > 0:
        _, lo, hi = tpr_ratio(on_p, loss_p)
        span = f"; from the 95% intervals the ratio lies between {lo:.2f}x and {hi:.2f}x" if np.isfinite(hi) else ""
        ratio = f"{on / loss:.2f}x{span}; lira-online-fixed: {fixed / loss:.2f}x"
    else:
        ratio = "inf (LOSS TPR is 0)"
    return [
        f"- LiRA online TPR @ 0.1% FPR / LOSS TPR @ 0.1% FPR = {on:.4f} / {loss:.4f} = {ratio} "
        f"(issue expects at least 5x): {'yes' if on >= 5 * loss else 'NO'}.",
        f"- Offline LiRA TPR @ 0.1% = {off:.4f} ({off / on:.0%} of online)." if on > 0 else f"- Offline LiRA TPR @ 0.1% = {off:.4f}.",
        f"- LOSS AUC = {ev['loss'].auc:.4f} (issue expects > 0.5): {'yes' if ev['loss'].auc > 0.5 else 'NO'}.",
    ]


def _comparison_notes(ev: dict[str, AttackEvaluation], extra: list[CurvePoint]) -> str:
    """What the comparison with the published figures can and cannot say, from the numbers."""
    auc, pub_auc = ev["rmia"].auc, PRIVACY_METER["rmia"]["auc"]
    notes = [
        f"Our RMIA AUC is {auc:.3f} against their {pub_auc:.3f}: "
        + ("our models leak more than theirs, which lifts every attack's numbers, so beating their TPR "
           "here does not show that our implementation is stronger on their models."
           if auc > pub_auc else "our models leak no more than theirs by this measure.")
    ]
    bare = [p for p in extra if p.shadows == max(q.shadows for q in extra)]
    if bare:
        with_tb, without = point(ev["rmia"], 0.001).tpr, point(bare[0].evaluation, 0.001).tpr
        notes.append(
            f"`rmia-fraction-only` is RMIA without our tie-break (the bare fraction of population records "
            f"beaten): TPR @ 0.1% {without:.4f} against {with_tb:.4f} with it, so ties "
            + ("do not explain the published 0.000 here." if without > 0 else "alone bring TPR @ 0.1% to 0 here.")
        )
    notes.append("Which variance the published post-hoc offline LiRA used is not stated, so both of ours are listed.")
    return " ".join(notes)


def markdown(res: dict, quick: bool) -> str:
    s: Setting = res["setting"]
    tr: TrainSummary = res["train"]
    ev = res["evaluations"]
    points = res["curve"]
    n_pairs = ev["loss"].members + ev["loss"].non_members
    lines = [
        "# Membership-inference attacks on overfit MLPs (synthetic Purchase-100-like data)",
        "",
        f"Reproduce: `python -m experiments.attacks_purchase{' --quick' if quick else ''}` (seed {s.seed}; "
        "same seed and thread count on the same machine give the same numbers). "
        "Code: `experiments/attacks_purchase.py`.",
        "",
        "## Setting",
        "",
        f"- Data: `make_purchase` (600 binary features, 100 classes, flip_prob 0.4), {s.n_audited} audited records "
        f"+ {s.n_population} population records (OUT for every model; RMIA's reference set).",
        f"- {s.n_models} MLPs 600 -> {s.hidden} -> 100 (ReLU), non-private minibatch SGD (fast trainer, `NON_PRIVATE` step: "
        f"Poisson batches of expected size {s.batch_size}, lr {s.lr}, momentum {s.momentum}, {s.epochs:g} epochs), "
        f"each on its own {s.n_audited // 2} records: LiRA-balanced design, every audited record IN for exactly "
        f"{s.n_models // 2} models.",
        f"- Measured: train accuracy {tr.train_accuracy:.3f}, test accuracy (audited records a model did not train on) "
        f"{tr.test_accuracy:.3f}, final batch loss {tr.final_loss:.4f}.",
        f"- Evaluation: leave-one-out, each model the target and the other {s.n_models - 1} its shadows; "
        f"pooled over targets: {ev['loss'].members} member and {ev['loss'].non_members} non-member pairs "
        f"({n_pairs} in all). TPR at the largest threshold whose FPR does not exceed the target, "
        "two-sided 95% Clopper-Pearson intervals. One query per record (no augmentation), so `label-only` "
        "reduces to correctness ordered by the logit margin.",
        *([f"- `shokri` (scikit-learn logistic-regression attack model per class, the registry default) is "
           f"evaluated with models 0..{s.shokri_targets - 1} as targets only ({ev['shokri'].members} member and "
           f"{ev['shokri'].non_members} non-member pairs): it fits 100 classifiers per target, "
           f"{res['attack_seconds']['shokri'] / s.shokri_targets:.0f} s per target here."]
          if s.shokri_targets and s.shokri_targets < s.n_models else []),
        f"- Machine: {os.cpu_count()} CPU cores visible, {s.threads} torch threads, shared with other jobs "
        f"(wall-clock figures vary with their load). {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}.",
        f"- Wall-clock: training {tr.seconds:.0f} s, attacks {sum(res['attack_seconds'].values()):.0f} s, "
        f"shadow-count curve {res['curve_seconds']:.0f} s, total {res['total_seconds']:.0f} s.",
        "",
        "## All attacks, " + f"{s.n_models} models, leave-one-out",
        "",
        *attack_table(ev),
        "",
        "![log-log ROC](attacks_purchase.png)",
        "",
        *_checks(res),
        "",
        "## Against the published figures",
        "",
        *comparison_table(ev, points + res["extra"], s.n_models - 1),
        "",
        "The published figures are from ML Privacy Meter on the Purchase-100 data shape (as quoted in the "
        "issue: RMIA TPR @ 0.1% = 0.000 at AUC 0.934; post-hoc offline LiRA on its signals 0.262 with 8 "
        "references). Ours are on synthetic Purchase-like data (`make_purchase`), not the real Purchase-100 "
        "records, with our own models and training, so the comparison is of the same data shape and attack "
        "family, not of the same models; the '8 shadows' column is the shadow-count run below "
        "(8 references drawn per target). " + _comparison_notes(ev, res["extra"]),
        "",
        "## TPR at 0.1% FPR against the number of shadow models",
        "",
        *curve_table(points),
        "",
        "![shadow count](attacks_shadow_count.png)",
        "",
        "For each target, k shadows are drawn at random from the other models. A (target, record) pair enters "
        "only if the draw has an OUT model for the record (and, for online LiRA, an IN model): the last column. "
        "With k = 2 online LiRA sees one IN and one OUT value per record, so both per-record standard "
        "deviations are 0 and the score degenerates to 'nearer to the IN or the OUT value'. "
        "More generally the per-record variants estimate sigma from about k/2 values with no floor "
        "(only +1e-30, as the reference code): a record whose draw has a single OUT value gets "
        "sigma_out = 0 and an extreme score whatever its membership, and such records crowd the low-FPR "
        "end of the ROC; the fixed-variance variants, which Carlini et al. (2022) recommend for few "
        "shadows, do not have this failure.",
        "",
        "Leave-one-out artifact: with an exactly balanced design, a record the target trains on has one IN "
        "model fewer among the remaining models (K/2 - 1 IN, K/2 OUT) than a record it does not (K/2 IN, "
        "K/2 - 1 OUT). Per-record statistics from few shadows then depend on the target's membership "
        "(e.g. with 4 models in all, sigma_in comes from 1 value, i.e. 0, exactly for members). "
        f"The full table uses all {s.n_models - 1} shadows ({s.n_models // 2 - 1} vs {s.n_models // 2} IN values "
        "per record, a small difference when K is large); the shadow-count runs draw k of the "
        f"{s.n_models - 1} at random, so the IN count is hypergeometric and depends on the target's "
        "membership only through that one missing model, which matters most at small k.",
        "",
    ]
    return "\n".join(lines)


def to_json(res: dict) -> dict:
    return {
        "setting": asdict(res["setting"]),
        "train": asdict(res["train"]),
        "attacks": {m: ev.to_dict() for m, ev in res["evaluations"].items()},
        "attack_seconds": res["attack_seconds"],
        "shadow_count": [
            {"method": p.method, "shadows": p.shadows, "coverage": p.coverage, **p.evaluation.to_dict()}
            for p in res["curve"]
        ],
        "rmia_fraction_only": [
            {"shadows": p.shadows, "coverage": p.coverage, **p.evaluation.to_dict()} for p in res["extra"]
        ],
        "published": PRIVACY_METER,
        "curve_seconds": res["curve_seconds"],
        "total_seconds": res["total_seconds"],
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 small models; print the tables only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results here (default: experiments/results for the full run)")
    args = parser.parse_args(argv)
    setting = replace(QUICK if args.quick else FULL, seed=args.seed)
    res = run(setting)
    text = markdown(res, args.quick)
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "attacks_purchase.md", "w") as handle:
            handle.write(text)
        with atomic_open(out / "attacks_purchase.json", "w") as handle:
            json.dump(to_json(res), handle, indent=1)
        plot_attack_roc(res["evaluations"], out / "attacks_purchase.png",
                        title=f"{setting.n_models} MLPs, synthetic Purchase, leave-one-out")
        plot_shadow_curve(res["curve"], out / "attacks_shadow_count.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
