"""Training stage: a model trainer from the config, then the black-box loop (one model at a
time, appended to the observations so a killed run resumes) or the white-box run (one
DP-SGD run with Dirac gradient canaries)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from audit.config import AuditConfig
from audit.errors import InputError
from audit.pipeline import rundir
from audit.pipeline.data import AuditData


def _sgd_fields(config: AuditConfig) -> dict:
    """The optimisation settings shared by plain training and DP-SGD."""
    t = config.trainer
    return {
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "lr": t.lr,
        "optimizer": t.optimizer,
        "momentum": t.momentum,
        "weight_decay": t.weight_decay,
    }


def _dp_config(config: AuditConfig):
    from trainers.opacus_dp import DPConfig

    dp = config.dp
    return DPConfig(
        **_sgd_fields(config),
        max_grad_norm=dp.max_grad_norm,
        noise_multiplier=dp.noise_multiplier,
        target_epsilon=dp.target_epsilon,
        delta=dp.delta,
        accountant=dp.accountant,
    )


def model_spec(config: AuditConfig):
    """What ``trainers.models.build_model`` builds: the built-in ``model.name``, or the
    user's factory (``trainers.models.ModelPlugin``) when ``model.plugin`` is set."""
    if config.model.plugin:
        from trainers.models import load_model_plugin

        return load_model_plugin(config.model.plugin, config.model.options)
    return config.model.name


def model_kwargs(config: AuditConfig) -> dict:
    m = config.model
    if m.plugin:  # the factory's keywords are model.options, bound in model_spec
        return {}
    if m.name == "mlp":
        return {"widths": tuple(m.widths), "dropout": m.dropout}
    return {}


def model_trainer(config: AuditConfig, *, transfer=None, queries=()):
    """A ``trainers.observe.ModelTrainer`` for the configured trainer kind.

    ``transfer``: records a distilled student is trained on (``defence.distillation``).
    ``queries``: the blocks of points (``float32[n_i, ...]``) each model will be asked
    about besides its training records; a command target must know them when it trains
    (``trainers.command``), the other kinds ignore them.
    """
    from trainers import observe
    from trainers.plain import PlainConfig

    t = config.trainer
    if t.kind == "plain":
        plain = PlainConfig(**_sgd_fields(config), label_smoothing=t.label_smoothing, patience=t.patience or None)
        if config.defence.distillation:
            return _distilling_trainer(config, plain, transfer)
        if not t.patience:
            return observe.plain_trainer(model_spec(config), config=plain, **model_kwargs(config))
        return _early_stopping_trainer(config, plain)
    if t.kind == "blackbox-plugin":
        from trainers.plugins import load_blackbox_plugin

        return observe.blackbox_trainer(load_blackbox_plugin(t.plugin, epsilon=config.dp.claimed_epsilon, delta=config.dp.delta))
    if t.kind == "command":
        from trainers.command import load_command_trainer

        # preflight resolved the claim: None is a non-private command (dp.claimed_epsilon = inf)
        epsilon = config.dp.claimed_epsilon if config.dp.claimed_epsilon is not None else float("inf")
        command = load_command_trainer(t.command, epsilon=epsilon, delta=config.dp.delta, timeout_s=t.timeout_s)
        return observe.blackbox_trainer(command.with_queries(*queries))
    optimizer_class = None
    if t.kind == "optimizer-plugin":
        from trainers.plugins import load_optimizer_plugin

        optimizer_class = load_optimizer_plugin(t.plugin)
    return observe.dp_trainer(
        model_spec(config),
        config=_dp_config(config),
        zoo=t.variant if t.kind == "zoo" else None,
        optimizer_class=optimizer_class,
        **model_kwargs(config),
    )


