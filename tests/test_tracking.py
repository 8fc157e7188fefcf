"""audit.tracking without a server: report -> params/metrics/tags, the embedded SQLite default,
a store that refuses (HTTP 503, unknown scheme), and input validation.

The real ``mlflow server`` tests (registry gate, server down then upload) are in
``test_tracking_server.py``.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import tracking
from audit.errors import InputError
from audit.tracking import LogResult, gate_model, log_audit, metric_key, metrics_from_report, params_from_config, tags_from_report, upload_report

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"
UNUSED = "sqlite:////nonexistent-dpaudit/unused.db"  # never opened: validation comes first


def make_report(**changes) -> dict:
    """The example report (schema dpaudit.report/1) with top-level fields replaced."""
    report = json.loads(FIXTURE.read_text())
    report.update(copy.deepcopy(changes))
    return report


def violating(report: dict) -> dict:
    out = copy.deepcopy(report)
    out["verdict"].update(decision="VIOLATION", exit_code=1, epsilon_lower_bound=3.5)
    return out


def write_run_dir(path: Path, report: dict) -> Path:
    """A run directory like the pipeline's (report.json, report.md, roc.png, observations/) plus figures/."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "report.json").write_text(json.dumps(report))
    (path / "report.md").write_text("# audit\n")
    (path / "roc.png").write_bytes(b"\x89PNG roc")
    (path / "observations").mkdir(exist_ok=True)
    (path / "observations" / "model-00000.npz").write_bytes(b"not uploaded by default")
    (path / "figures").mkdir(exist_ok=True)
    (path / "figures" / "roc.png").write_bytes(b"\x89PNG not really")
    return path


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- pure functions


def test_metrics_from_example_report():
    metrics = metrics_from_report(make_report())
    assert metrics["lira-online.tpr_at_fpr_0.001"] == 0.003
    assert metrics["loss.tpr_at_fpr_0.0001"] == 0.0
    assert metrics["lira-online.auc"] == 0.53
    assert metrics["epsilon_lower_bound.one-run/lira-online"] == 0.12
    assert metrics["epsilon_estimate.gdp/lira-online"] == 0.4
    assert metrics["claimed_epsilon"] == 2.31 and metrics["claimed_delta"] == 1e-05
    assert metrics["epsilon_lower_bound"] == 0.12 and metrics["power"] == 4.2
    assert metrics["train_accuracy"] == 0.73 and metrics["test_accuracy"] == 0.72
    assert metrics["timings.train_s"] == 41.2
    assert len(metrics) == 4 + 2 + 2 * 5 + 2 + 3


def test_null_and_non_numeric_values_are_not_metrics():
    report = make_report(claimed={"epsilon": None, "delta": None, "source": "non-private training"},
                         utility={"train_accuracy": True, "test_accuracy": "n/a"}, timings=None,
                         bounds=[{"name": "b", "epsilon_lower_bound": None}], estimates=None)
    report["verdict"].update(epsilon_lower_bound=None, power=None)
    metrics = metrics_from_report(report)
    assert not any(k.startswith(("claimed", "epsilon_lower_bound", "power", "train", "test", "timings")) for k in metrics)
    assert "epsilon_lower_bound.b" not in metrics
    assert metrics["loss.auc"] == 0.51  # the attacks are still there


def test_params_flatten_config():
    params = params_from_config(make_report()["config"])
    assert params == {
        "seed": "0", "confidence": "0.95", "data.name": "fair", "trainer.kind": "dp",
        "dp.noise_multiplier": "1.0", "dp.max_grad_norm": "1.0", "dp.delta": "1e-05",
        "audit.models": "8", "audit.canaries": "500", "audit.attacks": '["loss", "lira-online"]',
    }
    odd = params_from_config({"a": {"b": None, "c": True, "empty": {}}, "long": "x" * 10_000})
    assert odd == {"a.b": "null", "a.c": "true", "a.empty": "{}", "long": "x" * 6000}


def test_limits_match_mlflow():
    from mlflow.utils import validation

    assert tracking.MAX_PARAM_VALUE_LENGTH == validation.MAX_PARAM_VAL_LENGTH
    assert tracking.MAX_KEY_LENGTH == validation.MAX_ENTITY_KEY_LENGTH
    assert tracking._PARAMS_TAGS_PER_BATCH == validation.MAX_PARAMS_TAGS_PER_BATCH
    assert tracking._METRICS_PER_BATCH == validation.MAX_METRICS_PER_BATCH


@pytest.mark.parametrize("name, expected", [
    ("lira-online.tpr_at_fpr_0.001", "lira-online.tpr_at_fpr_0.001"),
    ("epsilon_lower_bound.one-run/lira-online", "epsilon_lower_bound.one-run/lira-online"),
    ("a:b=c", "a_b_c"),
    ("../x//y/./", "_/x/y/_"),
    ("/", "_"),
    ("ε", "_"),
    ("..0", "_0"),  # found by the property test below: MLflow refuses names starting with ".."
    ("...", "_."),
])
def test_metric_key_examples(name, expected):
    assert metric_key(name) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_metric_key_is_always_accepted_by_mlflow(name):
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name

    key = metric_key(name)
    _validate_metric_name(key)  # raises MlflowException on an invalid name
    _validate_param_name(key)
    assert len(key) <= 250


