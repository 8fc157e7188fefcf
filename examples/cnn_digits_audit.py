"""A complete Opacus script, a CNN on scikit-learn's digits, audited in place by dpaudit.

    .venv/bin/python examples/cnn_digits_audit.py               # NO VIOLATION DETECTED, exit 0
    .venv/bin/python examples/cnn_digits_audit.py --plant-bug   # the user's optimizer forgets to clip:
                                                                # VIOLATION, exit 1 (on purpose)
    .venv/bin/python examples/cnn_digits_audit.py --quick       # a smaller run (the tests run this form)

The training is an ordinary DP-SGD script: a small CNN (conv 8 channels, GroupNorm, max-pool,
linear) on the 8x8 digit images (1,297 training, 500 test), Opacus' PrivacyEngine with
Poisson sampling (expected batch 64, sigma = 1.3, C = 1, 8 epochs), per-sample gradients in
Opacus' default hooks mode. The four lines marked "audit" are all that dpaudit adds: 4,000
gradient canaries on the optimizer, the verdict against the accountant's own claim, a report
(``--out``, default runs/cnn-digits-audit, replaced on every run) and an MLflow run (the local
./mlflow.db or $MLFLOW_TRACKING_URI; ``--no-mlflow`` skips it). About 25 seconds on one core
(the first MLflow store adds a few).

``--plant-bug`` swaps in the user's own DPOptimizer subclass whose ``clip_and_accumulate``
sums the per-sample gradients without clipping them: the audit must catch it.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch
from opacus import PrivacyEngine
from opacus.optimizers.optimizer import _mark_as_processed
from sklearn.datasets import load_digits
from torch import nn

from audit import attach_audit

warnings.filterwarnings("ignore", message="Secure RNG turned off")  # fine for a demo; use secure_mode in production
warnings.filterwarnings("ignore", message="Full backward hook is firing")


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)  # Opacus has no per-sample gradients for BatchNorm
        self.out = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x)))
        return self.out(nn.functional.max_pool2d(x, 2).flatten(1))


def forgets_to_clip(optimizer) -> None:
    """The planted bug: the user's DPOptimizer subclass sums per-sample gradients unclipped."""
    class ForgetsToClip(type(optimizer)):
        def clip_and_accumulate(self):
            for p in self.params:
                summed = self._get_flat_grad_sample(p).sum(dim=0)
                p.summed_grad = summed if p.summed_grad is None else p.summed_grad + summed
                _mark_as_processed(p.grad_sample)

    optimizer.__class__ = ForgetsToClip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plant-bug", action="store_true", help="the optimizer forgets to clip (expect exit 1)")
    parser.add_argument("--quick", action="store_true", help="3 epochs and 1,000 canaries (a few seconds)")
    parser.add_argument("--out", default="runs/cnn-digits-audit", help="the report's directory (replaced)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs, canaries = (3, 1000) if args.quick else (8, 4000)

    torch.manual_seed(args.seed)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # [1797, 1, 8, 8]
    y = torch.tensor(digits.target)
    train = torch.utils.data.TensorDataset(x[:1297], y[:1297])

    model = CNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = torch.utils.data.DataLoader(train, batch_size=64, generator=torch.Generator().manual_seed(args.seed))
    privacy_engine = PrivacyEngine(accountant="prv")
    model, optimizer, loader = privacy_engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.3, max_grad_norm=1.0,
        noise_generator=torch.Generator().manual_seed(args.seed + 1000))
    if args.plant_bug:
        forgets_to_clip(optimizer)
        print("PLANTED BUG: the optimizer sums per-sample gradients without clipping; expect VIOLATION (exit 1)")

    audit_run = attach_audit(optimizer, canaries=canaries, seed=args.seed)           # audit

    for epoch in range(epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        test_accuracy = float((model(x[1297:]).argmax(dim=1) == y[1297:]).float().mean())

    result = audit_run.finish(accountant=privacy_engine.accountant, delta=1e-5,     # audit
                              test_accuracy=test_accuracy)
    audit_run.write_report(args.out, overwrite=True)                                # audit
    logged = None if args.no_mlflow else audit_run.log_to_mlflow()                  # audit

    print(f"test accuracy {test_accuracy:.3f}; claimed epsilon {result.claimed_epsilon:.2f} at delta 1e-5 "
          f"(sigma {result.claim[0]:g}, q {result.claim[1]:.4f}, {result.claim[2]} steps), {canaries} canaries")
    print(f"{result.verdict}: {result.message}")
    print(f"epsilon lower bound {result.epsilon_lower_bound:.3f}, power {result.power:.2f}, claimed-curve p-value "
          f"{result.claim_p_value:.3g}, effective epsilon {result.effective_epsilon:.2f} "
          f"(sigma_eff {result.effective_noise_multiplier:.3f}, claimed sigma {result.claim[0]:g})")
    where = "" if logged is None else "; MLflow: " + (f"run {logged.run_id} at {logged.tracking_uri}" if logged.ok
                                                     else logged.warning)
    print(f"report: {args.out}/report.html{where}")
    if args.plant_bug:
        print("(exit 1 expected: the bug was planted on purpose)" if result.exit_code == 1 else
              "THE PLANTED BUG WAS NOT CAUGHT")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