def _distilling_trainer(config: AuditConfig, plain, transfer):
    """The distillation defence (Hinton, Vinyals & Dean 2015, as a membership-inference
    defence): a teacher is trained on the model's records; the released model is a
    student fit to the teacher's soft labels (temperature ``defence.distill_temperature``)
    on ``transfer`` records (the base records, which every model trains on: the student
    never sees a canary, only the teacher's outputs elsewhere)."""
    import torch

    from trainers.models import build_model
    from trainers.observe import TrainedModel, plain_trainer
    from trainers.plain import predict_logits, train_distilled

    if transfer is None or len(transfer) == 0:
        raise InputError("defence.distillation needs transfer records: the training pool has none besides canaries")
    spec = model_spec(config)
    teacher_trainer = plain_trainer(spec, config=plain, **model_kwargs(config))

    def trainer(train, *, seed: int):
        teacher_seed, init_seed, student_seed = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64) >> 1
        teacher = teacher_trainer(train, seed=int(teacher_seed))
        student = build_model(spec, train.in_shape, train.n_classes,
                              generator=torch.Generator().manual_seed(int(init_seed)), **model_kwargs(config))
        train_distilled(student, transfer.x, teacher.predict_logits(transfer.x),
                        temperature=config.defence.distill_temperature, config=plain, seed=int(student_seed), train=train)
        return TrainedModel(lambda x: predict_logits(student, x), float("inf"), 0.0)

    return trainer


