"""The audit config: one TOML file, validated strictly (pydantic, unknown keys refused).

Every field is documented in README.md ("Config reference"). ``load_config(path,
overrides)`` reads the file, applies ``--set section.key=value`` overrides (the value is
read as a TOML literal, else as a string) and validates; any problem raises
``InputError`` naming the field and what is allowed.
"""

from __future__ import annotations

import math
import os
import re
import string
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from audit.errors import InputError

DATASETS = ("fair", "randhie", "purchase", "digits")
# Sizes beyond these are refused as input errors rather than met with a MemoryError later
# (audit.pipeline.preflight also checks the observations fit in this machine's memory).
MAX_MODELS = 10_000
MAX_CANARIES = 1_000_000
MAX_WIDTH = 65_536
MAX_SEED = 2**63 - 1
MAX_EPOCHS = 100_000
# The two forms of trainer.plugin (trainers.plugins loads them): "package.module:Name", "file.py:Name".
_PLUGIN_ATTR = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
PLUGIN_MODULE_PATH = re.compile(rf"^{_PLUGIN_ATTR}:{_PLUGIN_ATTR}$")
PLUGIN_FILE_PATH = re.compile(rf"^[^:]+\.py:{_PLUGIN_ATTR}$")
# The placeholders of trainer.command (trainers.command fills them in): the three files
# are required, the seed is optional (the command also gets it as $DPAUDIT_SEED).
COMMAND_PLACEHOLDERS = ("train", "query", "out", "seed")
COMMAND_REQUIRED = ("train", "query", "out")
DEFAULT_COMMAND_TIMEOUT_S = 600.0


def command_placeholders(argv: Sequence[str]) -> set[str]:
    """The placeholder names used in ``argv`` (``{train}``, ``{query}``, ``{out}``,
    ``{seed}``, anywhere inside an argument; ``{{`` and ``}}`` are literal braces, as in
    ``str.format``). ValueError naming the argument for an unknown or malformed one."""
    used: set[str] = set()
    for i, arg in enumerate(argv):
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(arg) if name is not None]
        except ValueError as err:
            raise ValueError(f"trainer.command[{i}] = {arg!r}: {err} (write {{{{ and }}}} for literal braces)") from None
        for name, spec, conv in fields:
            if name not in COMMAND_PLACEHOLDERS or spec or conv:
                shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(f"trainer.command[{i}] = {arg!r}: unknown placeholder {shown}; expected "
                                 f"{', '.join('{' + p + '}' for p in COMMAND_PLACEHOLDERS)}")
            used.add(name)
    return used


def check_command(argv: Sequence[str]) -> None:
    """What can be told of a ``trainer.command`` from the argument list alone (the
    executable is looked up later, by ``trainers.command.find_executable``): not empty,
    no NUL character, no placeholder in the executable, every placeholder known and
    ``{train}``, ``{query}``, ``{out}`` each present. ValueError naming the argument."""
    if not argv or not argv[0]:
        raise ValueError("kind = 'command' needs command = [executable, args...] with the placeholders "
                         "{train}, {query} and {out}, e.g. ['python3', 'train.py', '{train}', '{query}', '{out}', '{seed}']")
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise ValueError(f"trainer.command[{i}] holds a NUL character")
    if "{" in argv[0] or "}" in argv[0]:
        raise ValueError(f"trainer.command[0] = {argv[0]!r}: the executable cannot hold a placeholder")
    missing = [name for name in COMMAND_REQUIRED if name not in command_placeholders(argv)]
    if missing:
        raise ValueError(f"trainer.command {list(argv)!r} lacks the placeholder "
                         f"{', '.join('{' + m + '}' for m in missing)}; expected each of "
                         f"{', '.join('{' + p + '}' for p in COMMAND_REQUIRED)} in some argument")


class _Section(BaseModel):
    # allow_inf_nan=False: an infinite learning rate or noise multiplier is a typo, never a
    # setting (Opacus' RDP loop never ends at sigma = inf).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


