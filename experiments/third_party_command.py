"""An older Opacus release, in its own virtual environment, audited through the command target.

The trainer is :mod:`trainers.thirdparty.opacus_command_train` (a stand-alone script that
imports nothing of dpaudit), run by ``dpaudit``'s command target (``trainer.kind =
"command"``) with the Python of a separate virtual environment that holds an older Opacus
than the project's (default ``opacus==1.5.4`` with the project's CPU ``torch``; the project
has 1.6.0). This script creates that environment when it is missing (``python3 -m venv`` and
``pip install`` from the package registry, ``-c constraints.txt``), records its ``pip
freeze``, asks the script for Opacus' own accounting (``--account``: the noise multiplier
``make_private_with_epsilon`` picks and the epsilon of the steps actually taken), then runs
one black-box audit per setting with :func:`audit.pipeline.run_audit` (what ``dpaudit run``
does) on a config tree:

- ``correct``: Opacus used as documented, claimed epsilon = the target handed to
  ``make_private_with_epsilon`` (Opacus' accountant, PRV, delta 1e-5), at each epsilon;
- ``stale-optimizer``: the loop steps the optimizer built before ``make_private`` (no
  clipping, no noise; Opacus raises nothing), same claim: real epsilon infinite;
- ``epochs``: the claim is computed for 1 epoch, the loop trains ``epochs``: the real epsilon
  is the accountant's for all the steps, finite and above the claim.

Design: ``purchase`` (synthetic Purchase-100-like, 600 binary features, 100 classes), K
models, m mislabeled canaries each included with probability 1/2, the one-run bound on model
0 at 95% confidence, the pipeline's verdict (``VIOLATION`` / ``NO VIOLATION DETECTED`` /
``INCONCLUSIVE`` when even a perfect attack could not show more than the claim).

``python -m experiments.third_party_command [--venv DIR] [--opacus VERSION] [--quick] [--out DIR]``:
the full run writes ``third_party_command.md`` and ``.json`` to ``experiments/results``;
``--quick`` runs a tiny version and, without ``--out``, only prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from audit.atomic import atomic_open
from audit.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
SCRIPT = ROOT / "trainers" / "thirdparty" / "opacus_command_train.py"
CONSTRAINTS = ROOT / "constraints.txt"
CONFIDENCE = 0.95
DELTA = 1e-5
LOW_FPR = 0.001


@dataclass(frozen=True)
class Data:
    name: str
    n: int | None  # None: all records
    population: int
    test: int
    canaries: int
    classes: int  # the public label set, passed to the script as --classes

    def pool(self, total: int) -> int:
        return (total if self.n is None else self.n) - self.population - self.test


PURCHASE = Data("purchase", 3000, 500, 500, 500, 100)
DIGITS = Data("digits", None, 200, 300, 400, 10)
SETTINGS = (("none", 1.0), ("none", 4.0), ("stale-optimizer", 1.0), ("epochs", 1.0))


@dataclass(frozen=True)
class Setting:
    # (data, misconfig, claimed epsilon), audited in this order
    runs: tuple[tuple[Data, str, float], ...] = tuple((d, m, e) for d in (DIGITS, PURCHASE) for m, e in SETTINGS)
    seed: int = 0
    models: int = 8
    canary_kind: str = "mislabeled"
    # the script's training options
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.5
    max_grad_norm: float = 1.0
    hidden: int = 128
    accountant: str = "prv"


FULL = Setting()
QUICK = Setting(runs=((Data("digits", 800, 100, 100, 100, 10), "none", 1.0),
                      (Data("digits", 800, 100, 100, 100, 10), "stale-optimizer", 1.0)), models=5, epochs=2)


def total_records(name: str, seed: int) -> int:
    from trainers.data import load_dataset

    return len(load_dataset(name, seed=seed))


def ensure_venv(venv: Path, opacus: str, log: Callable[[str], None]) -> Path:
    """The Python of ``venv``, created with ``opacus==VERSION`` and the project's torch pin
    when it has no Opacus of that version yet."""
    python = venv / "bin" / "python"
    if python.exists():
        got = subprocess.run([str(python), "-c", "import opacus; print(opacus.__version__)"],
                             capture_output=True, text=True)
        if got.returncode == 0 and got.stdout.strip() == opacus:
            return python
    log(f"creating {venv} with opacus=={opacus}")
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), f"opacus=={opacus}",
                    "torch"], check=True)
    return python


def freeze(python: Path) -> list[str]:
    out = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line and not line.startswith(("pip==", "setuptools=="))]


def script_options(s: Setting, d: Data, misconfig: str, epsilon: float) -> list[str]:
    return ["--epsilon", f"{epsilon:g}", "--delta", f"{DELTA:g}", "--accountant", s.accountant,
            "--epochs", str(s.epochs), "--batch-size", str(s.batch_size), "--lr", f"{s.lr:g}",
            "--max-grad-norm", f"{s.max_grad_norm:g}", "--hidden", str(s.hidden), "--classes", str(d.classes),
            "--misconfig", misconfig]


def accounting(python: Path, s: Setting, d: Data, misconfig: str, epsilon: float) -> dict[str, Any]:
    """Opacus' own numbers (run in the venv) for a training set of the expected size: the pool
    less half the canaries."""
    records = d.pool(total_records(d.name, s.seed)) - d.canaries // 2
    out = subprocess.run([str(python), str(SCRIPT), "--account", str(records), *script_options(s, d, misconfig, epsilon)],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def config_tree(s: Setting, d: Data, python: Path, misconfig: str, epsilon: float, out: Path) -> dict:
    data: dict[str, Any] = {"name": d.name, "population": d.population, "test": d.test}
    if d.n is not None:
        data["n"] = d.n
    return {
        "name": f"opacus-command-{d.name}-{misconfig}-eps{epsilon:g}", "seed": s.seed, "output_dir": str(out),
        "confidence": CONFIDENCE,
        "data": data,
        "trainer": {"kind": "command", "timeout_s": 600,
                    "command": [str(python), str(SCRIPT), "{train}", "{query}", "{out}", "{seed}",
                                *script_options(s, d, misconfig, epsilon)]},
        "dp": {"claimed_epsilon": epsilon, "delta": DELTA},
        "audit": {"models": s.models, "canaries": d.canaries, "canary_kind": s.canary_kind},
        "mlflow": {"enabled": False},
    }


def run_all(s: Setting, python: Path, log: Callable[[str], None]) -> list[dict]:
    from audit.config import parse_config
    from audit.pipeline import run_audit
    from experiments.third_party import pipeline_row

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d, misconfig, epsilon in s.runs:
            acc = accounting(python, s, d, misconfig, epsilon)
            tree = config_tree(s, d, python, misconfig, epsilon, Path(tmp) / f"{d.name}-{misconfig}-{epsilon:g}")
            start = time.perf_counter()
            report = run_audit(parse_config(tree), progress=False)
            row = {"data": asdict(d), "misconfig": misconfig, "epsilon": epsilon, "seconds": time.perf_counter() - start,
                   "command": shlex.join(tree["trainer"]["command"]), "accounting": acc, **pipeline_row(report)}
            if row["claimed_epsilon"] != epsilon:
                raise RuntimeError(f"{misconfig}: audited claim {row['claimed_epsilon']} != {epsilon}")
            rows.append(row)
            log(f"{d.name} {misconfig} eps={epsilon:g}: bound {row['epsilon_lower_bound']:.3f} / power {row['power']:.2f} "
                f"{row['decision']} (test acc {row['test_accuracy']}, {row['seconds']:.0f} s)")
    return rows


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "∞" if v == float("inf") else f"{v:.{digits}g}"
    return str(v)


CONFIGURATION = {
    "none": "as documented: `make_private_with_epsilon(target_epsilon, delta, epochs)`, the returned optimizer",
    "stale-optimizer": "the loop steps the optimizer built before `make_private` (no clipping, no noise; "
                       "nothing raised or warned)",
    "epochs": "claim computed for 1 epoch (`make_private_with_epsilon(epochs=1)`), the loop trains all the epochs",
}


def markdown(s: Setting, rows: Sequence[dict], *, seconds: float, quick: bool, command: str, frozen: Sequence[str],
             opacus: str, venv: str) -> str:
    lines = [
        f"# An older Opacus ({opacus}) in its own venv, audited through the command target" + (" (quick)" if quick else ""),
        "",
        f"Reproduce: `{command}`. Total {seconds:.0f} s on 2 CPU cores shared with other jobs (timings are "
        f"indicative); dpaudit itself on Python {platform.python_version()} ({platform.machine()}).",
        "",
        f"The audited environment (`{venv}`, created by the experiment: `python3 -m venv`, `pip install -c "
        f"constraints.txt opacus=={opacus} torch`), `pip freeze`: " + ", ".join(f"`{x}`" for x in frozen) + ".",
        "",
        "Trainer: `trainers/thirdparty/opacus_command_train.py` (no dpaudit import), run once per model by "
        "`trainer.kind = \"command\"` with that venv's `python`. "
        f"A {s.hidden}-unit tanh MLP (features → {s.hidden} → classes), SGD lr {s.lr:g}, expected (Poisson) batch "
        f"{s.batch_size}, C = {s.max_grad_norm:g}, {s.epochs} epochs, `PrivacyEngine(accountant=\"{s.accountant}\")`. "
        f"The claim is the target ε handed to `make_private_with_epsilon` at δ = {DELTA:g}, i.e. Opacus' own "
        "accountant's; σ and the accounted ε below come from the venv's Opacus (`--account`) for a training set of "
        "the expected size (the pool less half the canaries; each model's own size gives its own σ for the same "
        "target).",
        "",
        "| setting | configuration |",
        "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in CONFIGURATION.items()],
        "",
        "Design, per dataset: K = {models} models, m {kind} canaries drawn from the training pool, each included "
        "independently with probability 1/2 (the rest of the pool is in every model). Bound: the one-run bound on "
        "model 0 (Steinke, Nasr & Jagielski 2023) with lira-offline-fixed, {conf:.0%} confidence; power = the largest "
        "ε these canaries could show. Strongest attack = highest TPR at 0.1% FPR, pooled over the K targets (95% "
        "Clopper-Pearson interval). Test accuracy: mean over the K models.".format(
            models=s.models, kind=s.canary_kind, conf=CONFIDENCE),
        "",
        "| data (n / population / test / m canaries) | setting | claimed ε | σ (Opacus) | accounted ε of the claim | "
        "real ε (accountant, all steps) | ε lower bound | power | verdict | strongest attack (AUC) | TPR @ 0.1% FPR | "
        "test acc | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|",
    ]
    for r in rows:
        a, d = r["accounting"], r["data"]
        interval = r["tpr_low_fpr_interval"]
        acc = "—" if r["test_accuracy"] is None else f"{r['test_accuracy']:.1%}"
        tpr = "—" if r["tpr_low_fpr"] is None else (
            f"{r['tpr_low_fpr']:.3%}" + (f" [{interval[0]:.3%}, {interval[1]:.3%}]" if interval else ""))
        size = "all" if d["n"] is None else d["n"]
        lines.append(
            f"| `{d['name']}` ({size} / {d['population']} / {d['test']} / {d['canaries']}) | `{r['misconfig']}` | "
            f"{r['epsilon']:g} | {a['noise_multiplier']:.3f} | {_fmt(a['claim_accounted_epsilon'])} | "
            f"{_fmt(a['actual_epsilon'])} | {_fmt(r['epsilon_lower_bound'])} | {_fmt(r['power'])} | {r['decision']} | "
            f"{r['attack']} ({_fmt(r['auc'])}) | {tpr} | {acc} | {r['seconds']:.0f} |")
    lines += [
        "",
        "Reading. `NO VIOLATION DETECTED` is no proof of privacy: it says only that this design, whose power is "
        "given, found nothing above the claim. `INCONCLUSIVE` means the design could not have shown more than the "
        "claim at all. A misconfiguration whose real ε stays below the power, and whose models barely separate "
        "members from non-members, can stay uncaught: that is a limit of a black-box audit with this many canaries, "
        "not evidence that the configuration is private.",
        "",
        "Each run's command line (the `{train}`, `{query}`, `{out}`, `{seed}` placeholders filled by dpaudit per "
        "model):",
        "",
        *[f"- `{r['data']['name']}` `{r['misconfig']}` ε = {r['epsilon']:g}: `{r['command']}`" for r in rows],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/dpaudit-opacus-old"))
    parser.add_argument("--opacus", default="1.5.4", help="the Opacus release of the venv (default 1.5.4)")
    parser.add_argument("--quick", action="store_true", help="tiny version; prints only unless --out is given")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    setting = QUICK if args.quick else FULL
    command = (f"OMP_NUM_THREADS=1 python -m experiments.third_party_command --venv {args.venv} --opacus {args.opacus}"
               + (" --quick" if args.quick else ""))

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        python = ensure_venv(args.venv.absolute(), args.opacus, log)
        frozen = freeze(python)
        start = time.perf_counter()
        rows = run_all(setting, python, log)
        seconds = time.perf_counter() - start
    except (InputError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = markdown(setting, rows, seconds=seconds, quick=args.quick, command=command, frozen=frozen,
                    opacus=args.opacus, venv=str(args.venv))
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        from audit.pipeline.rundir import write_json

        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "third_party_command.md", "w") as handle:
            handle.write(text)
        write_json(out / "third_party_command.json", {
            "command": command, "venv": str(args.venv), "opacus": args.opacus, "pip_freeze": frozen,
            "seconds": seconds, "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "setting": asdict(setting), "confidence": CONFIDENCE, "delta": DELTA, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