def _early_stopping_trainer(config: AuditConfig, plain):
    """Plain training that stops early on the loss of a random tenth of the records it is
    given. The split is part of the training procedure under audit: a canary given to it
    may serve for validation only, and its membership still means "given to training"."""
    import torch

    from trainers.models import build_model
    from trainers.observe import TrainedModel
    from trainers.plain import predict_logits, train_plain

    spec = model_spec(config)

    def trainer(train, *, seed: int):
        init_seed, split_seed, train_seed = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64) >> 1
        order = np.random.default_rng(int(split_seed)).permutation(len(train))
        n_val = max(1, len(train) // 10)
        fit, val = train.subset(order[n_val:]), train.subset(order[:n_val])
        net = build_model(spec, train.in_shape, train.n_classes,
                          generator=torch.Generator().manual_seed(int(init_seed)), **model_kwargs(config))
        train_plain(net, fit, config=plain, seed=int(train_seed), val=val)
        return TrainedModel(lambda x: predict_logits(net, x), float("inf"), 0.0)

    return trainer


def output_defence(config: AuditConfig):
    """The configured ``trainers.output_defences.OutputDefence``, or None."""
    d = config.defence
    if not d.active:
        return None
    from trainers.output_defences import OutputDefence

    return OutputDefence(
        temperature=d.temperature,
        top_k=d.top_k or None,
        decimals=None if d.decimals < 0 else d.decimals,
        label_only=d.label_only,
    )


def _concat(a, b):
    return dataclasses.replace(a, x=np.concatenate([a.x, b.x]), y=np.concatenate([a.y, b.y]))


def _open_run(config: AuditConfig, data: AuditData, run_dir: Path):
    """The resumable observation run (records observed: canaries then population)."""
    from audit.observations import ObservationRun

    return ObservationRun.resume_or_create(
        run_dir / "observations",
        labels=np.concatenate([data.canaries.y, data.population.y]),
        population=np.r_[np.zeros(len(data.canaries), bool), np.ones(len(data.population), bool)],
        metadata={"dataset": data.base.name, "trainer": config.trainer.kind, "seed": config.seed},
    )


@dataclasses.dataclass(frozen=True)
class ModelResult:
    """What one trained model contributes to the run.

    ``keep: bool[canaries + population]``, ``logits: float[canaries + population, queries, classes]``,
    ``utility``: the JSON-ready row saved in ``utility.json``.
    """

    index: int
    keep: np.ndarray
    logits: np.ndarray
    utility: dict


def units(config: AuditConfig, todo: list[int]) -> list[list[int]]:
    """The units of work for the models ``todo``: one model each, or for the fast trainer
    blocks of ``executor.block_models`` consecutive indices (0 = one block). Blocks are
    fixed index ranges, so every executor groups (and so computes) a model the same way."""
    if config.trainer.kind != "fast":
        return [[k] for k in todo]
    size = config.executor.block_models or config.audit.models
    blocks: dict[int, list[int]] = {}
    for k in todo:
        blocks.setdefault(k // size, []).append(k)
    return [blocks[b] for b in sorted(blocks)]


def train_unit(config: AuditConfig | dict, data: AuditData, keep: np.ndarray, indices: list[int]) -> list[ModelResult]:
    """Train the models ``indices`` (``keep: bool[models, canaries]``, all K rows) and
    return their observations. The unit of work an executor runs: plain data in (the
    config may come as its JSON dict), plain data out, no files touched."""
    import torch

    if isinstance(config, dict):
        config = AuditConfig.model_validate(config)
    # Floating-point sums in torch depend on its thread count: every executor computes a
    # unit on the same number of threads, so the observations are bit-identical.
    threads = torch.get_num_threads()
    torch.set_num_threads(config.executor.unit_threads)
    try:
        if config.trainer.kind == "fast":
            return _train_fast(config, data, keep, list(indices))
        return _train_models(config, data, keep, list(indices))
    finally:
        torch.set_num_threads(threads)


def _train_models(config: AuditConfig, data: AuditData, keep: np.ndarray, indices: list[int]) -> list[ModelResult]:
    from trainers.observe import observe_outputs, query_views

    observed = _concat(data.canaries, data.population)
    n_pop = len(data.population)
    defence = output_defence(config)
    # every point a model is asked about below, besides its training records
    queries = (*query_views(observed.x, augment=config.audit.augment), data.test.x)
    trainer = model_trainer(config, transfer=data.base, queries=queries)
    results = []
    for k in indices:
        train = _concat(data.base, data.canaries.subset(keep[k]))
        seed = int(np.random.SeedSequence([config.seed, 3, k]).generate_state(1)[0])
        trained = trainer(train, seed=seed)
        logits = observe_outputs(trained.predict_logits, observed.x, augment=config.audit.augment, defence=defence)
        utility = {
            "index": k,
            "n_train": len(train),
            "train_accuracy": _accuracy(trained, train),
            "test_accuracy": _accuracy(trained, data.test) if len(data.test) else None,
            "epsilon": trained.epsilon,
            "delta": trained.delta,
            **dict(trained.dpsgd or {}),
        }
        results.append(ModelResult(k, np.r_[keep[k], np.zeros(n_pop, bool)], logits, utility))
    return results


def _train_fast(config: AuditConfig, data: AuditData, keep: np.ndarray, todo: list[int]) -> list[ModelResult]:
    """The models ``todo`` as one block of the fast trainer. Model k draws everything from
    its own generator and computes on its own rows of each batch, so neither the block nor
    the ``executor.unit_workers`` threads stepping it in shares change a number
    (``trainers.fast.train``)."""
    import torch

    from trainers import fast

    t, dp, m = config.trainer, config.dp, len(data.canaries)
    workers = config.executor.unit_workers
    observed = _concat(data.canaries, data.population)
    n_pop = len(data.population)
    train_all = _concat(data.base, data.canaries)
    flat = lambda ds: torch.from_numpy(ds.x.reshape(len(ds), -1))  # noqa: E731
    x, y = flat(train_all), torch.from_numpy(train_all.y)
    keep_all = np.concatenate([np.ones((len(todo), len(data.base)), bool), keep[todo]], axis=1)
    widths = (x.shape[1], *(config.model.widths if config.model.name == "mlp" else ()), data.base.n_classes)
    expected_subset = len(data.base) + m / 2
    steps = fast.steps_for_epochs(t.epochs, t.batch_size, int(expected_subset))
    private = config.mode == "dp"
    sigma = 0.0
    if private:
        sigma = dp.noise_multiplier
        if sigma is None:
            from audit.stats.accountant import noise_multiplier_for

            sigma = noise_multiplier_for(target_epsilon=dp.target_epsilon, delta=dp.delta,
                                         sample_rate=t.batch_size / expected_subset, steps=steps, accountant=dp.accountant)
    spec = fast.CORRECT if private else fast.NON_PRIVATE
    if t.variant:
        spec = fast.fault(t.variant)
    cfg = fast.DPSGDConfig(lr=t.lr, max_grad_norm=dp.max_grad_norm, noise_multiplier=sigma, expected_batch_size=t.batch_size,
                           momentum=t.momentum, weight_decay=t.weight_decay, spec=spec)
    generators = [torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, 5, k]).generate_state(1)[0]))
                  for k in todo]
    # workers step shares of the block on this unit's CPUs; the models do not depend on them
    result = fast.train(x, y, torch.from_numpy(keep_all), fast.MLPShape(widths), cfg, steps=steps, generator=generators,
                        workers=workers)
    with torch.no_grad():
        observed_logits = result.model.logits(flat(observed), workers=workers).numpy()
    defence = output_defence(config)
    if defence is not None:  # as trainers.observe.observe_outputs stores defended outputs
        from trainers.observe import PROB_FLOOR

        observed_logits = np.stack([np.log(np.maximum(defence.apply(o), PROB_FLOOR)) for o in observed_logits])
    with torch.no_grad():
        train_pred = result.model.predict(x, workers=workers).numpy()
        test_pred = result.model.predict(flat(data.test), workers=workers).numpy() if len(data.test) else None
    results = []
    for row, k in enumerate(todo):
        n_k = int(keep_all[row].sum())
        # The claim is model 0's (the audited model; the others are reference models): one
        # PRV accounting, not K (each about 0.5 s and a few hundred MiB at 1,000 steps).
        # A reference model's row keeps its sigma, rate and steps, and no epsilon.
        if not private:
            eps = float("inf")
        else:
            eps = _fast_claim(config, sigma, t.batch_size / n_k, steps) if k == 0 else None
        utility = {
            "index": k,
            "n_train": n_k,
            "train_accuracy": float((train_pred[row][keep_all[row]] == train_all.y[keep_all[row]]).mean()),
            "test_accuracy": float((test_pred[row] == data.test.y).mean()) if test_pred is not None else None,
            "epsilon": eps,
            "delta": dp.delta if private else 0.0,
            "steps": steps,
            "noise_multiplier": sigma,
            "sample_rate": min(t.batch_size / n_k, 1.0),
        }
        results.append(ModelResult(k, np.r_[keep[k], np.zeros(n_pop, bool)], observed_logits[row][:, None, :], utility))
    return results


