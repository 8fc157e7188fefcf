"""audit.tracking against a real ``mlflow server`` (SQLite backend, proxied artifacts) on 127.0.0.1.

One server per module (it takes 10-15 s to answer /health). Covers: logging an audit over HTTP,
the registry gate (pass sets the alias, violation removes it), and a server that is down
(quick warning, local files untouched) followed by ``upload_report`` to the live server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from audit.errors import InputError
from audit.tracking import TrackingError, gate_model, log_audit, metrics_from_report, upload_report
from tests.test_tracking import make_report, snapshot, violating, write_run_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server at {url} did not answer /health in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers: the process group this test started, nothing else."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--serve-artifacts", "--artifacts-destination", str(root / "artifacts")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True)
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        stop(proc)


def client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def test_log_audit_to_server(server, tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "run", make_report())
    result = log_audit(make_report(), run_dir, tracking_uri=server, experiment="server-audits",
                       artifacts=[run_dir / "report.json", run_dir / "figures"])
    assert result.ok, result.warning
    assert "View run" not in capsys.readouterr().out  # MLflow's URL printing stays off our stdout
    run = client(server).get_run(result.run_id)
    assert run.data.metrics == metrics_from_report(make_report())
    assert run.data.metrics["lira-online.tpr_at_fpr_0.001"] == 0.003
    assert run.data.tags["dp_audit.verdict"] == "NO VIOLATION DETECTED"
    assert run.data.tags["dp_audit.epsilon_lower_bound"] == "0.12"
    assert run.data.params["dp.noise_multiplier"] == "1.0"
    assert {a.path for a in client(server).list_artifacts(result.run_id)} == {"report.json", "figures"}
    record = json.loads((run_dir / "mlflow_run.json").read_text())
    assert record["run_url"] == f"{server}/#/experiments/{result.experiment_id}/runs/{result.run_id}"


def test_gate_pass_then_violation(server, tmp_path):
    mlflow = client(server)
    run_dir = write_run_dir(tmp_path / "run", make_report())
    logged = log_audit(make_report(), run_dir, tracking_uri=server, experiment="server-audits",
                       artifacts=[run_dir / "report.json"])
    assert logged.ok, logged.warning
    mlflow.create_registered_model("classifier")
    for _ in range(2):
        mlflow.create_model_version("classifier", source=f"runs:/{logged.run_id}/report.json", run_id=logged.run_id,
                                    await_creation_for=0)

    # A pass on version 1 points the alias at it and records the verdict.
    passed = gate_model(make_report(), tracking_uri=server, model_name="classifier", version=1, run_id=logged.run_id)
    assert passed.passed and passed.alias_set and not passed.alias_removed and passed.version == "1"
    assert mlflow.get_registered_model("classifier").aliases == {"dp-audited": "1"}
    assert mlflow.get_model_version("classifier", "1").tags == {
        "dp_audit.verdict": "NO VIOLATION DETECTED", "dp_audit.epsilon_lower_bound": "0.12",
        "dp_audit.claimed_epsilon": "2.31", "dp_audit.power": "4.2", "dp_audit.run_id": logged.run_id,
        "dp_audit.plugin": "null", "dp_audit.plugin_sha256": "null"}  # no plugin: no stale plugin tags either

    # A violation on the latest version (2) leaves version 1's alias alone.
    failed = gate_model(violating(make_report()), tracking_uri=server, model_name="classifier")
    assert failed.version == "2" and not failed.passed and not failed.alias_set and not failed.alias_removed
    assert mlflow.get_registered_model("classifier").aliases == {"dp-audited": "1"}
    tags = mlflow.get_model_version("classifier", "2").tags
    assert tags["dp_audit.verdict"] == "VIOLATION" and tags["dp_audit.epsilon_lower_bound"] == "3.5"
    assert tags["dp_audit.run_id"] == "null"

    # A violation on the aliased version removes the alias; its tags now say VIOLATION.
    removed = gate_model(violating(make_report()), tracking_uri=server, model_name="classifier", version="1")
    assert removed.alias_removed and not removed.passed
    assert mlflow.get_registered_model("classifier").aliases == {}
    assert mlflow.get_model_version("classifier", "1").tags["dp_audit.verdict"] == "VIOLATION"
    assert mlflow.get_model_version("classifier", "1").tags["dp_audit.run_id"] == "null"  # no stale run id

    # A custom alias on the latest version.
    custom = gate_model(make_report(), tracking_uri=server, model_name="classifier", alias="audited-ok")
    assert custom.alias_set and mlflow.get_registered_model("classifier").aliases == {"audited-ok": "2"}

    with pytest.raises(InputError, match="'missing-model'"):
        gate_model(make_report(), tracking_uri=server, model_name="missing-model")
    with pytest.raises(InputError, match="no version 9"):
        gate_model(make_report(), tracking_uri=server, model_name="classifier", version=9)


def test_server_down_then_upload(server, tmp_path):
    report = make_report()
    run_dir = write_run_dir(tmp_path / "run", report)
    before = snapshot(run_dir)
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    start = time.monotonic()
    result = log_audit(report, run_dir, tracking_uri=down, experiment="late", artifacts=[run_dir / "report.json"])
    elapsed = time.monotonic() - start
    assert not result.ok and result.run_id is None
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert "\n" not in result.warning and down in result.warning and "Connection refused" in result.warning
    assert snapshot(run_dir) == before

    start = time.monotonic()
    with pytest.raises(TrackingError):
        gate_model(report, tracking_uri=down, model_name="classifier")
    assert time.monotonic() - start < 5

    uploaded = upload_report(run_dir, tracking_uri=server, experiment="late")
    assert uploaded.ok, uploaded.warning
    mlflow = client(server)
    run = mlflow.get_run(uploaded.run_id)
    assert run.data.tags["dp_audit.verdict"] == "NO VIOLATION DETECTED"
    assert run.data.metrics["epsilon_lower_bound.one-run/lira-online"] == 0.12
    assert {a.path for a in mlflow.list_artifacts(uploaded.run_id)} == {"report.json", "report.md", "roc.png", "figures"}
    local = Path(mlflow.download_artifacts(uploaded.run_id, "report.json", str(tmp_path)))
    assert local.read_bytes() == (run_dir / "report.json").read_bytes()
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == uploaded.run_id


def gate_config() -> str:
    """The pipeline tests' tiny white-box audit, logging to a server."""
    from tests.test_pipeline import TINY_WHITEBOX

    return TINY_WHITEBOX.replace('name = "tiny-wb"', 'name = "{name}"').replace(
        "enabled = false", 'tracking_uri = "{uri}"\nexperiment = "gate-e2e"'
    )


