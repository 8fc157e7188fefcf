"""Audit your own Opacus training loop: a complete small DP-SGD script with four added lines.

    .venv/bin/python examples/own_opacus_loop.py          # NO VIOLATION DETECTED, exit 0
    .venv/bin/python examples/own_opacus_loop.py --bug    # the loop forgets to clip: VIOLATION, exit 1

An MLP on scikit-learn's handwritten digits (1,297 training and 500 test images), Opacus'
PrivacyEngine with Poisson sampling (sigma = 1.3, C = 1, expected batch 64, 10 epochs:
epsilon 2.87 at delta 1e-5), and a BatchMemoryManager that splits each logical batch
into physical batches of at most 16. The lines marked "audit" are all that dpaudit adds:
4,000 gradient canaries on the optimizer, the verdict against the accountant's claim, a
report in runs/own-loop (replaced on every run) and an MLflow run (the local ./mlflow.db,
or $MLFLOW_TRACKING_URI). About 20 seconds on one core, the first MLflow store included.
"""

from __future__ import annotations

import sys
import warnings

import torch
from opacus import PrivacyEngine
from opacus.optimizers.optimizer import _mark_as_processed
from opacus.utils.batch_memory_manager import BatchMemoryManager
from sklearn.datasets import load_digits
from torch import nn

from audit import attach_audit

warnings.filterwarnings("ignore", message="Secure RNG turned off")  # fine for a demo; use secure_mode in production
warnings.filterwarnings("ignore", message="Full backward hook is firing")


def forgets_to_clip(optimizer) -> None:
    """A planted bug (``--bug``): per-sample gradients are summed without clipping."""
    def clip_and_accumulate(self):
        for p in self.params:
            summed = self._get_flat_grad_sample(p).sum(dim=0)
            p.summed_grad = summed if p.summed_grad is None else p.summed_grad + summed
            _mark_as_processed(p.grad_sample)

    optimizer.clip_and_accumulate = clip_and_accumulate.__get__(optimizer)


def main() -> int:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    train = torch.utils.data.TensorDataset(x[:1297], y[:1297])

    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = torch.utils.data.DataLoader(train, batch_size=64)
    privacy_engine = PrivacyEngine(accountant="prv")
    model, optimizer, loader = privacy_engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.3, max_grad_norm=1.0)
    if "--bug" in sys.argv[1:]:
        forgets_to_clip(optimizer)

    audit_run = attach_audit(optimizer, canaries=4000, seed=0)                        # audit

    for epoch in range(10):
        model.train()
        with BatchMemoryManager(data_loader=loader, max_physical_batch_size=16, optimizer=optimizer) as batches:
            for xb, yb in batches:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
    optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        test_accuracy = float((model(x[1297:]).argmax(dim=1) == y[1297:]).float().mean())

    result = audit_run.finish(accountant=privacy_engine.accountant, delta=1e-5,      # audit
                              test_accuracy=test_accuracy)
    audit_run.write_report("runs/own-loop", overwrite=True)                          # audit
    logged = audit_run.log_to_mlflow()                                               # audit

    print(f"test accuracy {test_accuracy:.3f}; claimed epsilon {result.claimed_epsilon:.2f} at delta 1e-5")
    print(f"{result.verdict}: {result.message}")
    print(f"epsilon lower bound {result.epsilon_lower_bound:.3f}, power {result.power:.2f}, claimed-curve p-value "
          f"{result.claim_p_value:.3g}, effective epsilon {result.effective_epsilon:.2f} "
          f"(sigma_eff {result.effective_noise_multiplier:.3f}, claimed sigma {result.claim[0]:g})")
    print("report: runs/own-loop/report.html; MLflow: " + (f"run {logged.run_id} at {logged.tracking_uri}"
                                                           if logged.ok else logged.warning))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
