"""``dpaudit attack``: score one target model's records with one attack.

Writes ``float64[records]`` (higher = more likely a member) to ``--out`` as ``.npy``,
atomically. Shadows are all models except ``--target`` (0-based). On a black-box
``dpaudit run`` directory the records are scored as its analysis scored them
(:func:`audit.pipeline.analysis.leave_one_out`); those it did not score are NaN.
"""

from __future__ import annotations

import json

import click

from audit.cli._observations import OBSERVATIONS_HELP
from audit.errors import InputError

# Kept literal so that `dpaudit --help` does not import scipy; a test checks it against
# audit.attacks.available_attacks().
METHODS_HELP = (
    "loss, confidence, entropy, modified-entropy, calibrated, lira-online, lira-online-fixed, "
    "lira-offline, lira-offline-fixed, rmia, shokri, label-only, gradient-norm, canary-statistic"
)


def parse_params(items: tuple[str, ...]) -> dict:
    """``("a=0.3", "classifier=\\"mlp\\"")`` -> ``{"a": 0.3, "classifier": "mlp"}``.

    Values are JSON; a value that is not valid JSON is taken as a string.
    """
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--param: expected KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@click.command("attack")
@click.option("--method", required=True, help=f"Attack name: {METHODS_HELP}.")
@click.option("--observations", "observations_path", required=True,
              help=f"{OBSERVATIONS_HELP}. On a black-box dpaudit run directory the records are scored as "
                   "its analysis scored them; those it did not score against TARGET are NaN.")
@click.option("--target", required=True, type=int, help="0-based index of the target model.")
@click.option("--out", required=True, help="Output .npy: one float64 score per record.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Attack parameter, e.g. --param gamma=2 (repeatable).")
def command(method: str, observations_path: str, target: int, out: str, params: tuple[str, ...]) -> int:
    """Score the records of model TARGET with attack METHOD; write them to OUT."""
    import numpy as np

    from audit.atomic import atomic_open
    from audit.attacks import get_attack
    from audit.cli._observations import layout_names, load_source, warnings_on_stderr
    from audit.cli._paths import output_file

    parsed = parse_params(params)
    get_attack(method, **parsed)  # unknown method or parameter: fail before loading
    out_path = output_file("--out", out, ".npy")
    source = load_source(observations_path)
    observations = source.observations
    with warnings_on_stderr():
        scores = source.scores(method, target, parsed)
    with atomic_open(out_path, "wb") as handle:
        np.save(handle, scores)
    n_nan = int(np.isnan(scores).sum())
    why = ("records its analysis did not score against this target: the population references and the "
           "canaries its shadows all include or all exclude") if source.keep is not None else \
        "population records the method cannot score"
    note = f" ({n_nan} NaN: {why})" if n_nan else ""
    click.echo(f"{method}: wrote {scores.size} scores for target {target} of {observations.n_models} "
               f"models to {out_path}{note}")
    if source.keep is not None:
        click.echo(source.protocol())
    names = layout_names(observations)
    if names is not None:
        click.echo(f"target {target} = {names[target]} (LiRA layout {observations_path})")
    return 0
