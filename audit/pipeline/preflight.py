"""Everything that can be checked before any work starts (no run directory, no training).

``check(config)`` loads the plugins (resolving a black-box plugin's own claim; a
``model.plugin`` factory is built on the data's shape, run on two records and, for DP-SGD,
given one per-sample gradient step) or checks a command target (its executable, its
stated claim), loads and splits the data, checks that the observations fit in this machine's memory and that the
accountant can account for the configured DP-SGD, and returns what the run needs. Any
problem raises ``InputError`` naming the value, so a bad input exits 2 and leaves nothing
behind.

The claim of a black-box plugin: the config's ``dp.claimed_epsilon`` / ``dp.delta`` where
given, else the module's ``CLAIMED_EPSILON`` / ``CLAIMED_DELTA``; where both are given they
must agree (a config must not silently audit a weaker claim than the plugin states). A
claim of ``inf`` is a non-private trainer (a non-DP audit). A plugin claiming delta = 0 is
audited at the config's delta: (epsilon, 0)-DP implies (epsilon, delta)-DP, so that test
is sound.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from audit.config import AuditConfig
from audit.errors import InputError
from audit.pipeline.data import AuditData

# The observations (float64 once loaded, copied by attacks) may use at most this share of
# the machine's physical memory.
MEMORY_SHARE = 0.5


@dataclasses.dataclass(frozen=True, eq=False)
class Checked:
    """A config whose inputs were all checked: ``config`` with the plugin's claim resolved,
    the loaded ``data``, and ``plugin`` provenance (``trainers.plugins.plugin_source``, or
    ``trainers.command.command_source`` for a command) or None."""

    config: AuditConfig
    data: AuditData
    plugin: dict[str, Any] | None


def _same(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)


def resolve_blackbox_claim(config: AuditConfig) -> AuditConfig:
    """``config`` with ``dp.claimed_epsilon`` / ``dp.delta`` as the black-box plugin claims
    (see the module docstring); InputError for a missing, invalid or contradicting claim."""
    from trainers.plugins import declared_claim, load_blackbox_plugin

    path, dp = config.trainer.plugin, config.dp
    declared_eps, declared_delta = declared_claim(path)
    delta_given = "delta" in dp.model_fields_set
    # Validates the function's signature and the claim (raises when there is none).
    trainer = load_blackbox_plugin(path, epsilon=dp.claimed_epsilon,
                                   delta=dp.delta if delta_given or declared_delta is None else None)
    if dp.claimed_epsilon is not None and declared_eps is not None and not _same(dp.claimed_epsilon, declared_eps):
        raise InputError(f"dp.claimed_epsilon = {dp.claimed_epsilon!r} contradicts the plugin's CLAIMED_EPSILON = "
                         f"{declared_eps!r} ({path}); remove one or make them agree")
    if delta_given and declared_delta is not None and not _same(dp.delta, declared_delta):
        raise InputError(f"dp.delta = {dp.delta!r} contradicts the plugin's CLAIMED_DELTA = {declared_delta!r} "
                         f"({path}); remove one or make them agree")
    epsilon = None if math.isinf(trainer.epsilon) else trainer.epsilon
    delta = trainer.delta if trainer.delta > 0 else dp.delta
    return config.model_copy(update={"dp": dp.model_copy(update={"claimed_epsilon": epsilon, "delta": delta})})


def resolve_command(config: AuditConfig) -> AuditConfig:
    """``config`` with its ``trainer.command`` checked (``trainers.command.load_command_trainer``:
    placeholders, executable on PATH), every argument that names a file made absolute (the
    command runs in its own temporary directory, and a Ray worker elsewhere), and its claim
    resolved: a command has no module to state one, so ``dp.claimed_epsilon`` is required
    (``inf``: a non-private command, audited as non-DP). InputError otherwise."""
    from trainers.command import absolute_command, load_command_trainer

    t, dp = config.trainer, config.dp
    if dp.claimed_epsilon is None:
        raise InputError("trainer.kind = 'command' states no claim; set dp.claimed_epsilon (and dp.delta, default "
                         "1e-5) to the guarantee the trainer claims, or dp.claimed_epsilon = inf for a trainer without DP")
    argv = absolute_command(t.command)
    load_command_trainer(argv, epsilon=dp.claimed_epsilon, delta=dp.delta, timeout_s=t.timeout_s)
    epsilon = None if math.isinf(dp.claimed_epsilon) else dp.claimed_epsilon
    return config.model_copy(update={"trainer": t.model_copy(update={"command": argv}),
                                     "dp": dp.model_copy(update={"claimed_epsilon": epsilon})})


DP_KINDS = ("dp", "zoo", "optimizer-plugin")  # trained with Opacus' per-sample gradients


def check_model_kind(config: AuditConfig) -> None:
    """Refuse a ``model.plugin`` the trainer would not use: black-box plugins and commands
    bring their own model, and the fast trainer trains its own vectorised MLPs."""
    t = config.trainer
    if not config.model.plugin:
        return
    if t.kind in ("blackbox-plugin", "command"):
        raise InputError(f"model.plugin = {config.model.plugin!r} is not used by trainer.kind = {t.kind!r}, which "
                         "brings its own model; remove model.plugin")
    if t.kind == "fast":
        raise InputError(f"model.plugin = {config.model.plugin!r} needs trainer.kind 'plain', 'dp', 'zoo' or "
                         "'optimizer-plugin'; 'fast' trains its own vectorised MLPs")


def _what(config: AuditConfig) -> str:
    return f"model.plugin = {config.model.plugin!r}" if config.model.plugin else f"model.name = {config.model.name!r}"


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _build(config: AuditConfig, data: AuditData):
    """The configured model built on the data's shape (seed 0, discarded), or InputError."""
    import torch

    from audit.pipeline.training import model_kwargs, model_spec
    from trainers.models import build_model

    spec = model_spec(config)  # InputError for a plugin that cannot be loaded
    shape, n_classes = data.base.in_shape, data.base.n_classes
    try:
        return build_model(spec, shape, n_classes, generator=torch.Generator().manual_seed(0), **model_kwargs(config))
    except InputError as err:
        if config.model.plugin:
            raise
        raise InputError(f"{_what(config)} does not fit the data: {err}") from None
    except Exception as err:  # the user's factory raised: it does not take this data's shape
        raise InputError(f"{_what(config)} raised {_first_line(err)} when called as build(in_shape={shape}, "
                         f"n_classes={n_classes}{', **model.options' if config.model.options else ''})") from None