class DataConfig(_Section):
    name: str = Field(default="fair", description="a shipped dataset; with path, a label (default: the file's stem)")
    path: str = ""
    features: list[str] = Field(default_factory=list)
    label: str = Field(
        default="",
        description="label column of a table; empty with an .npz path: the file holds arrays x[records, ...] "
                    "(any shape) and y[records] (integer labels)",
    )
    n: int | None = Field(default=None, ge=1)
    population: int = Field(default=500, ge=0)
    test: int = Field(default=1000, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _name_of_file(cls, values: Any) -> Any:
        # A user file is named after itself (MLflow params, reports), never after a shipped
        # dataset it is not (e.g. a config's name = "fair" with --set data.path=...).
        if isinstance(values, dict) and values.get("path") and values.get("name", "fair") in DATASETS:
            return {**values, "name": Path(str(values["path"])).stem or "user-data"}
        return values

    @model_validator(mode="after")
    def _known(self) -> "DataConfig":
        if not self.path and self.name not in DATASETS:
            raise ValueError(f"unknown dataset {self.name!r}; expected one of {', '.join(DATASETS)} or a path")
        if self.path and not self.label and not self.path.lower().endswith(".npz"):
            raise ValueError("path is set but label is empty; expected the label column's name "
                             "(only an .npz can leave it empty: arrays x and y)")
        if self.path and not self.label and self.features:
            raise ValueError("features names table columns; an .npz of arrays x and y (label empty) takes no features, "
                             "or set label to read one 1-d array per column")
        return self


class ModelConfig(_Section):
    name: Literal["mlp", "logreg", "cnn", "plugin"] = Field(
        default="mlp", description="a built-in model; 'plugin' (set by itself) when model.plugin builds the model",
    )
    widths: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] = Field(default_factory=lambda: [64])
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    plugin: str = Field(
        default="",
        description="the user's model: 'file.py:build_model' or 'package.module:build_model', a factory "
                    "build(in_shape, n_classes, **options) -> torch.nn.Module (trainers.models); replaces name",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model.plugin factory")

    @model_validator(mode="before")
    @classmethod
    def _plugin_builds(cls, values: Any) -> Any:
        # With a plugin the built-in settings mean nothing: refuse them when given, and
        # record name = "plugin", widths = [] (reports, MLflow params), which re-validate.
        if isinstance(values, dict) and values.get("plugin"):
            meant = {"name": "plugin", "widths": [], "dropout": 0.0}
            clash = sorted(k for k, v in meant.items() if k in values and values[k] != v)
            if clash:
                raise ValueError(f"model.plugin builds the model; remove model.{', model.'.join(clash)} "
                                 "(the factory takes its settings from [model.options])")
            return {**values, **meant}
        return values

    @model_validator(mode="after")
    def _plugin(self) -> "ModelConfig":
        if self.plugin and not (PLUGIN_FILE_PATH.match(self.plugin) or PLUGIN_MODULE_PATH.match(self.plugin)):
            raise ValueError(f"model.plugin = {self.plugin!r} is malformed; expected 'file.py:build_model' or "
                             "'package.module:build_model'")
        if not self.plugin and self.name == "plugin":
            raise ValueError("model.name = 'plugin' needs model.plugin = 'file.py:build_model'")
        if not self.plugin and self.options:
            raise ValueError("model.options are the keyword arguments of model.plugin, which is empty")
        return self


class TrainerConfig(_Section):
    kind: Literal["plain", "dp", "zoo", "fast", "optimizer-plugin", "blackbox-plugin", "command"] = "plain"
    variant: str = ""
    plugin: str = ""
    command: list[str] = Field(
        default_factory=list,
        description="kind = 'command': the argument list of a black-box trainer run as a process (never a shell); "
                    "see trainers.command",
    )
    timeout_s: float = Field(default=DEFAULT_COMMAND_TIMEOUT_S, gt=0.0, description="kind = 'command': seconds per model")
    epochs: int = Field(default=10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=0.1, gt=0.0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.0, ge=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    patience: int = Field(default=0, ge=0, description="early stopping patience in epochs; 0 = off")

    @model_validator(mode="after")
    def _needs(self) -> "TrainerConfig":
        if self.kind == "fast" and self.variant:
            from trainers.fast.spec import FAULTS

            if self.variant not in FAULTS:
                raise ValueError(f"trainer.variant = {self.variant!r} is not a fast-trainer fault; expected one of {', '.join(sorted(FAULTS))}")
        if self.kind == "zoo" and not self.variant:
            raise ValueError("kind = 'zoo' needs variant = a faulty DP-SGD name (see README)")
        if self.kind == "zoo":
            from trainers.zoo import ZOO

            if self.variant not in ZOO:
                raise ValueError(f"trainer.variant = {self.variant!r} is not a zoo variant; expected one of {', '.join(sorted(ZOO))}")
        if self.kind.endswith("plugin") and not self.plugin:
            raise ValueError(f"kind = {self.kind!r} needs plugin = 'package.module:Name'")
        if self.kind == "command":
            check_command(self.command)
        return self


class DPSettings(_Section):
    noise_multiplier: float | None = Field(default=None, ge=0.0)
    target_epsilon: float | None = Field(default=None, gt=0.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    accountant: Literal["prv", "rdp", "gdp"] = "prv"
    # inf (TOML: claimed_epsilon = inf) states a non-private trainer, as a plugin's
    # CLAIMED_EPSILON = float("inf") does; audit.pipeline.preflight resolves it to no claim.
    claimed_epsilon: float | None = Field(
        default=None, gt=0.0, allow_inf_nan=True,
        description="stated claim of a black-box plugin or command (inf: not private); when empty a plugin's "
                    "own CLAIMED_EPSILON is audited, and a command is refused",
    )


class AuditSettings(_Section):
    models: int = Field(default=8, ge=1, le=MAX_MODELS)
    canaries: int = Field(default=500, ge=1, le=MAX_CANARIES)
    canary_kind: Literal["natural", "mislabeled", "clipbkd", "ood", "gradient"] = "natural"
    canary_tensors: int = Field(
        default=1, ge=1, le=64,
        description="gradient canaries: 1 = a Dirac on one slot tensor; k >= 2 = each canary split equally over k "
                    "slot tensors (clipping each tensor separately lets sqrt(k) C through, which the readings show)",
    )
    # lira-online (per-record IN and OUT variances) needs many shadows and is not a default;
    # lira-offline's per-record OUT variance warns below 32 OUT values per record (the
    # -fixed variants pool one variance and suit few shadows; lira-offline-fixed bounds).
    # Empty lists are refused (min_length): an audit with no bound attack or no statistic
    # measures nothing, and must not reach a verdict.
    attacks: list[str] = Field(
        default_factory=lambda: ["loss", "calibrated", "lira-online-fixed", "lira-offline", "lira-offline-fixed", "rmia"],
        min_length=1,
    )
    bound_attacks: list[str] = Field(default_factory=lambda: ["lira-offline-fixed"], min_length=1)
    statistics: list[Literal["likelihood-ratio", "likelihood-ratio-half-sigma", "spread", "all-iterates",
                             "last-iterate"]] = Field(
        default_factory=lambda: ["likelihood-ratio", "likelihood-ratio-half-sigma", "spread"], min_length=1
    )
    fprs: list[float] = Field(default_factory=lambda: [0.1, 0.01, 0.001, 0.0001], min_length=1)
    full_guess_share: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="share of 1 - confidence reserved for guessing every canary (raises the power for bug hunting)",
    )
    augment: Literal["none", "mirror", "shift"] = "none"

    @model_validator(mode="after")
    def _names(self) -> "AuditSettings":
        from audit.attacks import LOGIT_METHODS

        for field in ("attacks", "bound_attacks"):
            unknown = [a for a in getattr(self, field) if a not in LOGIT_METHODS]
            if unknown:
                raise ValueError(f"audit.{field} has unknown attack {unknown[0]!r}; expected names from {', '.join(LOGIT_METHODS)}")
        for name in ("attacks", "bound_attacks", "statistics", "fprs"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"audit.{name} lists a value twice: {values}")
        return self


class DefenceSettings(_Section):
    """Output-side defences applied when the models are queried (what an attacker sees)."""

    temperature: float = Field(default=1.0, gt=0.0)
    top_k: int = Field(default=0, ge=0, description="0 = all classes")
    decimals: int = Field(default=-1, ge=-1, description="-1 = no rounding")
    label_only: bool = False
    distillation: bool = Field(default=False, description="release a student distilled from each model (plain trainer)")
    distill_temperature: float = Field(default=4.0, gt=0.0)

    @property
    def active(self) -> bool:
        """Whether an output-side defence changes what queries reveal."""
        return self.temperature != 1.0 or self.top_k > 0 or self.decimals >= 0 or self.label_only


class MlflowSettings(_Section):
    enabled: bool = True
    tracking_uri: str = ""
    experiment: str = Field(default="dpaudit", min_length=1)


class GateSettings(_Section):
    model_name: str = ""
    version: str = ""
    alias: str = "dp-audited"
    max_tpr: float | None = Field(default=None, ge=0.0, le=1.0, description="non-DP risk gate")
    at_fpr: float = Field(default=0.001, gt=0.0, lt=1.0)
    attack: str = "lira-offline-fixed"
    decide_on: Literal["upper", "point", "lower"] = Field(
        default="upper",
        description="which end of the TPR's confidence interval the risk gate compares with max_tpr: "
        "'upper' passes only when the whole interval is within the limit (conservative), "
        "'lower' fails only when the whole interval exceeds it, 'point' uses the estimate",
    )
    on_inconclusive: Literal["fail", "pass"] = Field(
        default="fail",
        description="exit code and registry gate of an INCONCLUSIVE DP audit (power not above the claim)",
    )


def _machine_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ExecutorSettings(_Section):
    """Where the black-box units of work (model k, or a block of models for the fast
    trainer) run: in this process, or as Ray tasks (``pip install 'dpaudit[ray]'``).
    The Ray fields are read only with ``kind = "ray"``, so ``--executor local`` runs a
    cluster config on this machine unchanged."""

    kind: Literal["local", "ray"] = "local"
    address: str = Field(default="", description="Ray cluster to join ('auto', 'host:6379', 'ray://host:10001'); empty = start a local Ray for the run")
    num_cpus: float = Field(default=1.0, gt=0.0, description="CPUs reserved per Ray task")
    num_gpus: float = Field(default=0.0, ge=0.0, description="GPUs reserved per Ray task (1 = one model per GPU)")
    max_retries: int = Field(default=3, ge=0, description="Ray retries of a unit whose worker dies or that raises")
    local_cpus: int = Field(
        default=0, ge=0,
        description="CPUs of this machine the run uses: a local Ray's size, and under kind = 'local' the fast "
                    "trainer's workers (results do not depend on them); 0 = all of this machine",
    )
    block_models: int = Field(default=0, ge=0, description="fast trainer: models per unit (blocks k*B .. k*B+B-1; results do not depend on it); 0 = one unit")
    threads: int = Field(
        default=0, ge=0,
        description="torch threads a unit computes on, under every executor (float sums depend on it); 0 = num_cpus rounded up",
    )

    @property
    def unit_threads(self) -> int:
        """Torch threads per unit: ``threads``, else the CPUs a Ray task reserves."""
        return self.threads or max(1, math.ceil(self.num_cpus))

    @property
    def unit_workers(self) -> int:
        """Fast trainer: threads that step shares of a unit's models, each on
        :attr:`unit_threads` torch threads (``trainers.fast.train(workers=...)``; the
        observations do not depend on it): the CPUs a unit may use, this machine's (or
        ``local_cpus``) under ``kind = "local"``, a Ray task's ``num_cpus`` under ``"ray"``."""
        if self.kind == "ray":
            cpus = self.num_cpus
        else:
            cpus = self.local_cpus or _machine_cpus()
        return max(1, int((cpus or 1) // self.unit_threads))

    @model_validator(mode="after")
    def _ray_only(self) -> "ExecutorSettings":
        if self.kind == "ray" and self.address and self.local_cpus:
            raise ValueError("local_cpus sizes a local Ray; with address set the cluster's own size is used")
        return self


class AuditConfig(_Section):
    name: str = Field(default="audit", min_length=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    output_dir: str = "runs/audit"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    dp: DPSettings = Field(default_factory=DPSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    defence: DefenceSettings = Field(default_factory=DefenceSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)

    @model_validator(mode="after")
    def _consistent(self) -> "AuditConfig":
        private = self.trainer.kind in ("dp", "zoo", "optimizer-plugin")
        if self.trainer.kind == "fast":
            if self.audit.canary_kind == "gradient":
                raise ValueError("trainer.kind = 'fast' runs black-box audits; use dp, zoo or optimizer-plugin for gradient canaries")
            if self.model.name == "cnn" or self.model.dropout:
                raise ValueError("trainer.kind = 'fast' trains MLPs and logistic regression without dropout")
            if self.audit.augment != "none":
                raise ValueError("trainer.kind = 'fast' queries each record once (audit.augment = 'none')")
            if self.dp.noise_multiplier is not None and self.dp.target_epsilon is not None:
                raise ValueError("dp: set at most one of noise_multiplier and target_epsilon")
        if private and (self.dp.noise_multiplier is None) == (self.dp.target_epsilon is None):
            raise ValueError("dp: set exactly one of noise_multiplier and target_epsilon for a DP-SGD trainer")
        if self.defence.distillation and (self.trainer.kind != "plain" or self.trainer.patience):
            raise ValueError("defence.distillation needs trainer.kind = 'plain' without early stopping (patience = 0)")
        if self.audit.canary_kind == "gradient":
            if not private:
                raise ValueError(
                    "audit.canary_kind = 'gradient' needs a DP-SGD trainer (dp, zoo or optimizer-plugin)"
                )
        elif self.audit.canary_tensors != 1:
            raise ValueError("audit.canary_tensors splits gradient canaries; it needs audit.canary_kind = 'gradient'")
        elif self.audit.models < 5:
            # A canary counts for a target only when its shadows include it at least once
            # and exclude it at least once: with four shadows 7/8 of the canaries do.
            raise ValueError("audit.models < 5: a black-box audit needs a target and at least four shadows")
        for name in self.audit.fprs:
            if not 0.0 < name < 1.0:
                raise ValueError(f"audit.fprs has {name!r}; expected numbers in (0, 1)")
        self._check_gate()
        return self

    def _check_gate(self) -> None:
        from audit.attacks import LOGIT_METHODS

        g = self.gate
        if g.attack not in LOGIT_METHODS:
            raise ValueError(f"gate.attack = {g.attack!r} is not an attack; expected one of {', '.join(LOGIT_METHODS)}")
        if g.max_tpr is None:
            return
        if self.audit.canary_kind == "gradient":
            raise ValueError("gate.max_tpr is a black-box risk gate; a white-box audit (canary_kind = 'gradient') gates on its claim")
        if g.attack not in self.audit.attacks:
            raise ValueError(f"gate.attack = {g.attack!r} is not among audit.attacks {self.audit.attacks}")
        if not any(math.isclose(g.at_fpr, f, rel_tol=1e-9) for f in self.audit.fprs):
            raise ValueError(f"gate.at_fpr = {g.at_fpr!r} is not among audit.fprs {self.audit.fprs}")

    @property
    def mode(self) -> str:
        """``"dp"`` when training claims an epsilon, else ``"non-dp"`` (a defence comparison)."""
        if self.trainer.kind in ("blackbox-plugin", "command"):  # a stated claim: audit.pipeline.preflight
            return "dp" if self.dp.claimed_epsilon is not None and not math.isinf(self.dp.claimed_epsilon) else "non-dp"
        if self.trainer.kind == "fast":  # DP-SGD when given a noise level, else plain SGD
            return "non-dp" if self.dp.noise_multiplier is None and self.dp.target_epsilon is None else "dp"
        return "non-dp" if self.trainer.kind == "plain" else "dp"


def _set(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise InputError(f"--set {dotted}={raw}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise InputError(f"--set {dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if where and msg.startswith(f"{where}."):  # the message names the field in full already
        where = ""
    extra = f" (got {first['input']!r})" if first["type"] not in ("extra_forbidden", "value_error", "missing") else ""
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{where}: {msg}{extra}" if where else f"{msg}{extra}"


def parse_config(tree: dict[str, Any], overrides: Sequence[str] = ()) -> AuditConfig:
    """Validate a config tree (as read from TOML) after ``key=value`` overrides."""
    tree = dict(tree)
    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set {item}: expected section.key=value")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), raw.strip())
    try:
        return AuditConfig.model_validate(tree)
    except ValidationError as err:
        raise InputError(f"config: {_first_error(err)}") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> AuditConfig:
    """Read and validate a TOML config; ``InputError`` for a missing file, bad TOML or a bad field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config {path}: no such file")
    try:
        tree = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"config {path}: not valid TOML ({err})") from None
    return parse_config(_rebase_inputs(tree, path.parent), overrides)


def _rebase_inputs(tree: dict[str, Any], base: Path) -> dict[str, Any]:
    """``tree`` with its relative input paths (``data.path``, the file of a
    ``trainer.plugin`` or ``model.plugin = "file.py:Name"``, and in ``trainer.command`` an executable given as
    a path and every other argument that names a file there) joined to ``base``, the
    config file's directory (absolute paths stay as they are), so a config finds its data,
    plugin and script from any working directory.
    Outputs (``output_dir``) and ``--set`` values stay relative to the working directory;
    a ``package.module:Name`` plugin is imported from the environment."""
    tree = {key: dict(value) if isinstance(value, dict) else value for key, value in tree.items()}
    data, trainer = tree.get("data"), tree.get("trainer")
    if isinstance(data, dict) and isinstance(data.get("path"), str) and data["path"]:
        data["path"] = str(base / data["path"])
    for section in (trainer, tree.get("model")):  # trainer.plugin, model.plugin
        if isinstance(section, dict) and isinstance(section.get("plugin"), str) and PLUGIN_FILE_PATH.match(section["plugin"]):
            file, name = section["plugin"].rsplit(":", 1)
            section["plugin"] = f"{base / file}:{name}"
    if isinstance(trainer, dict) and isinstance(trainer.get("command"), list):
        trainer["command"] = rebase_command(trainer["command"], base)
    return tree


def rebase_command(argv: list[Any], base: Path) -> list[Any]:
    """``argv`` with its relative paths joined to ``base``: the executable when given as a
    path (``./train.sh``; a bare name such as ``python3`` is looked up on PATH, as a shell
    does), and any other argument that names an existing file relative to ``base``
    (``train.py``). Arguments with placeholders, absolute paths and anything else (options,
    numbers, ``--data=file.csv``) pass unchanged. Non-strings are left to validation."""
    out = list(argv)
    for i, arg in enumerate(out):
        if not isinstance(arg, str) or not arg or "{" in arg or Path(arg).is_absolute():
            continue
        if (i == 0 and is_path(arg)) or (i > 0 and (base / arg).is_file()):
            out[i] = str(base / arg)
    return out


def is_path(name: str) -> bool:
    """Whether the executable ``name`` is given as a path (``./train.sh``, ``bin/train``),
    not as a bare name to look up on PATH (``python3``), as a shell tells them apart."""
    return "/" in name or (os.sep != "/" and os.sep in name)
