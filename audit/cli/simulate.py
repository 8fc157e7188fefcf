"""``dpaudit simulate OUT.npz``: the canary scores of one simulated white-box DP-SGD run.

Simulates the idealised one-run audit of :mod:`canaries.simulate` (m Dirac gradient
canaries, each included with probability 1/2, T steps of Poisson sampling at rate q and
Gaussian noise at the noise multiplier that Opacus' PRV accountant gives for the claimed
epsilon), scores each canary by the likelihood ratio of its readings, and writes
``scores`` and ``members`` as the .npz that ``dpaudit bound scores`` reads.
``--noise-factor 0.1`` plants a bug: a tenth of the noise is added, the claim unchanged.
"""

from __future__ import annotations

from pathlib import Path

import click

from audit.errors import InputError

MAX_READINGS = 250_000_000  # steps x canaries float64 readings: 2 GB


def _check(epsilon, delta, canaries, steps, sample_rate, seed, noise_factor) -> None:
    checks = (
        ("--epsilon", epsilon, 0 < epsilon < float("inf"), "a finite number > 0"),
        ("--delta", delta, 0 < delta <= 0.5, "a number in (0, 0.5]"),
        ("--canaries", canaries, 1 <= canaries <= 1_000_000, "an integer in 1..1000000"),
        ("--steps", steps, steps >= 1, "an integer >= 1"),
        ("--sample-rate", sample_rate, 0 < sample_rate <= 1, "a number in (0, 1]"),
        ("--seed", seed, seed >= 0, "an integer >= 0"),
        ("--noise-factor", noise_factor, 0 < noise_factor < float("inf"), "a finite number > 0"),
    )
    for option, value, ok, expected in checks:
        if not ok:
            raise InputError(f"{option} {value!r}: expected {expected}")
    if steps * canaries > MAX_READINGS:
        raise InputError(f"--steps {steps} x --canaries {canaries} readings: expected at most {MAX_READINGS:.1e} "
                         "(8 bytes each in memory)")


@click.command(name="simulate")
@click.argument("out", metavar="OUT.npz")
@click.option("--epsilon", type=float, default=8.0, show_default=True, help="Claimed epsilon (sets the noise).")
@click.option("--delta", type=float, default=1e-5, show_default=True, help="delta of the claim.")
@click.option("--canaries", type=int, default=1000, show_default=True, help="Number of canaries m.")
@click.option("--steps", type=int, default=1000, show_default=True, help="DP-SGD steps T.")
@click.option("--sample-rate", type=float, default=0.01, show_default=True, help="Poisson sampling rate q.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--noise-factor", type=float, default=1.0, show_default=True,
              help="Plant a bug: scale the noise actually added, keep the claim (e.g. 0.1).")
@click.option("--readings", "with_readings", is_flag=True,
              help="Also store the per-step readings (8 x steps x canaries bytes): `bound scores` then runs the "
                   "effective noise's noise test.")
def command(out: str, epsilon: float, delta: float, canaries: int, steps: int, sample_rate: float, seed: int,
            noise_factor: float, with_readings: bool) -> int:
    """Write the canary scores of one simulated white-box DP-SGD run to OUT.npz (its directory is created)."""
    import numpy as np

    from audit.atomic import atomic_open
    from audit.stats.accountant import check_accounting, noise_multiplier_for
    from canaries.simulate import simulate

    _check(epsilon, delta, canaries, steps, sample_rate, seed, noise_factor)
    path = Path(out)
    if path.is_dir():
        raise InputError(f"OUT {out!r} is a directory; expected the path of an .npz file")
    if path.suffix != ".npz":
        raise InputError(f"OUT {out!r}: expected a file name ending in .npz")
    check_accounting(noise_multiplier=1.0, sample_rate=sample_rate, steps=steps, delta=delta)
    try:
        sigma = noise_multiplier_for(target_epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps)
    except (ValueError, OverflowError, ArithmeticError) as err:
        raise InputError(f"--epsilon {epsilon:g} at delta {delta:g} over {steps} steps at sample rate {sample_rate:g}: "
                         f"Opacus cannot reach it ({err})") from None
    run = simulate(n_canaries=canaries, steps=steps, sample_rate=sample_rate, noise_multiplier=sigma * noise_factor,
                   rng=np.random.default_rng(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        extra = {"readings": run.readings, "max_grad_norm": np.float64(1.0)} if with_readings else {}
        np.savez(handle, scores=run.llr, members=run.members, **extra)
    added = "" if noise_factor == 1.0 else f", adding {noise_factor:g} x that noise (multiplier {sigma * noise_factor:.4g})"
    click.echo(f"wrote {out}: {canaries} canaries; claimed DP-SGD: noise multiplier {sigma:.4g}, q={sample_rate:g}, "
               f"T={steps} (epsilon {epsilon:g} at delta {delta:g}){added}")
    return 0
