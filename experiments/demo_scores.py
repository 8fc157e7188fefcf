"""Write the canary scores of one simulated DP-SGD run, for ``make demo`` and the README.

Simulates the idealised white-box one-run audit of :mod:`experiments.yardstick` (m Dirac
gradient canaries, half included, T steps of Poisson sampling and Gaussian noise at the
noise multiplier that Opacus' accountant gives for the claimed epsilon), scores each canary
by the likelihood ratio of its readings, and saves ``scores`` and ``members`` as an .npz
that ``dpaudit bound scores`` reads.

``python -m experiments.demo_scores OUT.npz [--epsilon 8] [--canaries 1000] [--seed 0] [--noise-factor F]``
(``--noise-factor 0.1`` plants a bug: a tenth of the noise, with the claim unchanged.)
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from audit.atomic import atomic_open
from experiments.yardstick import noise_for_epsilon, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--epsilon", type=float, default=8.0, help="claimed epsilon (sets the noise)")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--sample-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--noise-factor", type=float, default=1.0, help="plant a bug: scale the noise actually added, keep the claim"
    )
    args = parser.parse_args(argv)
    sigma = noise_for_epsilon(args.epsilon, delta=args.delta, sample_rate=args.sample_rate, steps=args.steps)
    run = simulate(
        n_canaries=args.canaries,
        steps=args.steps,
        sample_rate=args.sample_rate,
        noise_multiplier=sigma * args.noise_factor,
        rng=np.random.default_rng(args.seed),
    )
    with atomic_open(args.out, "wb") as handle:
        np.savez(handle, scores=run.llr, members=run.members)
    print(
        f"wrote {args.out}: {args.canaries} canaries, DP-SGD with noise multiplier {sigma * args.noise_factor:.3f} "
        f"(claimed epsilon {args.epsilon:g} at delta {args.delta:g}, q={args.sample_rate}, T={args.steps})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
