"""Data-pipeline canaries against loader bugs (issue 15, item 4): one run per audit.

A user's Opacus script trains logistic regression on scikit-learn's digits (64 features,
10 classes) with m reserved input features, one per canary record
(:mod:`canaries.records`, :class:`audit.attach_records.RecordAudit`); the canary records are
in the training set and go through the user's loader. Three loaders, each what a user
writes, each accounted by Opacus' PRV accountant as Poisson at ``q = 1 / len(loader)``:

* ``poisson`` (correct): ``make_private(poisson_sampling=True)``, Opacus' Poisson loader.
* ``shuffled``: ``DataLoader(shuffle=True, batch_size=B)`` kept by
  ``make_private(poisson_sampling=False)``: fixed-size batches of a per-epoch shuffle
  accounted as Poisson (the zoo's ``shuffled_batches_as_poisson``; Annamalai et al. 2024,
  "To shuffle or not to shuffle"; Chua et al. 2024, "How private are DP-SGD
  implementations?").
* ``weighted``: ``DataLoader(sampler=WeightedRandomSampler(w, num_samples=4 * len(dataset),
  replacement=True), batch_size=B)`` kept the same way, with class-balancing weights w.
  Opacus accounts ``q = 1 / len(loader) = B / (4 N)`` (the sample rate of Opacus #813,
  taken from the sampler's ``num_samples`` instead of the dataset size; #813 reports the
  case num_samples < N, which over-states epsilon; oversampling, num_samples > N, is the
  direction that under-states it) while every record is drawn about B / N times per step:
  a sampling rate four times the accountant's.

The weighted loader runs E // 4 of its four-times-longer epochs (for E = 10: 8 data epochs'
worth of draws, T = 200 against 250 at 10,000 canaries); every claim is the accountant's for
the steps actually taken.
For each variant, claimed epsilon (sigma from the PRV accountant at the design's q and T)
and seed: one training run, one audit, its verdict (VIOLATION / NO VIOLATION DETECTED),
the best one-run bound, the claimed-curve p-value (Bonferroni-adjusted over the deciding
tests), the effective epsilon, and which statistic decided.

A second table audits the *exact* mechanism (simulated readings of an ideal record canary)
with shuffled and Poisson batches for several batch counts per epoch: whether any one-run
audit of this size could see shuffling, independent of the model.

Reproduce: ``OMP_NUM_THREADS=1 .venv/bin/python -m experiments.pipeline_canaries`` then
``... --simulate-only`` (the exact-mechanism table); ``--quick``: 1,000 canaries, one seed,
claimed epsilon 2, nothing written (the tests run two of its audits).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audit.attach_records import RecordAudit
from audit.stats.accountant import noise_multiplier_for

RESULTS = Path(__file__).parent / "results"
VARIANTS = ("poisson", "shuffled", "weighted")
DELTA = 1e-5


@dataclasses.dataclass(frozen=True)
class Design:
    canaries: int = 2000
    n_train: int = 1400
    batch_size: int = 64
    epochs: int = 10
    lr: float = 0.5
    max_grad_norm: float = 1.0
    value: float = 16.0
    oversample: int = 4
    statistics: tuple[str, ...] = ("likelihood-ratio", "epoch-likelihood-ratio")
    effective: bool = True  # the effective noise multiplier (never decides; a few seconds per audit)
    label: int | None = None
    epsilons: tuple[float, ...] = (1.0, 2.0, 4.0)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)


QUICK = Design(canaries=1000, epsilons=(2.0,), seeds=(0,), effective=False)


def _data(n_train: int):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(12345).permutation(len(y))
    x, y = x[order], y[order]
    return (x[:n_train], y[:n_train]), (x[1400:], y[1400:])


def _loader(variant: str, dataset, design: Design, generator: torch.Generator):
    """(the user's DataLoader, poisson_sampling for make_private, loader epochs to run)."""
    from torch.utils.data import DataLoader, WeightedRandomSampler

    if variant == "poisson":
        return DataLoader(dataset, batch_size=design.batch_size, generator=generator), True, design.epochs
    if variant == "shuffled":
        return (DataLoader(dataset, batch_size=design.batch_size, shuffle=True, generator=generator), False,
                design.epochs)
    if variant == "weighted":
        # class-balancing weights, and an "epoch" of oversample x the dataset: Opacus then
        # accounts q = 1 / len(loader) = B / (oversample N) while each record is drawn at B / N.
        labels = np.asarray([int(dataset[i][1]) for i in range(len(dataset))]) if not hasattr(dataset, "tensors") \
            else dataset.tensors[1].numpy()
        counts = np.bincount(labels, minlength=10).astype(float)
        weights = 1.0 / counts[labels]
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                        num_samples=design.oversample * len(dataset), replacement=True,
                                        generator=generator)
        epochs = max(1, design.epochs // design.oversample)
        return DataLoader(dataset, batch_size=design.batch_size, sampler=sampler), False, epochs
    raise ValueError(variant)


def run_one(variant: str, epsilon: float, seed: int, design: Design) -> dict:
    """Train the user's script once with this loader and audit it."""
    from opacus import PrivacyEngine

    t0 = time.perf_counter()
    (x, y), (xt, yt) = _data(design.n_train)
    audit = RecordAudit(n_features=x.shape[1], n_classes=10, canaries=design.canaries, seed=seed,
                        value=design.value, label=design.label)
    xs, ys, _ = audit.training_arrays(x, y)
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(xs), torch.as_tensor(ys))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    loader, poisson, epochs = _loader(variant, dataset, design, generator)
    # what make_private accounts: q = 1 / len(loader), T = epochs * len(loader)
    q_acc, steps = 1.0 / len(loader), epochs * len(loader)
    sigma = noise_multiplier_for(target_epsilon=epsilon, delta=DELTA, sample_rate=q_acc, steps=steps)
    model = nn.Linear(audit.width, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=design.lr)
    engine = PrivacyEngine(accountant="prv", secure_mode=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=design.max_grad_norm, poisson_sampling=poisson, noise_generator=generator)
    audit.attach(model, optimizer)
    loss_fn = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                optimizer.step()
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((model(torch.as_tensor(audit.canaries.pad(xt))).argmax(1).numpy() == yt).mean())
    result = audit.finish(accountant=engine.accountant, delta=DELTA, steps_per_epoch=len(loader),
                          statistics=design.statistics, effective=design.effective)
    s_mean = float(audit.readings.signals.mean())
    return {
        "variant": variant, "claimed_epsilon": epsilon, "seed": seed, "sigma": sigma, "sample_rate": q_acc,
        "steps": steps, "audited_steps": audit.readings.steps, "accountant_epsilon": result.claimed_epsilon,
        "verdict": result.verdict, "bound": result.epsilon_lower_bound, "power": result.power,
        "claim_p_value": result.claim_p_value, "effective_epsilon": result.effective_epsilon,
        "effective_sigma": result.effective_noise_multiplier, "flagged_by": list(result.flagged_by),
        "statistics": result.statistics, "mean_signal": s_mean, "test_accuracy": acc,
        "train_s": train_s, "wall_s": time.perf_counter() - t0,
    }


