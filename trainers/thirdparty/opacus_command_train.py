"""DP-SGD with Opacus as a stand-alone training command (dpaudit's command target).

This script imports nothing of dpaudit: it runs in its own virtual environment (for
instance one with an older Opacus release; ``experiments/third_party_command.py``), and
dpaudit runs it once per model as (README "Auditing a trainer in any framework")::

    python train.py TRAIN.npz QUERY.npz OUT.npy SEED --epsilon 1 --classes 100 [options]

``TRAIN.npz`` holds ``x`` (float32[records, ...]) and ``y`` (int64[records]), the model's
training set; ``QUERY.npz`` holds ``x`` (float32[queries, ...]), the points to predict (never
trained on); the script writes ``OUT.npy``, float64[queries, classes] probabilities.
``SEED`` (also ``$DPAUDIT_SEED``) seeds torch, so Poisson sampling, initialisation and
noise are fixed by it.

The training, as Opacus' documentation says to write it: a one-hidden-layer MLP (``--hidden
0``: logistic regression), SGD, ``PrivacyEngine(accountant=...)`` and
``make_private_with_epsilon(target_epsilon, target_delta, epochs, max_grad_norm)``, which
turns the data loader into a Poisson-sampling one (expected batch size ``--batch-size``)
and picks the noise multiplier whose accounted epsilon after ``epochs`` epochs is at most the
target. The claim is therefore ``(--epsilon, --delta)``, Opacus' own.

``--misconfig`` plants one mistake that Opacus lets a user make without an error:

- ``none``: the documented use (the correct version);
- ``stale-optimizer``: the loop keeps calling the optimizer it built before
  ``make_private_with_epsilon`` instead of the ``DPOptimizer`` returned: the model trains on
  plain averaged gradients, unclipped and without noise, while the accountant still states
  the target epsilon (its steps are never counted). Real epsilon: infinite;
- ``epochs``: the claim is computed for 1 epoch (``make_private_with_epsilon(epochs=1)``) but
  the loop runs ``--epochs`` epochs at that noise multiplier. Real epsilon: what the
  accountant gives for all the steps (``--account`` prints it), finite but far above the
  claim.

After training, the script prints one JSON line on stderr: the noise multiplier and sample
rate it trained with, the steps Opacus' accountant counted and the epsilon it reports.

``--account N`` trains nothing: it prints, as one JSON line, what Opacus' accountant gives
for a training set of N records under the options (noise multiplier, sample rate, steps, the
claimed epsilon and the epsilon of the steps actually taken), and the versions of Python,
torch, Opacus and NumPy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings

MISCONFIGS = ("none", "stale-optimizer", "epochs")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="TRAIN.npz QUERY.npz OUT.npy SEED")
    p.add_argument("--epsilon", type=float, required=True, help="target (claimed) epsilon")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--accountant", default="prv", choices=("prv", "rdp", "gdp"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="expected (Poisson) batch size")
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--hidden", type=int, default=128, help="hidden width; 0: logistic regression")
    p.add_argument("--classes", type=int, default=0, help="public number of classes (0: max(y) + 1)")
    p.add_argument("--misconfig", default="none", choices=MISCONFIGS)
    p.add_argument("--account", type=int, default=0, metavar="N",
                   help="print the accountant's numbers for N training records as JSON and exit")
    args = p.parse_args(argv)
    if not args.account and len(args.paths) != 4:
        p.error("expected TRAIN.npz QUERY.npz OUT.npy SEED (or --account N)")
    return args


def versions() -> dict[str, str]:
    import numpy
    import opacus
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "opacus": opacus.__version__,
            "numpy": numpy.__version__}


def claim_epochs(args: argparse.Namespace) -> int:
    """The epochs the claim is computed for (1 when ``--misconfig epochs``)."""
    return 1 if args.misconfig == "epochs" else args.epochs


def account(args: argparse.Namespace, n: int) -> dict:
    """Opacus' own numbers for ``n`` training records: the noise multiplier that
    ``make_private_with_epsilon`` picks, and epsilon of the claimed and of the actual steps."""
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.accountants import create_accountant

    batches = -(-n // args.batch_size)  # len(DataLoader(n records, batch_size))
    sample_rate = 1.0 / batches  # what make_private_with_epsilon uses: 1 / len(data_loader)
    sigma = get_noise_multiplier(target_epsilon=args.epsilon, target_delta=args.delta, sample_rate=sample_rate,
                                 epochs=claim_epochs(args), accountant=args.accountant)
    steps_per_epoch = batches  # the Poisson loader's length
    out = {"records": n, "sample_rate": sample_rate, "noise_multiplier": sigma,
           "claimed_epsilon": args.epsilon, "delta": args.delta, "accountant": args.accountant,
           "claim_steps": claim_epochs(args) * steps_per_epoch, "steps": args.epochs * steps_per_epoch,
           "misconfig": args.misconfig}
    for key, steps in (("claim_accounted_epsilon", out["claim_steps"]), ("actual_epsilon", out["steps"])):
        acc = create_accountant(args.accountant)
        acc.history = [(sigma, sample_rate, steps)]
        out[key] = float(acc.get_epsilon(delta=args.delta))
    if args.misconfig == "stale-optimizer":
        out["actual_epsilon"] = float("inf")  # no clipping, no noise
    out["versions"] = versions()
    return out


def train(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from opacus import PrivacyEngine
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    train_path, query_path, out_path, seed = args.paths
    seed = int(seed)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    with np.load(train_path) as data, np.load(query_path) as query:
        x, y, q = data["x"], data["y"], query["x"]
    x = torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32))
    q = torch.from_numpy(np.ascontiguousarray(q.reshape(len(q), -1), dtype=np.float32))
    y = torch.from_numpy(y.astype(np.int64))
    classes = args.classes or int(y.max()) + 1
    if int(y.max()) >= classes:
        raise SystemExit(f"error: a label {int(y.max())} >= --classes {classes}")
    width = x.shape[1]
    model = (nn.Linear(width, classes) if args.hidden == 0
             else nn.Sequential(nn.Linear(width, args.hidden), nn.Tanh(), nn.Linear(args.hidden, classes)))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size)
    engine = PrivacyEngine(accountant=args.accountant)
    with warnings.catch_warnings():  # Opacus warns about secure_mode being off
        warnings.simplefilter("ignore")
        model, dp_optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=args.epsilon,
            target_delta=args.delta, epochs=claim_epochs(args), max_grad_norm=args.max_grad_norm)
    step_with = optimizer if args.misconfig == "stale-optimizer" else dp_optimizer
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(args.epochs):
        for xb, yb in loader:
            dp_optimizer.zero_grad(set_to_none=True)  # also clears the per-sample gradients
            step_with.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            step_with.step()
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(q).double(), dim=1).numpy()
    np.save(out_path, probs)
    # What Opacus itself accounted, one JSON line on stderr (dpaudit discards it unless the
    # command fails): the noise multiplier and sample rate used, the steps its accountant
    # counted and the epsilon it reports for them.
    counted = sum(steps for _, _, steps in engine.accountant.history)
    print(json.dumps({"records": len(x), "noise_multiplier": dp_optimizer.noise_multiplier,
                      "sample_rate": 1.0 / len(loader), "accounted_steps": counted,
                      "accounted_epsilon": float(engine.get_epsilon(args.delta)) if counted else 0.0}),
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.account:
        with warnings.catch_warnings():  # the RDP analysis warns about its range of orders
            warnings.simplefilter("ignore")
            result = account(args, args.account)
        print(json.dumps(result))
        return 0
    train(args)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