def _check_forward(config: AuditConfig, model, x):
    """One forward pass on two records: logits ``[2, n_classes]`` or InputError."""
    import torch

    try:
        with torch.no_grad():
            out = model.eval()(torch.as_tensor(x))
    except Exception as err:
        raise InputError(f"{_what(config)} fails on a batch of x {tuple(x.shape)} {x.dtype}: {_first_line(err)}") from None
    if not isinstance(out, torch.Tensor):
        raise InputError(f"{_what(config)} returns {type(out).__name__} for x {tuple(x.shape)}; expected a tensor of logits")
    return out


def _check_opacus(config: AuditConfig, data: AuditData) -> None:
    """Refuse a model Opacus cannot train with per-sample gradients: ``ModuleValidator``'s
    verdict (BatchNorm, ...) and one per-sample gradient step on two records, in the
    grad-sample mode training uses."""
    import warnings

    import torch
    import torch.nn.functional as F
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    from audit.pipeline.training import _dp_config

    model = _build(config, data)
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise InputError(f"{_what(config)} is not Opacus-compatible: {_first_line(errors[0])} "
                         f"({len(errors)} problem{'s' if len(errors) > 1 else ''}; opacus.validators.ModuleValidator.fix "
                         "replaces e.g. BatchNorm with GroupNorm)")
    x, y = torch.as_tensor(data.base.x[:2]), torch.as_tensor(data.base.y[:2])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean",
                                   force_functorch=_dp_config(config).grad_sample_mode == "functorch")
            model.train()
            F.cross_entropy(gsm(x), y).backward()
            missing = [name for name, p in model.named_parameters() if p.requires_grad and getattr(p, "grad_sample", None) is None]
    except Exception as err:
        raise InputError(f"{_what(config)}: Opacus cannot compute its per-sample gradients ({_first_line(err)})") from None
    if missing:
        raise InputError(f"{_what(config)}: Opacus computes no per-sample gradient for {', '.join(missing[:3])}"
                         f"{' ...' if len(missing) > 3 else ''}; expected every trainable parameter to be used in forward")


def check_model(config: AuditConfig, data: AuditData) -> int:
    """Build the configured model on the data's shape (cheap, discarded), run it on two
    records (logits ``[2, n_classes]``), for DP-SGD trainers take one per-sample gradient
    step of a model plugin, and build the query views of one record, so a model or
    augmentation that does not fit the data is refused before any work. Returns the
    number of query views per record."""
    import numpy as np

    from trainers.observe import query_views

    check_model_kind(config)
    if config.trainer.kind not in ("blackbox-plugin", "command"):  # these bring their own model
        x = data.base.x[:2]
        if x.dtype != np.float32 and not config.model.plugin:
            raise InputError(f"{_what(config)} takes float features, but data x holds {x.dtype} (token ids); "
                             "store x as floats, or bring a model that embeds them (model.plugin)")
        if x.dtype != np.float32 and config.defence.distillation:
            raise InputError(f"defence.distillation trains its student on float soft-label inputs; data x holds "
                             f"{x.dtype} token ids: expected float features, or defence.distillation = false")
        model = _build(config, data)
        out = _check_forward(config, model, x)
        n_classes = data.base.n_classes
        if tuple(out.shape) != (len(x), n_classes) or not out.is_floating_point():
            raise InputError(f"{_what(config)} returns {out.dtype} {tuple(out.shape)} for x {tuple(x.shape)}; expected "
                             f"float logits [{len(x)}, {n_classes}] (one row per record, one column per class)")
        if config.model.plugin and config.trainer.kind in DP_KINDS:
            _check_opacus(config, data)
    try:
        return len(query_views(data.base.x[:1], augment=config.audit.augment))
    except InputError as err:
        raise InputError(f"audit.augment = {config.audit.augment!r} does not fit the data: {err}") from None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: AuditConfig, data: AuditData, queries: int = 1) -> None:
    """Refuse a black-box audit whose observations (float64 models x records x queries x
    classes, as loaded for the attacks) would not fit in half of this machine's memory."""
    if config.audit.canary_kind == "gradient":
        return
    records = len(data.canaries) + len(data.population)
    size = config.audit.models * records * queries * data.base.n_classes * 8
    memory = _physical_memory()
    if memory and size > MEMORY_SHARE * memory:
        raise InputError(
            f"audit.models = {config.audit.models} with {records} observed records needs about "
            f"{size / 2**30:.1f} GiB of observations; this machine has {memory / 2**30:.1f} GiB "
            "(lower audit.models, audit.canaries or data.population)"
        )