def test_tags_leave_out_nulls():
    tags = tags_from_report(make_report())
    assert tags["dp_audit.verdict"] == "NO VIOLATION DETECTED"
    assert tags["dp_audit.claimed_epsilon"] == "2.31" and tags["dp_audit.epsilon_lower_bound"] == "0.12"
    assert tags["dp_audit.power"] == "4.2" and tags["dp_audit.mode"] == "dp" and tags["dp_audit.exit_code"] == "0"
    non_dp = make_report(mode="non-dp", claimed={"epsilon": None, "delta": None, "source": "non-private training"})
    non_dp["verdict"].update(decision="REPORTED", epsilon_lower_bound=None, claimed_epsilon=None, power=None)
    tags = tags_from_report(non_dp)
    assert tags["dp_audit.verdict"] == "REPORTED" and tags["dp_audit.mode"] == "non-dp"
    assert not {"dp_audit.claimed_epsilon", "dp_audit.epsilon_lower_bound", "dp_audit.power"} & set(tags)


# ---------------------------------------------------------------- embedded default


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """One audit logged with tracking_uri=None from a fresh working directory."""
    cwd = tmp_path_factory.mktemp("embedded")
    run_dir = write_run_dir(cwd / "runs" / "quickstart-dp", make_report())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # the caller's value must survive the call
        mp.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        artifacts = [run_dir / "report.json", run_dir / "report.md", run_dir / "figures", run_dir / "missing.html"]
        result = log_audit(make_report(), run_dir, tracking_uri=None, experiment="dpaudit", artifacts=artifacts, nested_models=True)
        env_after = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    return cwd, run_dir, result, env_after


def test_embedded_default_store_in_cwd(embedded):
    from mlflow import MlflowClient

    cwd, run_dir, result, env_after = embedded
    assert result.ok, result.warning
    assert result.tracking_uri == f"sqlite:///{cwd.resolve()}/mlflow.db"
    assert result.tracking_uri.startswith("sqlite:////")
    assert (cwd / "mlflow.db").is_file()
    assert env_after == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": None}

    client = MlflowClient(tracking_uri=result.tracking_uri)
    experiment = client.get_experiment_by_name("dpaudit")
    assert experiment.experiment_id == result.experiment_id
    assert experiment.artifact_location == (cwd.resolve() / "mlartifacts").as_uri()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "quickstart-dp"
    assert run.data.metrics == metrics_from_report(make_report())
    assert run.data.params == params_from_config(make_report()["config"])
    assert {k: v for k, v in run.data.tags.items() if k.startswith("dp_audit.")} == {
        k: v for k, v in tags_from_report(make_report()).items() if k.startswith("dp_audit.")}
    assert run.data.tags["mlflow.note.content"].startswith("No violation detected")


def test_embedded_artifacts_are_stored_locally(embedded):
    from mlflow import MlflowClient

    cwd, run_dir, result, _ = embedded
    client = MlflowClient(tracking_uri=result.tracking_uri)
    listed = {a.path: a.is_dir for a in client.list_artifacts(result.run_id)}
    assert listed == {"figures": True, "report.json": False, "report.md": False}  # the missing path is skipped
    assert [a.path for a in client.list_artifacts(result.run_id, "figures")] == ["figures/roc.png"]
    stored = cwd / "mlartifacts" / result.run_id / "artifacts" / "report.json"
    assert stored.read_bytes() == (run_dir / "report.json").read_bytes()


def test_embedded_nested_model_runs(embedded):
    from mlflow import MlflowClient

    _, _, result, _ = embedded
    client = MlflowClient(tracking_uri=result.tracking_uri)
    assert len(result.child_run_ids) == 1
    child = client.get_run(result.child_run_ids[0])
    assert child.data.tags["mlflow.parentRunId"] == result.run_id
    assert child.info.run_name == "quickstart-dp/model-0"
    assert child.data.metrics == {"n_train": 3200.0, "train_accuracy": 0.73, "test_accuracy": 0.72}


def test_run_record_written(embedded):
    _, run_dir, result, _ = embedded
    record = json.loads((run_dir / "mlflow_run.json").read_text())
    assert record["run_id"] == result.run_id and record["tracking_uri"] == result.tracking_uri
    assert record["experiment_id"] == result.experiment_id and record["experiment"] == "dpaudit"
    assert "run_url" not in record  # only for an http(s) server
    assert not list(run_dir.glob(".mlflow_run.json.*"))  # no temporary file left behind


def test_gate_missing_model_or_version_names_it(embedded):
    from mlflow import MlflowClient

    _, _, result, _ = embedded
    with pytest.raises(InputError, match="'no-such-model'"):
        gate_model(make_report(), tracking_uri=result.tracking_uri, model_name="no-such-model")
    client = MlflowClient(tracking_uri=result.tracking_uri, registry_uri=result.tracking_uri)
    client.create_registered_model("empty-model")
    with pytest.raises(InputError, match="'empty-model' has no versions"):
        gate_model(make_report(), tracking_uri=result.tracking_uri, model_name="empty-model")
    client.create_model_version("empty-model", source=f"{client.get_run(result.run_id).info.artifact_uri}/report.json")
    with pytest.raises(InputError, match="no version 7"):
        gate_model(make_report(), tracking_uri=result.tracking_uri, model_name="empty-model", version=7)


