"""A LoRA fine-tune of a Hugging Face transformer with Opacus, audited in place by dpaudit.

    .venv/bin/python examples/lora_finetune_audit.py               # NO VIOLATION DETECTED, exit 0
    .venv/bin/python examples/lora_finetune_audit.py --plant-bug   # the user's add_noise adds half the noise:
                                                                   # VIOLATION, exit 1 (on purpose)
    .venv/bin/python examples/lora_finetune_audit.py --quick       # a smaller run (the tests run this form)

Nothing is downloaded: the model is a ``transformers`` Llama sequence classifier built from
a config with random weights (2 layers, hidden size 64, vocabulary 64), and the data are
synthetic token ids (sequences of 16 random tokens with one marker token, 1 or 2, at a
random position: the class is which marker). ``peft`` adds LoRA adapters (rank 4) to the
attention's q_proj and v_proj and keeps the classification head trainable; everything else
is frozen, so Opacus computes per-sample gradients for the adapters and the head only.
Opacus' PrivacyEngine: Poisson sampling (1,024 training sequences, expected batch 32, q = 1/32),
sigma = 1.0, C = 1, 8 epochs (256 steps), hooks mode. The four lines marked "audit" are all
that dpaudit adds: 4,000 gradient canaries on the optimizer (a canary slot that follows the
adapters' device and dtype), the verdict against the accountant's claim, a report (``--out``,
default runs/lora-finetune-audit, replaced on every run) and an MLflow run (./mlflow.db or
$MLFLOW_TRACKING_URI; ``--no-mlflow`` skips it). About 25 seconds on one core (the first MLflow
store adds a few).

``--plant-bug`` patches the user's ``add_noise`` to draw noise of std sigma C / 2 (a
sensitivity computed as C / 2): a subtle bug that the bound alone does not show at this
claim; the test of the claimed privacy curve rejects it, which needs the full run's 256
steps and 4,000 canaries (the printed message says which test decided).
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is built from a config: never reach the Hub

import torch
from opacus import PrivacyEngine
from opacus.optimizers.optimizer import _generate_noise, _mark_as_processed
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForSequenceClassification
from transformers.utils import logging as hf_logging

from audit import attach_audit

warnings.filterwarnings("ignore", message="Secure RNG turned off")  # fine for a demo; use secure_mode in production
warnings.filterwarnings("ignore", message="Full backward hook is firing")
# a deprecation warning of transformers 5 that peft 0.21 triggers
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
hf_logging.set_verbosity_error()

VOCAB, LENGTH = 64, 16


def synthetic_tokens(n: int, seed: int):
    """(ids int64[n, 16], labels int64[n]): random tokens 3..63 and one marker (1 or 2) giving the class."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, LENGTH), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    ids[torch.arange(n), torch.randint(0, LENGTH, (n,), generator=g)] = 1 + labels
    return ids, labels


class Classifier(nn.Module):
    """token ids -> logits: the Hugging Face model's forward takes keyword arguments."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).logits


def lora_model() -> nn.Module:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=LENGTH, num_labels=2,
                         pad_token_id=0)
    lora = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return Classifier(get_peft_model(LlamaForSequenceClassification(config), lora))


def halves_the_noise(optimizer) -> None:
    """The planted bug: the user's add_noise draws noise of std sigma C / 2."""
    def add_noise(self):
        for p in self.params:
            noise = _generate_noise(std=0.5 * self.noise_multiplier * self.max_grad_norm, reference=p.summed_grad,
                                    generator=self.generator)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.add_noise = types.MethodType(add_noise, optimizer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plant-bug", action="store_true", help="add_noise adds half the noise (expect exit 1)")
    parser.add_argument("--quick", action="store_true",
                        help="512 sequences, 4 epochs (64 steps), 1,000 canaries (a few seconds; too small to catch "
                        "--plant-bug)")
    parser.add_argument("--out", default="runs/lora-finetune-audit", help="the report's directory (replaced)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_train, epochs, canaries = (512, 4, 1000) if args.quick else (1024, 8, 4000)

    torch.manual_seed(args.seed)
    ids, labels = synthetic_tokens(n_train + 1000, seed=12345)  # the data stay the same across seeds
    train = torch.utils.data.TensorDataset(ids[:n_train], labels[:n_train])
    test_ids, test_labels = ids[n_train:], labels[n_train:]

    model = lora_model()
    trainable = [p for p in model.parameters() if p.requires_grad]  # the LoRA adapters and the head
    optimizer = torch.optim.SGD(trainable, lr=1.0)
    loader = torch.utils.data.DataLoader(train, batch_size=32, generator=torch.Generator().manual_seed(args.seed))
    privacy_engine = PrivacyEngine(accountant="prv")
    model, optimizer, loader = privacy_engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
        noise_generator=torch.Generator().manual_seed(args.seed + 1000))
    if args.plant_bug:
        halves_the_noise(optimizer)
        print("PLANTED BUG: add_noise draws noise of std sigma C / 2; expect VIOLATION (exit 1)")

    audit_run = attach_audit(optimizer, canaries=canaries, seed=args.seed)          # audit

    for epoch in range(epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        test_accuracy = float((model(test_ids).argmax(dim=1) == test_labels).float().mean())

    result = audit_run.finish(accountant=privacy_engine.accountant, delta=1e-5,    # audit
                              test_accuracy=test_accuracy)
    audit_run.write_report(args.out, overwrite=True)                               # audit
    logged = None if args.no_mlflow else audit_run.log_to_mlflow()                 # audit

    print(f"{sum(p.numel() for p in trainable):,} trainable parameters (LoRA adapters and head) of "
          f"{sum(p.numel() for p in model.parameters()):,}; test accuracy {test_accuracy:.3f}")
    print(f"claimed epsilon {result.claimed_epsilon:.2f} at delta 1e-5 (sigma {result.claim[0]:g}, "
          f"q {result.claim[1]:.4f}, {result.claim[2]} steps), {canaries} canaries")
    print(f"{result.verdict}: {result.message}")
    print(f"epsilon lower bound {result.epsilon_lower_bound:.3f}, power {result.power:.2f}, claimed-curve p-value "
          f"{result.claim_p_value:.3g}, effective epsilon {result.effective_epsilon:.2f} "
          f"(sigma_eff {result.effective_noise_multiplier:.3f}, claimed sigma {result.claim[0]:g})")
    where = "" if logged is None else "; MLflow: " + (f"run {logged.run_id} at {logged.tracking_uri}" if logged.ok
                                                     else logged.warning)
    print(f"report: {args.out}/report.html{where}")
    if args.plant_bug:
        print("(exit 1 expected: the bug was planted on purpose)" if result.exit_code == 1 else
              "THE PLANTED BUG WAS NOT CAUGHT" + (" (--quick is too small to catch it)" if args.quick else ""))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
