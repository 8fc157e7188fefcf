"""The shipped examples (what `make demo` runs) and how a config's relative paths resolve."""

import json
import shutil
from pathlib import Path

import pytest

from audit.cli import main
from audit.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = ["--no-progress", "--set", "mlflow.enabled=false", "--set", "trainer.epochs=2"]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory that is not the checkout."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_every_example_passes_preflight_from_any_directory(name, tmp_path, elsewhere):
    from sklearn.datasets import load_breast_cancer

    from audit.pipeline.preflight import check

    copy = shutil.copytree(EXAMPLES, tmp_path / "examples")
    # own_data.toml's data, written as its header comment (and the README) say
    load_breast_cancer(as_frame=True).frame.to_csv(copy / "cancer.csv", index=False)
    checked = check(load_config(copy / name))
    assert not (elsewhere / "runs").exists()  # preflight writes nothing
    assert checked.config.name


def test_correct_optimizer_passes_and_planted_bug_is_caught(elsewhere):
    config = str(EXAMPLES / "whitebox_plugin.toml")
    assert main(["run", config, *FAST, "--set", 'output_dir="ok"']) == 0
    bug = ["--set", f'trainer.plugin="{EXAMPLES / "my_dp_optimizer.py"}:ForgetsToClip"', "--set", 'output_dir="bug"']
    assert main(["run", config, *FAST, *bug]) == 1
    ok, caught = (json.loads((elsewhere / d / "report.json").read_text())["verdict"] for d in ("ok", "bug"))
    assert ok["decision"] == "NO VIOLATION DETECTED" and ok["power"] > ok["claimed_epsilon"]
    assert caught["decision"] == "VIOLATION" and caught["epsilon_lower_bound"] > caught["claimed_epsilon"]
    # The noise measured on the never-inserted canaries pins the correct optimizer's noise
    # level: the effective epsilon (within the DP-SGD family) is nearly the claim, below it.
    assert 0.9 * ok["claimed_epsilon"] < ok["effective_epsilon"] < ok["claimed_epsilon"]
    # The planted bug adds the right noise but lets 1000 C through: the signal test sees it.
    tests = json.loads((elsewhere / "bug" / "report.json").read_text())["claim_tests"]
    assert {t["effective"]["details"]["decided_by"] for t in tests} == {"signal"}
    assert caught["effective_epsilon"] > caught["claimed_epsilon"]


def test_config_inputs_resolve_against_the_config_file(tmp_path, elsewhere):
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES, project)
    (project / "data.csv").write_text("a,b,label\n1,2,0\n")
    text = (project / "whitebox_plugin.toml").read_text().replace(
        'name = "fair"          # or: path = "my.csv" with label = "column"', 'path = "data.csv"\nlabel = "label"')
    (project / "audit.toml").write_text(text)
    config = load_config(project / "audit.toml")
    assert Path(config.data.path) == project / "data.csv"
    assert Path(config.trainer.plugin.rsplit(":", 1)[0]) == project / "my_dp_optimizer.py"
    assert config.data.name == "data"  # a user file is named after itself, never "fair"
    assert config.output_dir == "runs/whitebox-plugin"  # outputs stay relative to the working directory
    # --set values are command-line paths: relative to the working directory
    cli = load_config(project / "audit.toml", ['trainer.plugin="mine.py:Opt"', 'data.path="d.csv"'])
    assert cli.trainer.plugin == "mine.py:Opt" and cli.data.path == "d.csv"
    # module paths and absolute files are left alone
    absolute = load_config(project / "audit.toml", [])
    assert load_config(project / "audit.toml", [f'trainer.plugin="{absolute.trainer.plugin}"']).trainer.plugin == absolute.trainer.plugin
    (project / "mod.toml").write_text(text.replace('"my_dp_optimizer.py:MyDPOptimizer"', '"tests.plugins_example:ScaledNoiseOptimizer"'))
    assert load_config(project / "mod.toml").trainer.plugin == "tests.plugins_example:ScaledNoiseOptimizer"


def test_a_file_is_never_labelled_as_a_shipped_dataset(tmp_path):
    base = {"data": {"name": "purchase", "path": str(tmp_path / "mine.csv"), "label": "y"}}
    from audit.config import parse_config

    assert parse_config(base).data.name == "mine"
    assert parse_config(base, ['data.name="customers"']).data.name == "customers"


def _dpaudit(args, cwd, **env):
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("dpaudit"))
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **env})


def test_demo_leaky_model_visibly_leaks(elsewhere):
    """The demo's first run: a bound well above 1 and a TPR at 0.1% FPR in the tens of percent."""
    proc = _dpaudit(["run", str(EXAMPLES / "leaky_model.toml"), "--no-progress", "--set", "mlflow.enabled=false"],
                    elsewhere)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((elsewhere / "runs" / "leaky-model" / "report.json").read_text())
    assert report["verdict"]["decision"] == "REPORTED" and report["verdict"]["epsilon_lower_bound"] > 2
    best = max(r["tpr"] for a in report["attacks"].values() for r in a["tpr_at_fpr"] if r["target_fpr"] == 0.001)
    assert best > 0.3 and "TPR@0.1%" in proc.stdout
    # stderr holds only the few-shadows warning of lira-offline (K = 8): no Opacus, MLflow or torch noise
    assert [line for line in proc.stderr.splitlines() if "lira-offline: the median record" not in line] == []


def test_own_data_run_is_logged_under_its_own_name_with_its_numbers(tmp_path, elsewhere):
    """A user's CSV: MLflow params name the file, not a shipped dataset; a non-DP run has the
    top-level epsilon_lower_bound metric; MLflow's INFO lines stay out of the terminal."""
    from sklearn.datasets import load_breast_cancer

    copy = shutil.copytree(EXAMPLES, tmp_path / "examples")
    load_breast_cancer(as_frame=True).frame.to_csv(copy / "cancer.csv", index=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _dpaudit(["run", str(copy / "own_data.toml"), "--no-progress", "--set", "audit.models=5",
                     "--set", "trainer.epochs=3"], elsewhere, MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 0, proc.stderr
    assert "INFO" not in proc.stdout + proc.stderr
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=uri).search_runs(
        [mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("dpaudit-own-data").experiment_id])[0]
    assert run.data.params["data.name"] == "cancer" and "epsilon_lower_bound" in run.data.metrics


def test_dp_runs_print_no_accountant_warnings(elsewhere):
    """Opacus' "Optimal order is the largest alpha" (noise search, PRV domain, final epsilon)
    never reaches the terminal."""
    proc = _dpaudit(["run", str(EXAMPLES / "whitebox_plugin.toml"), "--no-progress", "--set", "mlflow.enabled=false",
                     "--set", "trainer.epochs=1"], elsewhere)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