def test_file_store_uri_is_accepted(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run_dir = write_run_dir(tmp_path / "run", make_report())
    uri = (tmp_path / "mlruns").as_uri()
    result = log_audit(make_report(), run_dir, tracking_uri=uri, experiment="files", artifacts=[run_dir / "report.md"])
    assert result.ok, result.warning
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # the opt-in lasted only for the call
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = MlflowClient(tracking_uri=uri).get_run(result.run_id)
    assert run.data.metrics["lira-online.tpr_at_fpr_0.001"] == 0.003
    assert run.data.tags["dp_audit.verdict"] == "NO VIOLATION DETECTED"


# ---------------------------------------------------------------- stores that refuse


@pytest.fixture()
def refusing_server():
    """An HTTP server answering every request with 503, like a proxy in front of a dead MLflow."""

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self):
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"service unavailable")

        do_GET = do_POST = do_PATCH = do_DELETE = _refuse

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("kind", ["http-503", "bad-scheme"])
def test_refusing_store_returns_warning_not_exception(tmp_path, refusing_server, kind):
    uri = refusing_server if kind == "http-503" else "ftp://127.0.0.1/mlflow"
    run_dir = write_run_dir(tmp_path / "run", make_report())
    before = snapshot(run_dir)
    start = time.monotonic()
    result = log_audit(make_report(), run_dir, tracking_uri=uri, experiment="dpaudit", artifacts=[run_dir / "report.json"])
    assert time.monotonic() - start < 10
    assert isinstance(result, LogResult)
    assert not result.ok and result.run_id is None and result.tracking_uri == uri
    assert "\n" not in result.warning and uri in result.warning
    assert ("503" in result.warning) if kind == "http-503" else ("ftp" in result.warning)
    assert snapshot(run_dir) == before  # nothing written, nothing changed


def test_gate_against_refusing_store_raises_tracking_error(refusing_server):
    with pytest.raises(tracking.TrackingError, match="503"):
        gate_model(make_report(), tracking_uri=refusing_server, model_name="m")


# ---------------------------------------------------------------- input validation (no store touched)


def test_log_audit_bad_input(tmp_path):
    with pytest.raises(InputError, match="does-not-exist"):
        log_audit(make_report(), tmp_path / "does-not-exist", tracking_uri="sqlite:///x.db", experiment="e")
    with pytest.raises(InputError, match="list"):
        log_audit([1, 2], tmp_path, tracking_uri="sqlite:///x.db", experiment="e")
    with pytest.raises(InputError, match="'bounds'"):
        log_audit(make_report(bounds={"a": 1}), tmp_path, tracking_uri="sqlite:///x.db", experiment="e")
    with pytest.raises(InputError, match="experiment"):
        log_audit(make_report(), tmp_path, tracking_uri="sqlite:///x.db", experiment=" ")
    with pytest.raises(InputError, match="tracking URI"):
        log_audit(make_report(), tmp_path, tracking_uri="", experiment="e")
    assert list(tmp_path.iterdir()) == []


def test_upload_report_bad_input(tmp_path):
    with pytest.raises(InputError, match="report.json"):
        upload_report(tmp_path, tracking_uri="sqlite:///x.db", experiment="e")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        upload_report(tmp_path, tracking_uri="sqlite:///x.db", experiment="e")


@pytest.mark.parametrize("change, message", [
    ({"decision": "REPORTED", "exit_code": 0}, "REPORTED"),
    ({"decision": "VIOLATION", "exit_code": 0}, "'VIOLATION' with exit code 0"),
    ({"decision": "MAYBE", "exit_code": 0}, "'MAYBE'"),
])
def test_gate_needs_a_pass_or_fail_verdict(change, message):
    report = make_report()
    report["verdict"].update(change)
    with pytest.raises(InputError, match=message):
        gate_model(report, tracking_uri=UNUSED, model_name="m")
    with pytest.raises(InputError, match="no verdict"):
        gate_model(make_report(verdict=None), tracking_uri=UNUSED, model_name="m")


@pytest.mark.parametrize("kwargs, message", [
    ({"alias": "latest"}, "'latest'"),
    ({"alias": "v3"}, "'v3'"),
    ({"alias": "has space"}, "'has space'"),
    ({"version": 0}, "version"),
    ({"version": "two"}, "'two'"),
    ({"model_name": ""}, "model name"),
])
def test_gate_bad_arguments(kwargs, message):
    args = {"tracking_uri": UNUSED, "model_name": "m", **kwargs}
    with pytest.raises(InputError, match=message):
        gate_model(make_report(), **args)
    assert not Path("/nonexistent-dpaudit").exists()


def test_import_does_not_load_mlflow():
    import subprocess
    import sys

    code = "import sys, audit.tracking; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