def train_blackbox(config: AuditConfig, data: AuditData, keep: np.ndarray, run_dir: Path, *,
                   progress: bool = True, executor=None):
    """Train the models the run is missing, as units on ``executor`` (default: the one
    ``config.executor`` names), appending each model to the observations as it arrives
    (so a killed run resumes with what is left, and a lost unit costs only itself).

    Works for every black-box trainer; the fast trainer's units are blocks of models.
    Returns the observation run and ``{model: utility}`` for every finished model.
    """
    from audit.pipeline.executors import make_executor

    run = _open_run(config, data, run_dir)
    utility = rundir.load_utility(run_dir)
    todo = run.missing_models(config.audit.models)
    if not todo:
        return run, utility
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="models", initial=config.audit.models - len(todo), total=config.audit.models)
    try:
        with executor if executor is not None else make_executor(config.executor) as ex:
            # The config travels as its JSON dict: plain data for a remote worker.
            shared = (config.model_dump(mode="json") if config.executor.kind == "ray" else config, data, keep)
            for results in ex.map_unordered(train_unit, shared, units(config, todo)):
                for r in results:
                    utility[r.index] = r.utility
                rundir.save_utility(run_dir, utility)  # before the append: a retrained model overwrites it
                for r in results:
                    run.append(keep=r.keep, logits=r.logits, index=r.index)
                if bar is not None:
                    bar.update(len(results))
    finally:
        if bar is not None:
            bar.close()
    return run, utility