SHUFFLE_DESIGNS = ((38, 10), (38, 1), (4, 1), (2, 1))  # (batches per epoch b, epochs E)


def _simulated_readings(rng: np.random.Generator, m: int, b: int, epochs: int, sigma: float, shuffled: bool):
    """Readings of the exact mechanism at signal C = 1 (the ideal record canary, as strong as a
    Dirac canary): each member present once per epoch at a uniform step (``shuffled``) or
    at every step with probability 1/b (Poisson), plus N(0, sigma^2) noise."""
    from canaries.records import RecordReadings

    members = rng.random(m) < 0.5
    steps = b * epochs
    if shuffled:
        present = np.zeros((steps, m))
        for e in range(epochs):
            present[e * b + rng.integers(0, b, size=m), np.arange(m)] = 1.0
    else:
        present = (rng.random((steps, m)) < 1.0 / b).astype(float)
    x = present * members + rng.normal(0.0, sigma, size=(steps, m))
    return RecordReadings(projections=x, signals=np.ones((steps, m)), off_direction=np.zeros((steps, m)),
                          members=members, max_grad_norm=1.0, block_size=1)


def shuffle_power(m: int = 2000, epsilons: tuple[float, ...] = (4.0, 8.0), seed: int = 0) -> list[dict]:
    """Could any one-run audit of this size see shuffling accounted as Poisson? The exact
    mechanism (no training: ideal readings, signal exactly C) for several (b, E), audited as
    the training runs are (likelihood-ratio and epoch-likelihood-ratio, Bonferroni)."""
    from audit.attach_records import analyse

    rows = []
    for eps in epsilons:
        for b, epochs in SHUFFLE_DESIGNS:
            sigma = noise_multiplier_for(target_epsilon=eps, delta=DELTA, sample_rate=1.0 / b, steps=b * epochs)
            rng = np.random.default_rng([seed, b, epochs, int(eps * 100)])
            for shuffled in (True, False):
                r = analyse(_simulated_readings(rng, m, b, epochs, sigma, shuffled), sigma=sigma, sample_rate=1.0 / b,
                            steps=b * epochs, delta=DELTA, steps_per_epoch=b,
                            statistics=("likelihood-ratio", "epoch-likelihood-ratio"), effective=False)
                rows.append({"claimed_epsilon": eps, "batches_per_epoch": b, "epochs": epochs, "sigma": sigma,
                             "loader": "shuffled" if shuffled else "poisson", "canaries": m, "verdict": r.verdict,
                             "bound": r.epsilon_lower_bound, "claim_p_value": r.claim_p_value,
                             "auc": {k: v["auc"] for k, v in r.statistics.items()}})
                print(f"simulated b={b} E={epochs} eps={eps:g} {rows[-1]['loader']}: {r.verdict} "
                      f"bound={r.epsilon_lower_bound:.2f} p={r.claim_p_value:.2g}", file=sys.stderr, flush=True)
    return rows


