"""The user's own Opacus loop, audited in place (``attach_audit``): soundness, bugs and utility.

Every run below is written as a user's script is: the user's model, data, optimizer and
loop, ``PrivacyEngine.make_private`` (Poisson sampling, flat clipping C = 1, hooks mode,
Opacus' prv accountant, delta = 1e-5), plus the audit's lines. Three model families:

- ``mlp``: a two-layer MLP on scikit-learn's digits (64 -> 32 -> 10);
- ``cnn``: a small CNN on the digits as 8x8 images (conv 8 channels, GroupNorm, max-pool, linear);
- ``lora``: a Hugging Face ``transformers`` Llama sequence classifier built from a config
  with random weights (2 layers, hidden 64, vocabulary 64; nothing downloaded), fine-tuned
  with ``peft`` LoRA (rank 4 on q_proj and v_proj; the classification head trainable, the
  rest frozen) on synthetic token ids: sequences of 16 random tokens with one marker token
  (1 or 2) at a random position that gives the class.

Three checks:

1. Correct DP-SGD is never flagged: ``--seeds`` seeds (10) per family, design ``correct``.
2. Bugs written into the user's code (not the harness's) are flagged in one run (seed 0,
   each family): ``no_clipping`` (the user's DPOptimizer subclass sums per-sample
   gradients unclipped), ``half_noise`` (the user patches ``add_noise`` with std
   sigma C / 2), ``noise_divided_by_batch_twice`` (the user's subclass divides the noise
   std by the expected batch size, which Opacus' ``scale_grad`` divides by again).
3. Utility: test accuracy of the same loop with the same seeds with and without the
   audit (the audited arm is check 1's runs); the canaries must not move it beyond the
   noise of DP training (|mean difference| <= 3 standard errors of the difference).

Designs (records n, expected batch B, sigma, epochs; q = B / n, T = epochs n / B):
``correct`` n = 1000, B = 32, sigma = 1, 4 epochs, 1,000 canaries; ``no_clipping`` the
same; ``half_noise`` n = 512, B = 16, sigma = 1, 8 epochs (T = 256), 4,000 canaries (half
the noise is seen by the claimed-curve test only, which needs the steps and canaries);
``noise_divided_by_batch_twice`` n = 128, B = 16, sigma = 8, 16 epochs, 1,000 canaries
(sigma / B = 0.5 actually added; a large expected batch keeps empty Poisson batches, which
the Llama forward cannot take, out of the runs).

``python -m experiments.own_loop [--quick] [--seeds N] [--families mlp cnn lora] [--out DIR]``
writes ``own_loop.md`` and ``own_loop.json`` under ``experiments/results`` (or ``--out``);
``--quick`` runs 2 seeds of smaller designs and prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import types
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the transformer is built from a config

import numpy as np
import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
DELTA = 1e-5
FAMILIES = ("mlp", "cnn", "lora")
BUGS = ("no_clipping", "half_noise", "noise_divided_by_batch_twice")
PASSING = ("NO VIOLATION DETECTED", "INCONCLUSIVE")
VOCAB, LENGTH = 64, 16


@dataclasses.dataclass(frozen=True)
class Design:
    n: int
    batch_size: int
    sigma: float
    epochs: int
    canaries: int


FULL = {
    "correct": Design(n=1000, batch_size=32, sigma=1.0, epochs=4, canaries=1000),
    "no_clipping": Design(n=1000, batch_size=32, sigma=1.0, epochs=4, canaries=1000),
    "half_noise": Design(n=512, batch_size=16, sigma=1.0, epochs=8, canaries=4000),
    "noise_divided_by_batch_twice": Design(n=128, batch_size=16, sigma=8.0, epochs=16, canaries=1000),
}
QUICK = {
    "correct": Design(n=256, batch_size=32, sigma=1.0, epochs=4, canaries=500),
    "no_clipping": Design(n=256, batch_size=32, sigma=1.0, epochs=4, canaries=500),
    "half_noise": Design(n=512, batch_size=16, sigma=1.0, epochs=8, canaries=4000),
    "noise_divided_by_batch_twice": Design(n=128, batch_size=16, sigma=8.0, epochs=8, canaries=500),
}
LR = {"mlp": 0.5, "cnn": 0.5, "lora": 1.0}


# ---------------------------------------------------------------- the user's data and models


def digits_data():
    """(x float[1797, 64], y int64[1797]); records 1000.. are the test set."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)