def _fast_claim(config: AuditConfig, sigma: float, sample_rate: float, steps: int) -> float:
    """The epsilon the fast trainer claims for one model: Opacus' accountant at its own rate."""
    from audit.stats.accountant import claimed_epsilon

    if sigma <= 0:
        return float("inf")
    return claimed_epsilon(noise_multiplier=sigma, sample_rate=min(sample_rate, 1.0), steps=steps,
                           delta=config.dp.delta, accountant=config.dp.accountant).value


def _accuracy(trained, ds) -> float:
    return float((np.asarray(trained.predict_logits(ds.x)).argmax(axis=1) == ds.y).mean())


def train_whitebox(config: AuditConfig, data: AuditData, run_dir: Path):
    """One DP-SGD run with m Dirac gradient canaries (each included with probability 1/2).

    Returns (observations of the canaries, utility of the model, claimed epsilon).
    """
    import torch

    from audit.observations import from_named_statistics, save_observations
    from canaries.gradient import CanarySlots, GradientCanaries, with_canaries
    from trainers.models import build_model
    from trainers.opacus_dp import sample_rate_and_steps, train_dp

    path = run_dir / "observations.npz"
    utility_path = run_dir / "utility.json"
    if path.exists() and utility_path.exists():  # finished before a kill: nothing to redo
        from audit.observations import load_observations

        return load_observations(path), rundir.load_utility(run_dir)
    t, m = config.trainer, config.audit.canaries
    seeds = np.random.SeedSequence([config.seed, 4]).generate_state(4)
    members = np.random.default_rng(int(seeds[0])).random(m) < 0.5
    net = build_model(
        model_spec(config), data.base.in_shape, data.base.n_classes,
        generator=torch.Generator().manual_seed(int(seeds[1])), **model_kwargs(config),
    )
    k = config.audit.canary_tensors
    if config.model.plugin:  # the user's forward may run every child (nn.Sequential): keep the slots beside it
        from trainers.models import CanaryHost

        net = CanaryHost(net, CanarySlots(m, n_tensors=k))
    else:
        net.canary_slots = CanarySlots(m, n_tensors=k)
    q, _ = sample_rate_and_steps(len(data.base), t.batch_size)
    slots = net.canary_slots.slots
    canaries = (GradientCanaries.dirac(slots[0], sample_rate=q, members=members) if k == 1
                else GradientCanaries.split(list(slots), sample_rate=q, members=members))

    def attach(opt):
        return with_canaries(opt, canaries, generator=torch.Generator().manual_seed(int(seeds[2])))

    common = dict(config=_dp_config(config), seed=int(seeds[3]), prepare_optimizer=attach)
    if t.kind == "zoo":
        from trainers.zoo import train_faulty

        result = train_faulty(t.variant, net, data.base, test=data.test if len(data.test) else None, **common)
    else:
        optimizer_class = None
        if t.kind == "optimizer-plugin":
            from trainers.plugins import load_optimizer_plugin

            optimizer_class = load_optimizer_plugin(t.plugin)
        kwargs = {"optimizer_class": optimizer_class} if optimizer_class is not None else {}
        result = train_dp(net, data.base, test=data.test if len(data.test) else None, **common, **kwargs)
    obs = result.optimizer.canary_observations()
    stats = obs.named_statistics()
    observations = from_named_statistics(
        members[None, :],
        {k: np.asarray(v, dtype=np.float64)[None, :] for k, v in stats.items()},
        metadata={"dataset": data.base.name, "trainer": t.kind, "seed": config.seed, "claimed_epsilon": result.epsilon,
                  "reading_source": obs.reading_source, "canary_tensors": k},
    )
    utility = {
        0: {
            "index": 0,
            "n_train": len(data.base),
            "train_accuracy": result.train_accuracy,
            "test_accuracy": result.test_accuracy,
            "epsilon": result.epsilon,
            "delta": result.delta,
            "steps": result.steps,
            "sample_rate": result.sample_rate,
            "accounting_sample_rate": result.accounting_sample_rate,
            "noise_multiplier": result.noise_multiplier,
        }
    }
    rundir.save_readings(run_dir, obs.readings, obs.max_grad_norm)
    save_observations(observations, path)
    rundir.save_utility(run_dir, utility)
    return observations, utility