def _accounting(config: AuditConfig, data: AuditData) -> tuple[float, int] | None:
    """(sample rate, steps) the configured DP-SGD runs with, or None for non-private training."""
    t = config.trainer
    if config.mode != "dp" or t.kind in ("blackbox-plugin", "command"):
        return None
    if t.kind == "fast":
        from trainers.fast import steps_for_epochs

        subset = len(data.base) + config.audit.canaries / 2
        return min(t.batch_size / subset, 1.0), steps_for_epochs(t.epochs, t.batch_size, int(subset))
    from trainers.opacus_dp import sample_rate_and_steps

    n = len(data.base) + (0 if config.audit.canary_kind == "gradient" else len(data.canaries) // 2)
    q, per_epoch = sample_rate_and_steps(max(n, 1), t.batch_size)
    return q, per_epoch * t.epochs


def check_accounting(config: AuditConfig, data: AuditData) -> None:
    """Refuse DP-SGD settings Opacus' accountant cannot account for (it would hang or run
    out of memory), naming the config field."""
    rate_steps = _accounting(config, data)
    if rate_steps is None:
        return
    from audit.stats.accountant import check_accounting as check

    q, steps = rate_steps
    dp = config.dp
    sigma = dp.noise_multiplier if dp.noise_multiplier is not None else 1.0  # target_epsilon: sigma is searched
    try:
        check(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=dp.delta, accountant=dp.accountant)
    except InputError as err:
        raise InputError(f"dp / trainer.epochs: {config.trainer.epochs} epochs at sample rate {q:.3g} "
                         f"({steps} steps) with dp.accountant = {dp.accountant!r}: {err}") from None
    if dp.target_epsilon is not None:
        _check_target(config, q, steps)


def _check_target(config: AuditConfig, q: float, steps: int) -> None:
    """Opacus' search for the noise multiplier of ``dp.target_epsilon`` (as ``make_private_
    with_epsilon`` runs it), so a budget it cannot reach is refused before training."""
    from audit.stats.accountant import noise_multiplier_for

    dp = config.dp
    try:
        noise_multiplier_for(target_epsilon=dp.target_epsilon, delta=dp.delta, sample_rate=q, steps=steps,
                             accountant=dp.accountant)
    except (ValueError, OverflowError, ArithmeticError) as err:
        raise InputError(f"dp.target_epsilon = {dp.target_epsilon!r} at delta {dp.delta:g} over {steps} steps at "
                         f"sample rate {q:.3g}: Opacus cannot reach it ({err})") from None


def check(config: AuditConfig) -> Checked:
    """Check every input of ``config`` without writing anything; see the module docstring."""
    from audit.pipeline import data as data_stage

    plugin = None
    t = config.trainer
    check_model_kind(config)
    if t.kind in ("blackbox-plugin", "optimizer-plugin"):
        from trainers.plugins import load_optimizer_plugin, plugin_source

        if t.kind == "blackbox-plugin":
            config = resolve_blackbox_claim(config)
        else:
            load_optimizer_plugin(t.plugin)
        plugin = plugin_source(t.plugin)
    elif t.kind == "command":
        from trainers.command import command_source

        config = resolve_command(config)
        plugin = command_source(config.trainer.command)
    if config.model.plugin:
        from trainers.models import load_model_plugin
        from trainers.plugins import plugin_source

        load_model_plugin(config.model.plugin, config.model.options)
        model_source = plugin_source(config.model.plugin)
        # the run directory compares the top-level path and hash on resume: the model's, unless
        # a trainer plugin is audited too (then it is recorded under "model")
        plugin = model_source if plugin is None else {**plugin, "model": model_source}
    audit_data = data_stage.build(config)
    check_memory(config, audit_data, check_model(config, audit_data))
    check_accounting(config, audit_data)
    return Checked(config, audit_data, plugin)
