"""MLflow logging of audit reports and a model-registry gate.

This is the only module of dpaudit that imports ``mlflow``, and it does so inside the functions
that talk to a store, so ``import audit.tracking`` stays cheap.

What one audit becomes (``log_audit``): one MLflow run, named after ``report["name"]``, with

- **params**: the flattened ``config`` (keys joined with ``.``, e.g. ``dp.noise_multiplier``);
  strings as they are, everything else as JSON (``true``, ``null``, ``["loss", "lira-online"]``),
  truncated to MLflow's 6000 characters;
- **metrics** (``None`` and non-numbers skipped; names made valid, see ``metric_key``):
  ``claimed_epsilon``, ``claimed_delta``, ``epsilon_lower_bound`` and ``power`` (the verdict's),
  ``claim_p_value``, ``effective_epsilon``, ``effective_noise_multiplier`` (when the claimed
  DP-SGD privacy curve was tested),
  ``epsilon_lower_bound.<bound name>``, ``epsilon_estimate.<estimate name>``,
  ``<attack>.auc``, ``<attack>.tpr_at_fpr_<target>`` (``lira-online.tpr_at_fpr_0.001``),
  ``train_accuracy``, ``test_accuracy``, ``timings.<key>`` (``timings.train_s``);
- **tags**: ``dp_audit.verdict``, ``dp_audit.exit_code``, ``dp_audit.claimed_epsilon``,
  ``dp_audit.epsilon_lower_bound``, ``dp_audit.power``, ``dp_audit.mode``, ``dp_audit.schema``,
  ``dp_audit.plugin`` and ``dp_audit.plugin_sha256`` (a plugin's path and file hash)
  (absent when the report's value is null) and the verdict message as the run description;
- **artifacts**: the given paths that exist (files at the artifact root, directories under their
  own name); ``upload_report`` gives those of ``REPORT_ARTIFACTS`` (reports, figures, config) found;
- optionally one **nested child run per trained model** with that model's utility numbers.

Where it goes: any tracking URI (``http://127.0.0.1:5000`` for a real ``mlflow server``,
``sqlite:///...``, ``file:///...``: MLflow's deprecated file store is allowed when asked for).
With ``tracking_uri=None`` MLflow's convention holds: ``MLFLOW_TRACKING_URI`` when it is set,
else the **embedded default**, a SQLite store ``mlflow.db`` in the current working directory
(``sqlite:////abs/cwd/mlflow.db``) whose new experiments keep artifacts in ``./mlartifacts`` (a
``file://`` artifact location). ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` in that
directory shows them.

One audit is one MLflow run: when ``<run_dir>/mlflow_run.json`` records a run at the same
tracking URI and that run still exists, ``log_audit`` logs into it again (a resumed audit, a
second ``dpaudit report --log-to-mlflow``) instead of creating another; params already logged
keep their first value (MLflow params are immutable).

An unreachable or refusing store never loses the local report: ``log_audit`` then returns
``LogResult(ok=False, warning=...)`` within seconds (MLflow's HTTP retries are switched off for the
call) and writes nothing locally; ``upload_report`` logs the saved report later. On success the run's
address is written atomically to ``<run_dir>/mlflow_run.json``.

``gate_model`` records a verdict on a registered model version (tags ``dp_audit.*``), points an
alias (default ``dp-audited``) at the version when the audit passed, and on a failure removes the
alias only if it points at that version (an older version that passed its own audit keeps it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from audit.atomic import atomic_open
from audit.errors import InputError

EMBEDDED_DB = "mlflow.db"
EMBEDDED_ARTIFACTS = "mlartifacts"
RUN_RECORD = "mlflow_run.json"
RUN_RECORD_SCHEMA = "dpaudit.mlflow_run/1"
# What the pipeline leaves in a run directory (audit.pipeline.rundir, audit.report.render); the
# observations are left out by default (they can be large).
REPORT_ARTIFACTS = ("report.json", "report.md", "report.html", "roc.png", "epsilon.png",
                    "config.json", "utility.json", "figures")
DEFAULT_ALIAS = "dp-audited"
TAG_PREFIX = "dp_audit."

# mlflow.utils.validation limits (checked against MLflow in the tests).
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
_PARAMS_TAGS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000

# Set for the duration of a call: a dead server must cost seconds, not MLflow's default of
# 7 retries with backoff (minutes); and MLflow must not print run URLs on our stdout
# (mlflow_run.json has the address).
_CALL_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # read when mlflow is first imported, inside the call
}

_PASSING = {"NO VIOLATION DETECTED", "GATE PASSED"}  # audit.pipeline.verdict.PASSING
_FAILING = {"VIOLATION", "GATE FAILED"}
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\- /]")
_ALIAS = re.compile(r"^[\w\-]{1,255}$")  # mlflow.utils.validation._REGISTERED_MODEL_ALIAS_REGEX
_RESERVED_ALIAS = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)


class TrackingError(RuntimeError):
    """The tracking store failed during ``gate_model`` (the CLI's runtime failure, exit code 3)."""


@dataclass(frozen=True)
class LogResult:
    """What ``log_audit`` / ``upload_report`` did. ``ok=False`` carries a one-line ``warning``."""

    ok: bool
    tracking_uri: str
    run_id: str | None = None
    experiment_id: str | None = None
    child_run_ids: tuple[str, ...] = ()
    artifacts: tuple[str, ...] = ()
    warning: str | None = None


@dataclass(frozen=True)
class GateResult:
    """What ``gate_model`` did to one registered model version."""

    model_name: str
    version: str
    passed: bool
    decision: str
    tags: Mapping[str, str]
    alias: str
    alias_set: bool
    alias_removed: bool
    tracking_uri: str


# ---------------------------------------------------------------- pure: report -> params/metrics/tags


def metric_key(name: str) -> str:
    """``name`` as a valid MLflow metric/param key.

    Characters other than ASCII letters, digits, ``_ . - /`` and space become ``_``; empty,
    ``.`` and ``..`` path segments (which MLflow rejects as non-unique paths) are dropped or become
    ``_``, as does a leading ``..`` (``..0`` becomes ``_0``); the result is cut to 250 characters.
    """
    cleaned = _BAD_KEY_CHARS.sub("_", str(name))
    segments = [s if s not in (".", "..") else "_" for s in cleaned.split("/") if s]
    key = "/".join(segments)[:MAX_KEY_LENGTH].rstrip("/") or "_"
    if key.startswith(".."):  # MLflow refuses any name that normalises to a path starting with ".."
        key = "_" + key[2:]
    return key if key not in (".", "") else "_"


def params_from_config(config: Mapping[str, Any] | None) -> dict[str, str]:
    """Flatten a nested config into ``{"a.b": "value"}`` (see the module docstring)."""
    params: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
            return
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        params[metric_key(prefix)] = text[:MAX_PARAM_VALUE_LENGTH]

    for key, value in (config or {}).items():
        walk(str(key), value)
    return params


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _target_label(target: Any) -> str:
    number = _number(target)
    return repr(number) if number is not None else str(target)


def metrics_from_report(report: Mapping[str, Any]) -> dict[str, float]:
    """The report's numbers as MLflow metrics (names in the module docstring)."""
    raw: list[tuple[str, Any]] = []
    claimed = report.get("claimed") or {}
    verdict = report.get("verdict") or {}
    raw += [("claimed_epsilon", claimed.get("epsilon")), ("claimed_delta", claimed.get("delta"))]
    raw += [("epsilon_lower_bound", verdict.get("epsilon_lower_bound")), ("power", verdict.get("power"))]
    raw += [("claim_p_value", verdict.get("claim_p_value")), ("effective_epsilon", verdict.get("effective_epsilon")),
            ("effective_noise_multiplier", verdict.get("effective_noise_multiplier"))]
    for bound in report.get("bounds") or []:
        raw.append((f"epsilon_lower_bound.{bound.get('name')}", bound.get("epsilon_lower_bound")))
    for estimate in report.get("estimates") or []:
        raw.append((f"epsilon_estimate.{estimate.get('name')}", estimate.get("epsilon_estimate")))
    for method, result in (report.get("attacks") or {}).items():
        result = result or {}
        raw.append((f"{method}.auc", result.get("auc")))
        for point in result.get("tpr_at_fpr") or []:
            raw.append((f"{method}.tpr_at_fpr_{_target_label(point.get('target_fpr'))}", point.get("tpr")))
    utility = report.get("utility") or {}
    raw += [("train_accuracy", utility.get("train_accuracy")), ("test_accuracy", utility.get("test_accuracy"))]
    for key, seconds in (report.get("timings") or {}).items():
        raw.append((f"timings.{key}", seconds))
    return {metric_key(k): v for k, v in ((k, _number(v)) for k, v in raw) if v is not None}


def _plugin_values(report: Mapping[str, Any]) -> dict[str, Any]:
    plugin = report.get("plugin") if isinstance(report.get("plugin"), Mapping) else {}
    return {"plugin": plugin.get("path"), "plugin_sha256": plugin.get("sha256")}


def _tag_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


def tags_from_report(report: Mapping[str, Any]) -> dict[str, str]:
    """``dp_audit.*`` run tags; a tag whose report value is null is left out."""
    verdict = report.get("verdict") or {}
    values = {
        "verdict": verdict.get("decision"),
        "exit_code": verdict.get("exit_code"),
        "claimed_epsilon": (report.get("claimed") or {}).get("epsilon", verdict.get("claimed_epsilon")),
        "epsilon_lower_bound": verdict.get("epsilon_lower_bound"),
        "power": verdict.get("power"),
        "claim_rejected": verdict.get("claim_rejected"),
        "mode": report.get("mode"),
        "schema": report.get("schema"),
        **_plugin_values(report),
    }
    tags = {TAG_PREFIX + k: _tag_value(v) for k, v in values.items() if v is not None}
    if verdict.get("message"):
        tags["mlflow.note.content"] = str(verdict["message"])
    return tags


# ---------------------------------------------------------------- store plumbing


def resolve_tracking_uri(tracking_uri: str | None) -> tuple[str, str | None]:
    """``(tracking URI, artifact location for new experiments or None)``; None =
    ``MLFLOW_TRACKING_URI`` when set, else the embedded default."""
    if tracking_uri is None and os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return os.environ["MLFLOW_TRACKING_URI"].strip(), None
    if tracking_uri is None:
        cwd = Path.cwd().resolve()
        return f"sqlite:///{cwd / EMBEDDED_DB}", (cwd / EMBEDDED_ARTIFACTS).as_uri()
    if not isinstance(tracking_uri, str) or not tracking_uri.strip():
        raise InputError(f"tracking URI must be a non-empty string or None, got {tracking_uri!r}")
    return tracking_uri.strip(), None


@contextlib.contextmanager
def _call_env(uri: str) -> Iterator[None]:
    """Set ``_CALL_ENV`` for the call, restoring the caller's environment after (not thread-safe).

    MLflow 3 refuses its deprecated file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set; a
    ``file:`` URI (or a bare path) given explicitly is taken as that opt-in.
    """
    values = dict(_CALL_ENV)
    if urllib.parse.urlparse(uri).scheme in ("", "file"):
        values["MLFLOW_ALLOW_FILE_STORE"] = "true"
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    # MLflow's INFO lines (creating tables, migrations) are not what the user asked for.
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` on one line; a long message keeps its head and its tail (the root cause)."""
    text = f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no message'}"
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(client, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:
        # Another process may have created it between the two calls.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _log_batch(client, run_id: str, metrics: Mapping[str, float], params: Mapping[str, str]) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    metric_list = [Metric(k, v, now, 0) for k, v in metrics.items()]
    for i in range(0, len(metric_list), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metric_list[i : i + _METRICS_PER_BATCH], synchronous=True)
    param_list = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(param_list), _PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=param_list[i : i + _PARAMS_TAGS_PER_BATCH], synchronous=True)


def _model_entries(report: Mapping[str, Any]) -> list[tuple[str, dict[str, float], dict[str, str]]]:
    """Per trained model: (index label, numeric fields as metrics, other fields as params)."""
    entries = []
    for position, model in enumerate((report.get("utility") or {}).get("models") or []):
        model = model or {}
        label = str(model.get("index", position))
        metrics = {metric_key(k): _number(v) for k, v in model.items() if k != "index"}
        params = {metric_key(k): _tag_value(v)[:MAX_PARAM_VALUE_LENGTH] for k, v in model.items()
                  if k != "index" and v is not None and _number(v) is None}
        entries.append((label, {k: v for k, v in metrics.items() if v is not None}, params))
    return entries


def _check_report(report: Any) -> None:
    if not isinstance(report, Mapping):
        raise InputError(f"report must be a dict (a parsed report.json), got {type(report).__name__}")
    for key in ("config", "claimed", "utility", "attacks", "verdict", "timings"):
        if report.get(key) is not None and not isinstance(report[key], Mapping):
            raise InputError(f"report field {key!r} must be an object or null, got {type(report[key]).__name__}")
    for key in ("bounds", "estimates"):
        if report.get(key) is not None and not isinstance(report[key], list):
            raise InputError(f"report field {key!r} must be a list or null, got {type(report[key]).__name__}")


# ---------------------------------------------------------------- public: logging


def log_audit(
    report: Mapping[str, Any],
    run_dir: str | os.PathLike,
    *,
    tracking_uri: str | None,
    experiment: str,
    artifacts: Sequence[str | os.PathLike] = (),
    nested_models: bool = False,
) -> LogResult:
    """Log one audit report as one MLflow run (contents in the module docstring).

    ``artifacts``: paths to upload; those that do not exist are skipped (relative paths are relative
    to the current directory). ``nested_models``: one child run per ``report["utility"]["models"]``
    entry. Bad arguments raise ``InputError``; any failure of the store (down, refusing, HTTP error,
    unknown URI scheme) returns ``ok=False`` with a one-line warning instead of raising, and nothing
    is written to ``run_dir``. On success ``run_dir/mlflow_run.json`` records where the run went.
    """
    _check_report(report)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory {str(run_dir)!r} does not exist")
    if not isinstance(experiment, str) or not experiment.strip():
        raise InputError(f"experiment name must be a non-empty string, got {experiment!r}")
    uri, artifact_location = resolve_tracking_uri(tracking_uri)
    files = [Path(p) for p in artifacts if Path(p).exists()]

    run_id = None
    client = None
    with _call_env(uri):
        try:
            client = _client(uri)
            experiment_id = _experiment_id(client, experiment, artifact_location)
            run = _recorded_run(client, run_dir, uri, experiment_id)
            params = params_from_config(report.get("config"))
            if run is None:
                run = client.create_run(experiment_id, run_name=str(report.get("name") or "audit"),
                                        tags=tags_from_report(report))
            else:  # the same audit logged again: one audit, one run
                client.update_run(run.info.run_id, status="RUNNING")
                for key, value in tags_from_report(report).items():
                    client.set_tag(run.info.run_id, key, value)
                params = {k: v for k, v in params.items() if k not in run.data.params}
            run_id = run.info.run_id
            _log_batch(client, run_id, metrics_from_report(report), params)
            for path in files:
                if path.is_dir():
                    client.log_artifacts(run_id, str(path), artifact_path=path.name)
                else:
                    client.log_artifact(run_id, str(path))
            children = []
            if nested_models:
                for label, metrics, params in _model_entries(report):
                    child = client.create_run(
                        experiment_id, run_name=f"{report.get('name') or 'audit'}/model-{label}",
                        tags={"mlflow.parentRunId": run_id, TAG_PREFIX + "model_index": label})
                    _log_batch(client, child.info.run_id, metrics, params)
                    client.set_terminated(child.info.run_id, "FINISHED")
                    children.append(child.info.run_id)
            client.set_terminated(run_id, "FINISHED")
        except Exception as exc:  # the contract: a failing store never raises into the audit
            if run_id is not None:
                with contextlib.suppress(Exception):
                    client.set_terminated(run_id, "FAILED")
            return LogResult(ok=False, tracking_uri=uri,
                             warning=f"MLflow logging to {uri} failed, the local report is kept: {_one_line(exc)}")

    result = LogResult(ok=True, tracking_uri=uri, run_id=run_id, experiment_id=experiment_id,
                       child_run_ids=tuple(children), artifacts=tuple(str(p) for p in files))
    record = {
        "schema": RUN_RECORD_SCHEMA,
        "tracking_uri": uri,
        "experiment": experiment,
        "experiment_id": experiment_id,
        "run_id": run_id,
        "artifact_uri": run.info.artifact_uri,
        "child_run_ids": list(children),
    }
    if uri.startswith(("http://", "https://")):
        record["run_url"] = f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    try:
        with atomic_open(run_dir / RUN_RECORD) as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")
    except OSError as exc:
        return replace(result, warning=f"run {run_id} logged but {RUN_RECORD} not written: {_one_line(exc)}")
    return result


def _recorded_run(client, run_dir: Path, uri: str, experiment_id: str):
    """The run ``run_dir/mlflow_run.json`` records, if it is at ``uri`` in ``experiment_id``
    and still exists (not deleted); else None."""
    try:
        record = json.loads((run_dir / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("tracking_uri") != uri or record.get("experiment_id") != experiment_id:
        return None
    try:
        run = client.get_run(str(record.get("run_id")))
    except Exception as exc:
        if _is_missing(exc):
            return None
        raise
    return run if run.info.lifecycle_stage == "active" else None


def upload_report(
    run_dir: str | os.PathLike,
    *,
    tracking_uri: str | None,
    experiment: str,
    artifacts: Sequence[str | os.PathLike] | None = None,
    nested_models: bool = False,
) -> LogResult:
    """Log a saved ``run_dir/report.json`` like ``log_audit`` (for audits run while the store was down).

    ``artifacts=None`` uploads whichever of ``REPORT_ARTIFACTS`` exist in ``run_dir`` (reports,
    figures, config and utility; not the observations). A report already logged (its
    ``mlflow_run.json`` names a live run at the same URI) is logged into that run again.
    """
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise InputError(f"no report at {str(path)!r}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"report {str(path)!r} is not valid JSON: {_one_line(exc)}") from None
    if artifacts is None:
        artifacts = [Path(run_dir) / name for name in REPORT_ARTIFACTS]
    return log_audit(report, run_dir, tracking_uri=tracking_uri, experiment=experiment,
                     artifacts=artifacts, nested_models=nested_models)


# ---------------------------------------------------------------- public: registry gate


def _gate_decision(report: Any) -> tuple[bool, Mapping[str, Any]]:
    _check_report(report)
    verdict = report.get("verdict")
    if not isinstance(verdict, Mapping):
        raise InputError("report has no verdict to gate on")
    decision, exit_code = verdict.get("decision"), verdict.get("exit_code")
    if decision in _PASSING and exit_code == 0:
        return True, verdict
    if decision in _FAILING and exit_code == 1:
        return False, verdict
    if decision == "INCONCLUSIVE" and exit_code in (0, 1):  # 0 only with gate.on_inconclusive = "pass"
        return exit_code == 0, verdict
    if decision == "REPORTED":
        raise InputError("verdict 'REPORTED' tested nothing: a gate needs a claimed epsilon (a DP audit) "
                         "or a risk threshold ([gate] max_tpr) for a non-DP audit")
    raise InputError(f"verdict decision {decision!r} with exit code {exit_code!r} is not a pass (0) or a failure (1)")


def _is_missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _check_gate_args(model_name: Any, version: Any, alias: Any) -> None:
    if not isinstance(model_name, str) or not model_name:
        raise InputError(f"model name must be a non-empty string, got {model_name!r}")
    if not isinstance(alias, str) or not _ALIAS.match(alias) or _RESERVED_ALIAS.match(alias):
        raise InputError(f"alias {alias!r} is not a valid MLflow alias (letters, digits, _ and -; not 'latest' or 'v<n>')")
    if version is not None and not re.fullmatch(r"[1-9]\d*", str(version)):
        raise InputError(f"model version must be a positive integer, got {version!r}")


def _find_version(client, uri: str, model_name: str, version: str | int | None):
    """``(registered model, version string)``; InputError when either is missing."""
    try:
        model = client.get_registered_model(model_name)
    except Exception as exc:
        if _is_missing(exc):
            raise InputError(f"registered model {model_name!r} not found at {uri}") from None
        raise
    if version is None:
        # The newest version of each stage; their maximum is the newest version overall.
        if not model.latest_versions:
            raise InputError(f"registered model {model_name!r} has no versions")
        return model, str(max(int(v.version) for v in model.latest_versions))
    version = str(version)
    try:
        client.get_model_version(model_name, version)
    except Exception as exc:
        if _is_missing(exc):
            raise InputError(f"model {model_name!r} has no version {version}") from None
        raise
    return model, version


def check_gate_target(*, tracking_uri: str | None, model_name: str, version: str | int | None = None,
                      alias: str = DEFAULT_ALIAS) -> str:
    """Check, before an audit starts, that ``gate_model`` will find the model version: the
    version string it will gate. InputError for a bad argument or a missing model/version,
    ``TrackingError`` when the store cannot be reached."""
    _check_gate_args(model_name, version, alias)
    uri, _ = resolve_tracking_uri(tracking_uri)
    with _call_env(uri):
        try:
            return _find_version(_client(uri), uri, model_name, version)[1]
        except InputError:
            raise
        except Exception as exc:
            raise TrackingError(f"checking {model_name!r} at {uri} failed: {_one_line(exc)}") from None


def gate_model(
    report: Mapping[str, Any],
    *,
    tracking_uri: str | None,
    model_name: str,
    version: str | int | None = None,
    alias: str = DEFAULT_ALIAS,
    run_id: str | None = None,
) -> GateResult:
    """Record an audit verdict on a registered model version and move ``alias`` accordingly.

    Sets the version tags ``dp_audit.verdict``, ``dp_audit.epsilon_lower_bound``,
    ``dp_audit.claimed_epsilon``, ``dp_audit.power``, ``dp_audit.run_id``, ``dp_audit.plugin`` and
    ``dp_audit.plugin_sha256`` (``"null"`` where the value is missing, so a re-gate never leaves a
    stale value). A pass (``NO VIOLATION DETECTED`` / ``GATE PASSED``, exit code 0; an
    ``INCONCLUSIVE`` verdict only with exit code 0, i.e. ``gate.on_inconclusive = "pass"``) points
    ``alias`` at this version. A failure removes ``alias`` only if it points at this version:
    another version that passed its own audit keeps it.

    ``version=None`` gates the latest version. A missing model or version, a bad alias or a report
    without a pass/fail verdict raise ``InputError``; a store that fails raises ``TrackingError``.
    """
    passed, verdict = _gate_decision(report)
    _check_gate_args(model_name, version, alias)
    uri, _ = resolve_tracking_uri(tracking_uri)
    claimed = (report.get("claimed") or {}).get("epsilon", verdict.get("claimed_epsilon"))
    tags = {TAG_PREFIX + k: ("null" if v is None else _tag_value(v)) for k, v in {
        "verdict": verdict.get("decision"),
        "epsilon_lower_bound": verdict.get("epsilon_lower_bound"),
        "claimed_epsilon": claimed,
        "power": verdict.get("power"),
        "run_id": run_id,
        **_plugin_values(report),
    }.items()}

    with _call_env(uri):
        try:
            client = _client(uri)
            model, version = _find_version(client, uri, model_name, version)
            for key, value in tags.items():
                client.set_model_version_tag(model_name, version, key, value)
            alias_set = alias_removed = False
            if passed:
                client.set_registered_model_alias(model_name, alias, version)
                alias_set = True
            elif str((model.aliases or {}).get(alias)) == version:
                client.delete_registered_model_alias(model_name, alias)
                alias_removed = True
        except InputError:
            raise
        except Exception as exc:
            raise TrackingError(f"gating {model_name!r} at {uri} failed: {_one_line(exc)}") from None

    return GateResult(model_name=model_name, version=version, passed=passed, decision=str(verdict.get("decision")),
                      tags=tags, alias=alias, alias_set=alias_set, alias_removed=alias_removed, tracking_uri=uri)
