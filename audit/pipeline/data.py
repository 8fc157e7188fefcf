"""The records an audit trains on and observes.

Black-box audits: the training pool is split into *base* records (in every model's
training set) and m *canaries* (each model includes each canary by the inclusion design);
canaries are natural records, mislabeled records, ClipBKD-crafted or out-of-distribution
inputs (``canaries.input_space``). Observations cover the canaries and a population set
that no model trains on (references for RMIA and offline LiRA). A test set measures utility.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from audit.config import AuditConfig
from audit.errors import InputError


@dataclasses.dataclass(frozen=True, eq=False)
class AuditData:
    """``base``: always trained on; ``canaries``: audited; ``population``: never trained on."""

    base: "Dataset"  # noqa: F821 (trainers.data.Dataset, imported lazily)
    canaries: "Dataset"  # noqa: F821
    population: "Dataset"  # noqa: F821
    test: "Dataset"  # noqa: F821
    canary_kind: str


def _load(config: AuditConfig):
    from trainers.data import load_dataset, load_user_arrays, load_user_data, subsample

    d = config.data
    if d.path and not d.label:  # an NPZ of arrays x[records, ...] and y[records] (config.DataConfig)
        return subsample(load_user_arrays(d.path, name=d.name), d.n, config.seed)
    if d.path:  # data.n subsamples a user's file as it does a shipped dataset
        return subsample(load_user_data(d.path, features=d.features or None, label=d.label), d.n, config.seed)
    size = {} if d.n is None else {"n": d.n}
    return load_dataset(d.name, seed=config.seed, **size)


def build(config: AuditConfig) -> AuditData:
    """Load, split and draw canaries, all from ``config.seed``."""
    from canaries import input_space
    from trainers.data import Dataset, split_dataset

    ds = _load(config)
    d, a = config.data, config.audit
    pool_size = len(ds) - d.population - d.test
    if pool_size < 1:
        raise InputError(
            f"data: {len(ds)} records cannot hold population={d.population} and test={d.test} plus a training pool"
        )
    splits = split_dataset(ds, pool=pool_size, population=d.population, test=d.test, seed=config.seed)
    pool = splits.pool
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    kind = a.canary_kind
    if kind in ("clipbkd", "ood") and pool.x.dtype != np.float32:
        raise InputError(f"audit.canary_kind = {kind!r} crafts float inputs, but data x holds {pool.x.dtype} token ids; "
                         "expected canary_kind 'natural', 'mislabeled' or 'gradient'")
    if kind == "gradient":  # white-box: all of the pool is training data; canaries are gradients
        empty = pool.subset(np.zeros(0, dtype=np.int64))
        return AuditData(pool, empty, splits.population, splits.test, kind)
    if kind in ("natural", "mislabeled") and a.canaries >= len(pool):
        raise InputError(f"audit.canaries={a.canaries}: more than the {len(pool) - 1} records the training pool can spare")
    if kind == "natural":
        chosen = input_space.held_out(pool.x, pool.y, a.canaries, rng)
    elif kind == "mislabeled":
        chosen = input_space.mislabeled(pool.x, pool.y, a.canaries, rng, n_classes=pool.n_classes)
    elif kind == "clipbkd":
        chosen = input_space.clipbkd(pool.x, pool.y, a.canaries, rng, n_classes=pool.n_classes)
    else:
        chosen = input_space.out_of_distribution(pool.x, a.canaries, rng, n_classes=pool.n_classes)
    base = pool
    if chosen.source_index is not None:
        base = pool.subset(np.setdiff1d(np.arange(len(pool)), chosen.source_index))
    canaries = Dataset(
        x=np.asarray(chosen.x, dtype=pool.x.dtype),  # float32 features, or int64 token ids
        y=np.asarray(chosen.y, dtype=np.int64),
        n_classes=pool.n_classes,
        name=f"{pool.name}:{kind}-canaries",
        feature_names=pool.feature_names,
    )
    return AuditData(base, canaries, splits.population, splits.test, kind)


def inclusion(config: AuditConfig, n_canaries: int) -> np.ndarray:
    """``keep: bool[models, canaries]``: every model includes every canary independently
    with probability 1/2 (the one-run design, in each model).

    Independence across models matters twice. The guaranteed bound on model 0 needs its
    inclusion bits independent of everything its attack sees, the shadows' keep masks
    included. And in leave-one-out figures an exactly balanced design (each canary IN in
    exactly half of the models) leaks the target's membership through its shadows' IN
    counts: with few models that bias is large (a record whose only IN copy is the
    target leaves sigma_in = 0). Canaries that a target's shadows never include, or
    always include, are left out for that target (``analysis.auditable``)."""
    from canaries import designs

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2]))
    return designs.one_run(config.audit.models, n_canaries, rng)