def token_data(n: int = 2000, seed: int = 0):
    """Synthetic token ids: (x int64[n, 16], y int64[n]). Tokens 3..63 at random and one
    marker, 1 or 2, at a random position: the class is the marker minus 1. Token 0 is padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, VOCAB, (n, LENGTH), generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    x[torch.arange(n), torch.randint(0, LENGTH, (n,), generator=g)] = 1 + y
    return x, y


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.out = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x.view(-1, 1, 8, 8))))
        return self.out(nn.functional.max_pool2d(x, 2).flatten(1))


class Logits(nn.Module):
    """token ids -> logits of a Hugging Face sequence classifier (the loop's loss is the user's)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).logits


def lora_transformer(*, hidden: int = 64, base_dtype: torch.dtype = torch.float32) -> nn.Module:
    """A Llama sequence classifier from a config (random weights, nothing downloaded), width
    ``hidden``, its weights in ``base_dtype``; LoRA rank 4 on q_proj and v_proj (the head stays
    trainable, the rest is frozen; peft keeps the adapters in float32 over a bfloat16 or
    float16 base model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=LENGTH, num_labels=2,
                         pad_token_id=0)
    lora = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return Logits(get_peft_model(LlamaForSequenceClassification(config).to(base_dtype), lora))


def build_model(family: str) -> nn.Module:
    if family == "mlp":
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    if family == "cnn":
        return SmallCNN()
    return lora_transformer()


# ---------------------------------------------------------------- bugs in the user's code


def no_clipping(optimizer) -> None:
    """The user's DPOptimizer subclass that sums per-sample gradients without clipping."""
    from opacus.optimizers.optimizer import _mark_as_processed

    class ForgetsToClip(type(optimizer)):
        def clip_and_accumulate(self):
            for p in self.params:
                summed = self._get_flat_grad_sample(p).sum(dim=0)
                p.summed_grad = summed if p.summed_grad is None else p.summed_grad + summed
                _mark_as_processed(p.grad_sample)

    optimizer.__class__ = ForgetsToClip


def half_noise(optimizer) -> None:
    """The user patches add_noise with a sensitivity of C / 2 (noise std sigma C / 2)."""
    from opacus.optimizers.optimizer import _generate_noise, _mark_as_processed

    def add_noise(self):
        for p in self.params:
            noise = _generate_noise(std=0.5 * self.noise_multiplier * self.max_grad_norm, reference=p.summed_grad,
                                    generator=self.generator)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.add_noise = types.MethodType(add_noise, optimizer)


def noise_divided_by_batch_twice(optimizer) -> None:
    """The user's subclass divides the noise std by the batch size; scale_grad divides again."""
    from opacus.optimizers.optimizer import _generate_noise, _mark_as_processed

    class DividesTwice(type(optimizer)):
        def add_noise(self):
            for p in self.params:
                std = self.noise_multiplier * self.max_grad_norm / self.expected_batch_size
                noise = _generate_noise(std=std, reference=p.summed_grad, generator=self.generator)
                p.grad = (p.summed_grad + noise).view_as(p)
                _mark_as_processed(p.summed_grad)

    optimizer.__class__ = DividesTwice


PATCHES = {"no_clipping": no_clipping, "half_noise": half_noise,
           "noise_divided_by_batch_twice": noise_divided_by_batch_twice}


