"""``dpaudit export``: write observations in the LiRA reference layout (Carlini et al.
2022, tensorflow/privacy ``research/mi_lira_2021``), under the names its code writes.
"""

from __future__ import annotations

import click

from audit.cli._observations import OBSERVATIONS_HELP

from audit.errors import InputError


@click.command("export")
@click.option("--observations", "observations_path", required=True, help=OBSERVATIONS_HELP + ".")
@click.option("--out", required=True, help="New (or empty) directory for the layout.")
@click.option("--epoch", default=0, show_default=True, type=int,
              help="Epoch in the logits file name, logits/<epoch>.npy (%010d).")
def command(observations_path: str, out: str, epoch: int) -> int:
    """Write experiment-K_N/{keep.npy,hparams.json,logits/<epoch>.npy} and y_train.npy to OUT."""
    import numpy as np

    from audit.cli._observations import load
    from audit.observations import check_export_target, export_lira_layout

    try:
        root = check_export_target(out)
    except InputError as err:
        raise InputError(f"--out: {err}") from err
    if epoch < 0:
        raise InputError(f"--epoch: expected an integer >= 0, got {epoch}")
    observations = load(observations_path)
    if observations.logits is None:
        raise InputError(f"--observations: {observations_path} holds no logits (white-box stats only); "
                         "the LiRA layout stores logits")
    export_lira_layout(observations, root, epoch=epoch)
    n = observations.n_models
    click.echo(f"wrote {n} models (experiment-0_{n} .. experiment-{n - 1}_{n}), "
               f"{observations.n_records} records, logits of epoch {epoch}, labels in y_train.npy, to {root}")
    dropped = []
    if observations.stats is not None:
        dropped.append("white-box stats")
    if observations.population is not None and not np.array_equal(
            observations.population, ~observations.keep.any(axis=0)):
        dropped.append("the population mask (import takes the records OUT for every model)")
    if set(observations.metadata) - {"lira_experiments"}:
        dropped.append("metadata")
    if dropped:
        click.echo(f"not exported (the layout has no place for them): {', '.join(dropped)}")
    return 0