def test_dpaudit_gate_end_to_end(server, tmp_path, capsys):
    """`dpaudit gate` on a real server: a correct DP-SGD passes and gets the alias, a run
    with clipping removed is a violation and loses it; exit codes tell CI."""
    from audit.cli import main

    mlflow = client(server)
    mlflow.create_registered_model("released-model")
    training_run = mlflow.create_run(mlflow.create_experiment("training")).info.run_id
    mlflow.create_model_version("released-model", source=f"runs:/{training_run}/model", run_id=training_run,
                                await_creation_for=0)
    runs = {}
    for name, kind, variant, code in (("correct", "dp", "", 0), ("broken", "zoo", "no_clipping", 1)):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(gate_config().format(name=name, out=tmp_path / name, kind=kind, variant=variant, uri=server))
        assert main(["gate", str(cfg), "--model-name", "released-model", "--no-progress"]) == code
        runs[name] = json.loads((tmp_path / name / "mlflow_run.json").read_text())["run_id"]
        version = mlflow.get_model_version("released-model", "1")
        assert version.tags["dp_audit.run_id"] == runs[name]
        run = mlflow.get_run(runs[name])
        assert run.data.tags["dp_audit.verdict"] == version.tags["dp_audit.verdict"]
        assert float(run.data.tags["dp_audit.claimed_epsilon"]) > 0
        if code == 0:
            assert mlflow.get_registered_model("released-model").aliases == {"dp-audited": "1"}
            assert version.tags["dp_audit.verdict"] == "NO VIOLATION DETECTED"
        else:
            assert mlflow.get_registered_model("released-model").aliases == {}
            assert version.tags["dp_audit.verdict"] == "VIOLATION"
            assert float(version.tags["dp_audit.epsilon_lower_bound"]) > float(version.tags["dp_audit.claimed_epsilon"])