# ---------------------------------------------------------------- the user's script


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def user_script(family: str, design: Design, *, seed: int, data, bug: str | None = None, audit: bool = True,
                sigma: float | None = None):
    """The user's script up to the end of training: make_private, the planted bug (if any),
    attach_audit (if ``audit``), the user's loop. Returns (model, audit or None, privacy engine, train seconds)."""
    from opacus import PrivacyEngine

    from audit import attach_audit

    (x_train, y_train), _ = data
    torch.manual_seed(seed)
    model = build_model(family)
    params = [p for p in model.parameters() if p.requires_grad]  # LoRA: adapters and head only
    optimizer = torch.optim.SGD(params, lr=LR[family])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train[:design.n], y_train[:design.n]), batch_size=design.batch_size,
        generator=torch.Generator().manual_seed(seed))  # Opacus' Poisson sampler draws from it
    engine = PrivacyEngine(accountant="prv")
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, max_grad_norm=1.0,
        noise_multiplier=design.sigma if sigma is None else sigma,
        noise_generator=torch.Generator().manual_seed(seed + 1000))
    if bug is not None:
        PATCHES[bug](optimizer)
    run = attach_audit(optimizer, canaries=design.canaries, seed=seed) if audit else None
    t0 = time.perf_counter()
    for _ in range(design.epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    optimizer.zero_grad()
    return model, run, engine, time.perf_counter() - t0


def user_run(family: str, design: Design, *, seed: int, data, bug: str | None = None, audit: bool = True) -> dict:
    """One user script, its test accuracy and (if ``audit``) the audit's verdict."""
    model, run, engine, train_s = user_script(family, design, seed=seed, data=data, bug=bug, audit=audit)
    _, (x_test, y_test) = data
    row = {"family": family, "seed": seed, "bug": bug, "audited": audit, "train_s": round(train_s, 3),
           "test_accuracy": accuracy(model, x_test, y_test), "steps": engine.accountant.history[-1][2]}
    if audit:
        t0 = time.perf_counter()
        result = run.finish(accountant=engine.accountant, delta=DELTA, test_accuracy=row["test_accuracy"])
        row.update(
            finish_s=round(time.perf_counter() - t0, 3), verdict=result.verdict, exit_code=result.exit_code,
            claimed_epsilon=result.claimed_epsilon, epsilon_lower_bound=result.epsilon_lower_bound,
            power=result.power, claim_p_value=result.claim_p_value, claim_rejected=result.claim_rejected,
            effective_noise_multiplier=result.effective_noise_multiplier, effective_epsilon=result.effective_epsilon,
            claim=list(result.claim) if result.claim else None, canaries=design.canaries,
            claim_level=1.0 - min((t["confidence"] for t in result.report["claim_tests"]), default=1.0))
    return row


def noiseless_difference(family: str, design: Design, *, data) -> float:
    """Largest |weight difference| between the audited and the plain run without noise (sigma = 0):
    the canary rows leave clipping and the clipped sum of the real records untouched."""
    plain = user_script(family, design, seed=0, data=data, audit=False, sigma=0.0)[0]
    audited = user_script(family, design, seed=0, data=data, audit=True, sigma=0.0)[0]
    return max(float((a - b).abs().max()) for a, b in zip(plain.parameters(), audited.parameters()))


def family_data(family: str, digits, tokens):
    x, y = digits if family in ("mlp", "cnn") else tokens
    return (x[:1000], y[:1000]), (x[1000:], y[1000:])


# ---------------------------------------------------------------- the experiment


def run_all(designs: dict, seeds: int, families, log) -> dict:
    digits, tokens = digits_data(), token_data()
    correct, bugs, plain, noiseless = [], [], [], {}
    for family in families:
        data = family_data(family, digits, tokens)
        noiseless[family] = noiseless_difference(family, designs["correct"], data=data)
        log(f"{family} sigma = 0: largest weight difference with and without the audit {noiseless[family]:g}")
        for seed in range(seeds):
            for audit in (True, False):
                row = user_run(family, designs["correct"], seed=seed, data=data, audit=audit)
                (correct if audit else plain).append(row)
                log(f"{family} seed {seed} {'audited' if audit else 'plain  '}: acc {row['test_accuracy']:.3f}"
                    + (f", {row['verdict']} (bound {row['epsilon_lower_bound']:.2f}, claim "
                       f"{row['claimed_epsilon']:.2f}, p {row['claim_p_value']:.3g}, sigma_eff "
                       f"{row['effective_noise_multiplier']:.3f})" if audit else "") + f" [{row['train_s']:.1f} s]")
        for bug in BUGS:
            row = user_run(family, designs[bug], seed=0, data=data, bug=bug)
            bugs.append(row)
            log(f"{family} {bug}: {row['verdict']} (bound {row['epsilon_lower_bound']:.2f}, claim "
                f"{row['claimed_epsilon']:.2f}, p {row['claim_p_value']:.3g}, sigma_eff "
                f"{row['effective_noise_multiplier']:.3f}) [{row['train_s'] + row['finish_s']:.1f} s]")
    return {"correct": correct, "bugs": bugs, "plain": plain, "utility": utility(correct, plain, families),
            "noiseless_weight_difference": noiseless}


def utility(correct: list[dict], plain: list[dict], families) -> list[dict]:
    """Per family: test accuracy with and without the audit over the same seeds."""
    rows = []
    for family in families:
        a = np.array([r["test_accuracy"] for r in correct if r["family"] == family])
        b = np.array([r["test_accuracy"] for r in plain if r["family"] == family])
        k = len(a)
        se = float(np.sqrt(np.var(a, ddof=1) / k + np.var(b, ddof=1) / k)) if k > 1 else float("nan")
        diff = float(a.mean() - b.mean())
        rows.append({"family": family, "seeds": k,
                     "with_canaries": float(a.mean()), "with_sd": float(a.std(ddof=1)) if k > 1 else None,
                     "without": float(b.mean()), "without_sd": float(b.std(ddof=1)) if k > 1 else None,
                     "difference": diff, "se": se, "within_3se": bool(abs(diff) <= 3 * se) if k > 1 else None,
                     "max_abs_paired_difference": float(np.abs(a - b).max())})
    return rows


def _f(v, fmt=".2f"):
    return "–" if v is None else format(v, fmt)


def markdown(results: dict, designs: dict, seeds: int, command: str, wall_s: float) -> str:
    lines = ["# The user's own Opacus loop, audited in place (attach_audit)", "",
             "Each run is a user's script: the user's model, data, optimizer and loop, `PrivacyEngine.make_private` "
             "(Poisson sampling, C = 1, hooks, prv accountant, δ = 1e-5) and `attach_audit` on the optimizer. "
             "MLP and CNN on scikit-learn's digits (1,000 training, 797 test images); `lora`: a Hugging Face "
             "`transformers` Llama classifier built from a config with random weights (2 layers, hidden 64), "
             "`peft` LoRA rank 4 on q_proj/v_proj plus the head, on synthetic token ids (16 tokens, one marker "
             "token gives the class; 1,000 training, 1,000 test sequences). Nothing is downloaded.", "",
             "Designs: " + "; ".join(f"`{k}` n = {d.n}, B = {d.batch_size}, σ = {d.sigma:g}, {d.epochs} epochs, "
                                     f"{d.canaries} canaries" for k, d in designs.items()) + ".", "",
             f"## Correct DP-SGD, {seeds} seeds per family (a VIOLATION here would be a false alarm)", "",
             "| family | seed | verdict | bound | claimed ε | power | claim p | σ_eff | test acc |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["correct"]:
        lines.append(f"| {r['family']} | {r['seed']} | {r['verdict']} | {r['epsilon_lower_bound']:.2f} | "
                     f"{r['claimed_epsilon']:.2f} | {r['power']:.2f} | {_f(r['claim_p_value'], '.3g')} | "
                     f"{_f(r['effective_noise_multiplier'], '.3f')} | {r['test_accuracy']:.3f} |")
    flagged = [r for r in results["correct"] if r["verdict"] == "VIOLATION"]
    lines += ["", f"Flagged: {len(flagged)} of {len(results['correct'])} correct runs.", "",
              "## Bugs written into the user's code, one run each (seed 0)", "",
              "| family | bug | verdict | bound | claimed ε | claim p | claim rejected | σ_eff (claimed σ) |",
              "|---|---|---|---:|---:|---:|---|---:|"]
    for r in results["bugs"]:
        lines.append(f"| {r['family']} | {r['bug']} | {r['verdict']} | {r['epsilon_lower_bound']:.2f} | "
                     f"{r['claimed_epsilon']:.2f} | {_f(r['claim_p_value'], '.3g')} | {r['claim_rejected']} | "
                     f"{_f(r['effective_noise_multiplier'], '.3f')} ({r['claim'][0]:g}) |")
    caught = [r for r in results["bugs"] if r["verdict"] == "VIOLATION"]
    lines += ["", f"Flagged: {len(caught)} of {len(results['bugs'])} buggy runs. A claimed-curve test rejects at "
              "the per-test level of `dpaudit run` (95% confidence shared by Bonferroni over the deciding tests: "
              "0.05 / 6 = 0.0083 per test with the default statistics, as each report states); σ_eff is the "
              "effective noise read on the never-inserted canaries (never deciding).", "",
              "## Utility: test accuracy with and without the canaries (same loop, same seeds)", "",
              "| family | seeds | with canaries (sd) | without (sd) | difference | SE of difference | within 3 SE | "
              "largest per-seed difference |", "|---|---:|---:|---:|---:|---:|---|---:|"]
    for u in results["utility"]:
        lines.append(f"| {u['family']} | {u['seeds']} | {u['with_canaries']:.3f} ({_f(u['with_sd'], '.3f')}) | "
                     f"{u['without']:.3f} ({_f(u['without_sd'], '.3f')}) | {u['difference']:+.3f} | {u['se']:.3f} | "
                     f"{u['within_3se']} | {u['max_abs_paired_difference']:.3f} |")
    plain = {(r["family"], r["seed"]): r["train_s"] for r in results["plain"]}
    ratios = {}
    for r in results["correct"]:
        ratios.setdefault(r["family"], []).append(r["train_s"] / plain[(r["family"], r["seed"])])
    lines += ["", "The canary rows are zero on the model's parameters: they change neither the clipping of real "
              "records nor their sum; the audited run differs only in the noise generator's stream (the slot's "
              "noise is drawn after the model's), so the two arms are two draws of the same DP training. Without "
              "noise (σ = 0, seed 0) the largest difference between the weights trained with and without the "
              "audit is " + ", ".join(f"{v:g} ({f})" for f, v in results["noiseless_weight_difference"].items())
              + ".", "",
              "Training time, audited / plain (median over seeds; indicative only on shared cores): "
              + ", ".join(f"{f} {np.median(v):.2f}×" for f, v in ratios.items()) + ".", "",
              f"Reproduce: `{command}`. Total {wall_s:.0f} s on {platform.machine()} Python "
              f"{platform.python_version()}, 2 shared CPU cores, single-threaded torch."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.own_loop", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, smaller designs; print only (unless --out)")
    parser.add_argument("--seeds", type=int, default=None, help="correct runs per family (default 10; 2 with --quick)")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--out", type=Path, default=None, help="where to write own_loop.md/json "
                        "(default experiments/results for the full run)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only re-render own_loop.md beside an own_loop.json written before")
    args = parser.parse_args(argv)
    if args.render is not None:
        payload = json.loads(args.render.read_text())
        designs = {k: Design(**d) for k, d in payload["designs"].items()}
        text = markdown(payload, designs, payload["seeds"], payload["command"], payload["wall_s"])
        args.render.with_suffix(".md").write_text(text)
        print(text)
        return 0
    seeds = args.seeds or (2 if args.quick else 10)
    if seeds < 2:
        parser.error("--seeds: expected at least 2 (the utility comparison needs a spread)")
    designs = QUICK if args.quick else FULL
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    # a deprecation warning of transformers 5 that peft 0.21 triggers
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    t0 = time.perf_counter()
    results = run_all(designs, seeds, args.families, lambda s: print(s, file=sys.stderr, flush=True))
    wall_s = time.perf_counter() - t0
    command = "python -m experiments.own_loop" + (" --quick" if args.quick else "") + \
        (f" --seeds {args.seeds}" if args.seeds else "") + \
        (f" --families {' '.join(args.families)}" if list(args.families) != list(FAMILIES) else "")
    text = markdown(results, designs, seeds, command, wall_s)
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "own_loop.md").write_text(text)
        payload = {"command": command, "wall_s": round(wall_s, 1), "seeds": seeds,
                   "designs": {k: dataclasses.asdict(d) for k, d in designs.items()},
                   "machine": f"{platform.machine()} Python {platform.python_version()}", **results}
        (out / "own_loop.json").write_text(json.dumps(payload, indent=1) + "\n")
    sound = all(r["verdict"] in PASSING for r in results["correct"])
    caught = all(r["verdict"] == "VIOLATION" for r in results["bugs"])
    return 0 if sound and caught else 1


if __name__ == "__main__":
    sys.exit(main())