def shuffle_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    out = ["", "## Could one run see shuffling at all? The exact mechanism", "",
           f"Simulated readings of the ideal record canary (signal exactly C, as strong as a Dirac canary), "
           f"{rows[0]['canaries'] if rows else 0} canaries, one audit per row, the same two statistics and "
           "Bonferroni; sigma from the PRV accountant for Poisson at q = 1/b, T = b E.", "",
           "| claimed ε | b (batches/epoch) | E | σ | loader | verdict | bound | curve-test p | AUC (LR / epoch LR) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['claimed_epsilon']:g} | {r['batches_per_epoch']} | {r['epochs']} | {r['sigma']:.3f} | "
                   f"{r['loader']} | {r['verdict']} | {r['bound']:.2f} | {r['claim_p_value']:.2g} | "
                   f"{r['auc']['likelihood-ratio']:.3f} / {r['auc']['epoch-likelihood-ratio']:.3f} |")
    return "\n".join(out) + "\n"


def _fmt(v, spec=".3g"):
    return "—" if v is None else format(v, spec)


def table(rows: list[dict], design: Design, wall_s: float, command: str) -> str:
    n = design.n_train + design.canaries // 2
    per_epoch = -(-n // design.batch_size)
    out = [
        "# Data-pipeline canaries: loader bugs in one run",
        "",
        f"Reproduce: `{command}` (wall time {wall_s:.0f} s on a shared 2-core machine).",
        "",
        f"Logistic regression on digits ({design.n_train} real records, 64 features) + {design.canaries} reserved "
        f"features; {design.canaries} canary records (reserved value {design.value}, labels uniform, each a member "
        f"with probability 1/2), batch {design.batch_size} (about {per_epoch} steps per epoch), "
        f"{design.epochs} data epochs, SGD lr {design.lr}, C = {design.max_grad_norm}, delta = {DELTA}; sigma "
        "from Opacus' PRV accountant so that the accounted (q = 1/len(loader), T) gives the claimed epsilon. "
        "95% confidence shared (Bonferroni) by the one-run bound and the claimed-curve test of each statistic "
        f"({', '.join(design.statistics)}). `weighted`: class-balancing `WeightedRandomSampler` "
        f"with `num_samples = {design.oversample} * len(dataset)` (replacement), so Opacus accounts "
        f"q = B / ({design.oversample} N) while every record is drawn at about B / N per step.",
        "",
        "| loader | claimed ε | flagged | bound (min–max) | power | curve-test p (min–max) | effective ε (min–max) | deciding statistic | test acc. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for eps in design.epsilons:
            rs = [r for r in rows if r["variant"] == variant and r["claimed_epsilon"] == eps]
            if not rs:
                continue
            flagged = sum(r["verdict"] == "VIOLATION" for r in rs)
            b = [r["bound"] for r in rs]
            p = [r["claim_p_value"] for r in rs]
            e = [r["effective_epsilon"] for r in rs if r["effective_epsilon"] is not None]
            deciding = sorted({f.split(":")[0] for r in rs for f in r["flagged_by"]}) or ["—"]
            acc = np.mean([r["test_accuracy"] for r in rs])
            out.append(
                f"| {variant} | {eps:g} | {flagged}/{len(rs)} | {min(b):.2f}–{max(b):.2f} | {rs[0]['power']:.2f} | "
                f"{min(p):.2g}–{max(p):.2g} | {_fmt(min(e) if e else None)}–{_fmt(max(e) if e else None)} | "
                f"{', '.join(deciding)} | {acc:.2f} |")
    out += ["", "Per run (seed: verdict, bound, p, effective ε):", ""]
    for r in rows:
        out.append(f"- {r['variant']} ε={r['claimed_epsilon']:g} seed {r['seed']}: {r['verdict']}, bound "
                   f"{r['bound']:.2f}, p {r['claim_p_value']:.2g}, effective ε {_fmt(r['effective_epsilon'])}, "
                   f"AUC LR {r['statistics']['likelihood-ratio']['auc']:.3f} / epoch "
                   f"{r['statistics'].get('epoch-likelihood-ratio', {}).get('auc', float('nan')):.3f}, "
                   f"mean signal {r['mean_signal']:.3f}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 canaries, one seed, claimed epsilon 2; writes nothing")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--epsilons", nargs="*", type=float)
    parser.add_argument("--seeds", nargs="*", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    parser.add_argument("--canaries", type=int, help="m (default 2000); results go to pipeline_canaries_m{m}.*")
    parser.add_argument("--batch-size", type=int, help="B (default 64)")
    parser.add_argument("--statistics", nargs="*", help="deciding statistics (default: likelihood-ratio "
                        "epoch-likelihood-ratio); each adds two tests to the Bonferroni split")
    parser.add_argument("--append", action="store_true",
                        help="keep the saved runs and add these (e.g. --epsilons 8); wall times add up")
    parser.add_argument("--render", action="store_true", help="only re-render the Markdown from the saved JSON")
    parser.add_argument("--simulate-only", action="store_true",
                        help="only the exact-mechanism shuffle check; re-render the table with saved training runs")
    args = parser.parse_args(argv)
    if args.render:
        paths = sorted(args.out.glob("pipeline_canaries*.json"))
        for path in paths:
            saved = json.loads(path.read_text())
            design = Design(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["design"].items()})
            others = ", ".join(f"[`{p.stem}.md`]({p.stem}.md)" for p in paths if p != path)
            path.with_suffix(".md").write_text(table(saved["rows"], design, saved["wall_s"], saved["command"])
                                               + shuffle_table(saved.get("shuffle_power") or [])
                                               + (f"\nOther designs: {others}.\n" if others else ""))
        return 0
    if args.simulate_only:
        t0 = time.perf_counter()
        sim = shuffle_power()
        saved = json.loads((args.out / "pipeline_canaries.json").read_text())
        saved["shuffle_power"] = sim
        saved["shuffle_power_wall_s"] = time.perf_counter() - t0
        (args.out / "pipeline_canaries.json").write_text(json.dumps(saved, indent=1))
        design = Design(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["design"].items()})
        (args.out / "pipeline_canaries.md").write_text(
            table(saved["rows"], design, saved["wall_s"], saved["command"]) + shuffle_table(sim))
        return 0
    design = QUICK if args.quick else Design()
    if args.epsilons:
        design = dataclasses.replace(design, epsilons=tuple(args.epsilons))
    if args.seeds is not None and args.seeds:
        design = dataclasses.replace(design, seeds=tuple(args.seeds))
    stem = "pipeline_canaries"
    if args.canaries:
        design = dataclasses.replace(design, canaries=args.canaries)
        stem += f"_m{args.canaries}"
    if args.batch_size:
        design = dataclasses.replace(design, batch_size=args.batch_size)
    if args.statistics:
        design = dataclasses.replace(design, statistics=tuple(args.statistics))
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    for variant in args.variants:
        for eps in design.epsilons:
            for seed in design.seeds:
                r = run_one(variant, eps, seed, design)
                rows.append(r)
                print(f"{variant} eps={eps:g} seed={seed}: {r['verdict']} bound={r['bound']:.2f} "
                      f"p={r['claim_p_value']:.2g} eff={_fmt(r['effective_epsilon'])} ({r['wall_s']:.0f}s)",
                      file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    command = "OMP_NUM_THREADS=1 .venv/bin/python -m experiments.pipeline_canaries" + (" --quick" if args.quick else "")
    command += "".join(f" --{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in (
        ("canaries", args.canaries), ("batch-size", args.batch_size), ("statistics", args.statistics),
        ("variants", args.variants)) if v
        and not (k == "variants" and list(v) == list(VARIANTS)))
    extra, kept = "", {}
    if args.append and not args.quick:
        saved = json.loads((args.out / f"{stem}.json").read_text())
        done = {(r["variant"], r["claimed_epsilon"], r["seed"]) for r in rows}
        rows = [r for r in saved["rows"] if (r["variant"], r["claimed_epsilon"], r["seed"]) not in done] + rows
        eps = tuple(sorted({r["claimed_epsilon"] for r in rows}))
        design = dataclasses.replace(design, epsilons=eps)
        wall += saved["wall_s"]
        command = saved["command"] + " (then --append --epsilons " + " ".join(f"{e:g}" for e in args.epsilons or ()) + ")"
        if "shuffle_power" in saved:
            extra = shuffle_table(saved["shuffle_power"])
            kept = {k: saved[k] for k in ("shuffle_power", "shuffle_power_wall_s")}
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{stem}.json").write_text(json.dumps(
            {"design": dataclasses.asdict(design), "command": command, "wall_s": wall, "rows": rows, **kept},
            indent=1))
        (args.out / f"{stem}.md").write_text(table(rows, design, wall, command) + extra)
    summary = {"wall_s": wall, "flagged": {f"{r['variant']}@{r['claimed_epsilon']:g}#{r['seed']}":
                                           r["verdict"] == "VIOLATION" for r in rows}}
    if args.json:
        print(json.dumps(summary))
    else:
        print(table(rows, design, wall, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
