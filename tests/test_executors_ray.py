"""The Ray executor on a local 2-CPU Ray: same observations as in-process, retries, kill + resume.

One Ray session for the module (it takes seconds to start); every audit here joins it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from audit.cli import main  # noqa: E402
from audit.config import load_config  # noqa: E402
from audit.observations import load_observations, n_models_done  # noqa: E402
from audit.pipeline import run_audit, training  # noqa: E402

# Quiet Ray; the one unit the failing-audit test leaves unread would print its error.
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_BACKEND_LOG_LEVEL": "error",
         "RAY_IGNORE_UNHANDLED_ERRORS": "1"}

TINY = """
name = "tiny-ray"
seed = 0
output_dir = "{out}"
[data]
name = "fair"
n = 1000
population = 200
test = 500
[model]
widths = [64]
[trainer]
kind = "{kind}"
epochs = 2
batch_size = 64
[audit]
models = 5
canaries = 100
canary_kind = "mislabeled"
attacks = ["loss", "lira-offline-fixed"]
[executor]
kind = "{executor}"
block_models = 2
[mlflow]
enabled = false
"""


@pytest.fixture(scope="module")
def cluster():
    saved = {k: os.environ.get(k) for k in QUIET}
    os.environ.update(QUIET)  # the workers inherit the driver's environment
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def config(tmp_path, name, *, kind="plain", executor="ray"):
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(out=tmp_path / name, kind=kind, executor=executor))
    return path


def same_audit(run_a: Path, run_b: Path, report_a: dict, report_b: dict):
    a, b = load_observations(run_a / "observations"), load_observations(run_b / "observations")
    np.testing.assert_array_equal(a.keep, b.keep)
    np.testing.assert_array_equal(a.logits, b.logits)  # bit for bit, not approximately
    assert [m["train_accuracy"] for m in report_a["utility"]["models"]] == [m["train_accuracy"] for m in report_b["utility"]["models"]]
    bounds = lambda r: [(x["method"], x["epsilon_lower_bound"]) for x in r["bounds"]]  # noqa: E731
    assert bounds(report_a) == bounds(report_b)
    assert report_a["attacks"]["lira-offline-fixed"]["auc"] == report_b["attacks"]["lira-offline-fixed"]["auc"]


@pytest.fixture(scope="module")
def local_plain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    return tmp / "local", run_audit(load_config(config(tmp, "local", executor="local")), progress=False)


@pytest.mark.parametrize("kind", ["plain", "fast"])
def test_ray_gives_the_in_process_observations(tmp_path, cluster, kind, local_plain, capsys):
    if kind == "plain":
        local_dir, local = local_plain
    else:
        local_dir, local = tmp_path / "local", run_audit(load_config(config(tmp_path, "local", kind=kind, executor="local")), progress=False)
    distributed = run_audit(load_config(config(tmp_path, "ray", kind=kind)), progress=True)
    same_audit(local_dir, tmp_path / "ray", local, distributed)
    assert distributed["config"]["executor"]["kind"] == "ray"
    # the bar counts finished models across the cluster (fast units are blocks of 2, 2, 1)
    err = capsys.readouterr().err
    assert "models: 100%" in err and "5/5" in err
    assert ray.is_initialized()  # a Ray the caller started is left running


def test_a_unit_that_raises_once_is_retried(tmp_path, cluster, local_plain, monkeypatch):
    marker = str(tmp_path / "failed-once")
    real = training.train_unit

    def flaky(config, data, keep, indices):
        if 3 in indices and not os.path.exists(marker):  # fail model 3's first attempt only
            open(marker, "w").close()
            raise RuntimeError("injected failure")
        return real(config, data, keep, indices)

    monkeypatch.setattr(training, "train_unit", flaky)
    report = run_audit(load_config(config(tmp_path, "ray")), progress=False)
    assert os.path.exists(marker)  # it did fail once
    same_audit(local_plain[0], tmp_path / "ray", local_plain[1], report)


def test_a_unit_that_keeps_raising_fails_the_audit_with_its_error(tmp_path, cluster, monkeypatch):
    def broken(config, data, keep, indices):
        raise ValueError(f"model {indices} is broken")

    monkeypatch.setattr(training, "train_unit", broken)
    cfg = config(tmp_path, "ray")
    assert main(["run", str(cfg), "--no-progress", "--set", "executor.max_retries=1"]) == 3
    assert n_models_done(tmp_path / "ray" / "observations") == 0


def test_kill_the_driver_then_resume_finishes_the_rest(tmp_path, cluster, local_plain):
    """A `dpaudit run` joined to the cluster is SIGKILLed after some models; `--resume`
    trains only the missing ones (the finished model files are not rewritten) and the
    audit matches a clean in-process run."""
    cfg = config(tmp_path, "run")
    models = load_config(cfg).audit.models
    dpaudit = str(Path(sys.executable).with_name("dpaudit"))
    env = {**os.environ, **QUIET}
    proc = subprocess.Popen([dpaudit, "run", str(cfg), "--no-progress", "--set", f"executor.address='{cluster}'"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    obs_dir = tmp_path / "run" / "observations"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if (obs_dir / "manifest.json").exists() and n_models_done(obs_dir) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = n_models_done(obs_dir)
    assert 2 <= done < models and not (tmp_path / "run" / "report.json").exists()
    # The finished models are those the manifest lists: a model file is written before the
    # manifest names it, so a kill between the two leaves a file that --resume redoes.
    listed = json.loads((obs_dir / "manifest.json").read_text())["models"]
    before = {name: (obs_dir / name).stat().st_mtime_ns for name in listed}

    assert main(["run", str(cfg), "--no-progress", "--resume"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in obs_dir.glob("model-*.npz")}
    assert len(after) == models and all(after[name] == t for name, t in before.items())
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [m["index"] for m in report["utility"]["models"]] == list(range(models))
    same_audit(local_plain[0], tmp_path / "run", local_plain[1], report)
