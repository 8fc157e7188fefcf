"""End-to-end audits on tiny configs: verdicts, exit codes, resume after a kill, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit.cli import main
from audit.config import load_config, parse_config
from audit.errors import InputError
from audit.pipeline import run_audit, training

TINY_BLACKBOX = """
name = "tiny"
seed = 3
output_dir = "{out}"
[data]
name = "fair"
n = 1500
population = 100
test = 300
[model]
widths = [16]
[trainer]
kind = "plain"
epochs = 2
batch_size = 64
[audit]
models = 5
canaries = 120
canary_kind = "mislabeled"
attacks = ["loss", "lira-offline-fixed", "rmia"]
[mlflow]
enabled = false
"""

TINY_WHITEBOX = """
name = "tiny-wb"
output_dir = "{out}"
[data]
name = "fair"
n = 1500
population = 0
test = 300
[model]
name = "logreg"
[trainer]
kind = "{kind}"
variant = "{variant}"
epochs = 2
batch_size = 50
[dp]
noise_multiplier = 1.0
[audit]
canaries = 600
canary_kind = "gradient"
[mlflow]
enabled = false
"""


def write(tmp_path, text, name="audit.toml", **fmt):
    path = tmp_path / name
    path.write_text(text.format(**fmt))
    return path


def test_blackbox_nondp_audit_writes_a_complete_report(tmp_path, capsys):
    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["schema"] == "dpaudit.report/1" and report["mode"] == "non-dp"
    assert report["verdict"]["decision"] == "REPORTED"
    assert set(report["attacks"]) == {"loss", "lira-offline-fixed", "rmia"}
    for row in report["attacks"].values():
        assert [r["target_fpr"] for r in row["tpr_at_fpr"]] == [0.1, 0.01, 0.001, 0.0001]
        assert 0 <= row["auc"] <= 1 and row["targets"] == 5
    assert report["bounds"][0]["name"] == "one-run/lira-offline-fixed"
    from audit.observations import load_observations
    from audit.pipeline.analysis import auditable

    keep = load_observations(tmp_path / "run" / "observations").keep[:, :120]
    assert report["bounds"][0]["details"]["canaries"] == int(auditable(keep, 0).sum()) > 80
    assert len(report["utility"]["models"]) == 5 and 0.5 < report["utility"]["test_accuracy"] <= 1
    assert (tmp_path / "run" / "report.md").exists()
    assert "REPORTED" in capsys.readouterr().out


def test_risk_gate_on_a_nondp_audit(tmp_path):
    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    args = ["run", str(cfg), "--no-progress", "--set", "gate.attack='loss'", "--set", "gate.at_fpr=0.1"]
    assert main(args + ["--set", "gate.max_tpr=1.0"]) == 0
    assert main(args + ["--resume", "--set", "gate.max_tpr=0.0"]) == 1  # every model's TPR at 10% FPR is > 0


@pytest.mark.parametrize("kind, variant, expected", [("dp", "", 0), ("zoo", "no_clipping", 1)])
def test_whitebox_one_run_audit_catches_missing_clipping(tmp_path, kind, variant, expected):
    cfg = write(tmp_path, TINY_WHITEBOX, out=tmp_path / "run", kind=kind, variant=variant)
    assert main(["run", str(cfg), "--no-progress"]) == expected
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    v = report["verdict"]
    assert v["claimed_epsilon"] == pytest.approx(report["claimed"]["epsilon"]) and v["claimed_epsilon"] > 0
    if expected == 1:
        assert v["decision"] == "VIOLATION" and v["epsilon_lower_bound"] > v["claimed_epsilon"]
    else:
        assert v["decision"] == "NO VIOLATION DETECTED" and v["epsilon_lower_bound"] <= v["claimed_epsilon"]
        assert "could have shown at most" in v["message"] and "does not show that the model is private" in v["message"]


def test_resume_after_interrupt_redoes_nothing_and_matches_a_clean_run(tmp_path, monkeypatch):
    clean = load_config(write(tmp_path, TINY_BLACKBOX, "clean.toml", out=tmp_path / "clean"))
    reference = run_audit(clean, progress=False)

    config = load_config(write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run"))
    real = training.model_trainer
    calls = []

    def counting(cfg, fail_at=None, **kw):
        inner = real(cfg, **kw)

        def trainer(train, *, seed):
            calls.append(seed)
            if fail_at is not None and len(calls) == fail_at:
                raise KeyboardInterrupt
            return inner(train, seed=seed)

        return trainer

    monkeypatch.setattr(training, "model_trainer", lambda cfg, **kw: counting(cfg, fail_at=3, **kw))
    with pytest.raises(KeyboardInterrupt):
        run_audit(config, progress=False)
    assert not (tmp_path / "run" / "report.json").exists()  # nothing half-written
    assert len(calls) == 3

    calls.clear()
    monkeypatch.setattr(training, "model_trainer", lambda cfg, **kw: counting(cfg, **kw))
    with pytest.raises(InputError, match="--resume"):
        run_audit(config, progress=False)
    resumed = run_audit(config, resume=True, progress=False)
    assert len(calls) == 3  # models 2, 3, 4 only
    from audit.observations import load_observations

    a = load_observations(tmp_path / "run" / "observations")
    b = load_observations(tmp_path / "clean" / "observations")
    np.testing.assert_array_equal(a.keep, b.keep)
    np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-6)  # same seeds, same models
    assert resumed["bounds"][0]["epsilon_lower_bound"] == pytest.approx(reference["bounds"][0]["epsilon_lower_bound"])
    assert resumed["attacks"]["loss"]["auc"] == pytest.approx(reference["attacks"]["loss"]["auc"])


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    run_audit(load_config(cfg), progress=False)
    with pytest.raises(InputError, match=r"differs from the saved one in audit\.canaries$"):
        run_audit(load_config(cfg, ["audit.canaries=100"]), resume=True, progress=False)


def test_resume_accepts_a_run_saved_before_a_field_existed(tmp_path):
    """A run directory from a dpaudit without ``model.options`` (a field added later):
    resuming with that field at its default is the same audit; set otherwise, or with a
    section's value changed, it is not."""
    from audit.pipeline import rundir

    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    config = load_config(cfg)
    rundir.prepare(config, resume=False)
    saved = tmp_path / "run" / "config.json"
    old = json.loads(saved.read_text())
    del old["model"]["options"], old["trainer"]["timeout_s"]
    saved.write_text(json.dumps(old))
    assert rundir.prepare(config, resume=True) == tmp_path / "run"
    with pytest.raises(InputError, match=r"in trainer\.timeout_s$"):
        rundir.prepare(load_config(cfg, ["trainer.timeout_s=5.0"]), resume=True)
    with pytest.raises(InputError, match=r"in audit\.models$"):
        rundir.prepare(load_config(cfg, ["audit.models=6"]), resume=True)


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["dp.delta=1.0"], "dp.delta"),
        (["audit.models=0"], "audit.models"),
        (["audit.models='many'"], "audit.models"),
        (["audit.bogus=1"], "audit.bogus"),
        (["data.name='nope'"], "nope"),
        (["audit.canaries=100000"], "audit.canaries=100000"),
        (["trainer.kind='zoo'"], "variant"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, overrides, named):
    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    args = ["run", str(cfg), "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


def test_missing_and_malformed_config(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.toml")]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such file" in err[0] and "not valid TOML" in err[1]


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = write(tmp_path, TINY_BLACKBOX, out=blocker / "run")
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert "output_dir" in capsys.readouterr().err


def test_a_plugin_that_raises_is_a_runtime_failure(tmp_path):
    plugin = tmp_path / "bad_plugin.py"
    plugin.write_text("CLAIMED_EPSILON = 1.0\nCLAIMED_DELTA = 1e-5\ndef train(x, y, *, seed):\n    raise RuntimeError('boom')\n")
    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    dpaudit = str(Path(sys.executable).with_name("dpaudit"))
    out = subprocess.run(
        [dpaudit, "run", str(cfg), "--no-progress", "--set", "trainer.kind='blackbox-plugin'",
         "--set", f"trainer.plugin='{plugin}:train'"],
        capture_output=True, text=True,
    )
    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "boom" in lines[0] and "Traceback" not in out.stderr


def test_config_defaults_are_valid_and_documented_modes():
    cfg = parse_config({})
    assert cfg.mode == "non-dp"
    dp = parse_config({"trainer": {"kind": "dp"}, "dp": {"noise_multiplier": 1.0}})
    assert dp.mode == "dp"
    with pytest.raises(InputError, match="exactly one"):
        parse_config({"trainer": {"kind": "dp"}})


def test_ctrl_c_keeps_finished_models_and_says_resume(tmp_path, capsys, monkeypatch):
    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    real = training.model_trainer
    calls = []

    def interrupted(config, **kw):
        inner = real(config, **kw)

        def trainer(train, *, seed):
            calls.append(seed)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return inner(train, seed=seed)

        return trainer

    monkeypatch.setattr(training, "model_trainer", interrupted)
    assert main(["run", str(cfg), "--no-progress"]) == 130
    assert "--resume" in capsys.readouterr().err
    from audit.observations import n_models_done

    assert n_models_done(tmp_path / "run" / "observations") == 1


def test_auditable_canaries_depend_on_the_shadows_only():
    from audit.pipeline.analysis import auditable

    keep = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 1]], bool)
    # target 0: shadows are rows 1..3; canary 2 is never IN there, the rest are mixed
    np.testing.assert_array_equal(auditable(keep, 0), [True, True, False, True])
    flipped = keep.copy()
    flipped[0] = ~flipped[0]
    np.testing.assert_array_equal(auditable(flipped, 0), auditable(keep, 0))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_down_keeps_the_report_and_uploads_later(tmp_path, capsys):
    cfg = write(tmp_path, TINY_WHITEBOX, out=tmp_path / "run", kind="dp", variant="")
    dead = f"http://127.0.0.1:{free_port()}"
    args = ["run", str(cfg), "--no-progress", "--set", "mlflow.enabled=true", "--set", f"mlflow.tracking_uri='{dead}'"]
    assert main(args) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "local report is kept" in warning[0]
    assert (tmp_path / "run" / "report.json").exists() and not (tmp_path / "run" / "mlflow_run.json").exists()

    store = f"sqlite:///{tmp_path / 'later.db'}"
    assert main(["report", str(tmp_path / "run"), "--log-to-mlflow", "--tracking-uri", store]) == 0
    record = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=store).get_run(record["run_id"])
    assert run.data.tags["dp_audit.verdict"] == "NO VIOLATION DETECTED"
    assert "epsilon_lower_bound.one-run/likelihood-ratio" in run.data.metrics


def test_kill_9_then_resume_finishes_the_rest(tmp_path):
    import os
    import signal
    import time

    from audit.observations import n_models_done

    cfg = write(tmp_path, TINY_BLACKBOX.replace("epochs = 2", "epochs = 6"), out=tmp_path / "run")
    dpaudit = str(Path(sys.executable).with_name("dpaudit"))
    proc = subprocess.Popen([dpaudit, "run", str(cfg), "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    obs_dir = tmp_path / "run" / "observations"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (obs_dir / "manifest.json").exists() and n_models_done(obs_dir) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = n_models_done(obs_dir)
    assert 2 <= done < 5 and not (tmp_path / "run" / "report.json").exists()
    out = subprocess.run([dpaudit, "run", str(cfg), "--no-progress", "--resume"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert n_models_done(obs_dir) == 5
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert len(report["utility"]["models"]) == 5


def test_early_stopping_defence_runs(tmp_path):
    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    report = run_audit(load_config(cfg, ["trainer.patience=1", "trainer.epochs=4"]), progress=False)
    assert report["verdict"]["decision"] == "REPORTED" and len(report["utility"]["models"]) == 5


FAST = TINY_BLACKBOX.replace('kind = "plain"', 'kind = "fast"').replace("epochs = 2", "epochs = 3")


def test_fast_trainer_blocks_do_not_change_the_models(tmp_path):
    """Resuming the fast trainer trains the remaining models as a new block; each model
    draws only from its own generator and computes on its own rows of each batch, so one
    block or two give the same observations, bit for bit."""
    from audit.observations import ObservationRun
    from audit.pipeline import data

    config = load_config(write(tmp_path, FAST, out=tmp_path / "unused"))
    audit_data = data.build(config)
    keep = data.inclusion(config, len(audit_data.canaries))
    first = config.model_copy(update={"audit": config.audit.model_copy(update={"models": 2})})
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    training.train_blackbox(first, audit_data, keep, tmp_path / "two", progress=False)
    training.train_blackbox(config, audit_data, keep, tmp_path / "two", progress=False)
    training.train_blackbox(config, audit_data, keep, tmp_path / "one", progress=False)
    a = ObservationRun.open(tmp_path / "two" / "observations").load()
    b = ObservationRun.open(tmp_path / "one" / "observations").load()
    assert a.n_models == b.n_models == 5
    np.testing.assert_array_equal(a.logits, b.logits)


def test_fast_trainer_dp_audit_claims_the_accountants_epsilon(tmp_path):
    from audit.stats import claimed_epsilon

    cfg = write(tmp_path, FAST, out=tmp_path / "run")
    report = run_audit(load_config(cfg, ["dp.noise_multiplier=1.0"]), progress=False)
    m0 = report["utility"]["models"][0]
    expected = claimed_epsilon(noise_multiplier=1.0, sample_rate=64 / m0["n_train"], steps=m0["steps"], delta=1e-5).value
    assert report["mode"] == "dp" and report["claimed"]["epsilon"] == pytest.approx(expected)
    assert report["verdict"]["decision"] in ("VIOLATION", "NO VIOLATION DETECTED", "INCONCLUSIVE")
    assert report["verdict"]["epsilon_lower_bound"] <= report["verdict"]["power"]
    # A black-box DP-SGD audit tests model 0's claimed curve too (the bound attack's scores),
    # sharing the confidence; its effective noise has the signal test only (no readings).
    (test,) = report["claim_tests"]
    assert test["name"] == "claim-test/lira-offline-fixed" and test["confidence"] == 0.975
    assert f"sigma=1, q={64 / m0['n_train']:.4g}" in test["claim"] and f"T={m0['steps']}" in test["claim"]
    assert test["effective"]["details"]["noise_test"] is None


def test_label_only_output_defence_is_what_attacks_see(tmp_path):
    from audit.observations import load_observations

    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    run_audit(load_config(cfg, ["defence.label_only=true", "audit.attacks=['loss', 'label-only']"]), progress=False)
    obs = load_observations(tmp_path / "run" / "observations")
    probs = np.exp(obs.logits)
    # every query reveals a one-hot label and nothing else
    assert np.all(np.isclose(probs.max(-1), 1.0)) and np.all(np.isclose(probs.sum(-1), 1.0, atol=1e-6))


def test_distillation_defence_releases_the_student(tmp_path, monkeypatch):
    from trainers import plain

    calls = []
    real = plain.train_distilled
    monkeypatch.setattr(plain, "train_distilled", lambda *a, **k: calls.append(k["temperature"]) or real(*a, **k))
    cfg = write(tmp_path, TINY_BLACKBOX, out=tmp_path / "run")
    report = run_audit(load_config(cfg, ["defence.distillation=true", "defence.distill_temperature=3.0"]), progress=False)
    assert calls == [3.0] * 5 and len(report["utility"]["models"]) == 5
    with pytest.raises(InputError, match="distillation"):
        load_config(cfg, ["defence.distillation=true", "trainer.kind='fast'"])


def test_full_guess_share_raises_the_power(tmp_path):
    cfg = write(tmp_path, TINY_WHITEBOX, out=tmp_path / "a", kind="zoo", variant="no_clipping")
    plain = run_audit(load_config(cfg), progress=False)
    shared = run_audit(load_config(cfg, ["audit.full_guess_share=0.5", f"output_dir='{tmp_path / 'b'}'"]), progress=False)
    assert shared["verdict"]["power"] > plain["verdict"]["power"]


@pytest.mark.parametrize("scale, expected", [(1.0, 0), (0.1, 1)])
def test_gradient_canaries_audit_a_plugin_optimizer(tmp_path, scale, expected):
    """White-box one-run audit of a user's DPOptimizer loaded from an import path: the
    harness wraps it so that canaries go in before its own clipping; a plugin that adds a
    tenth of the noise it claims is caught."""
    plugin = tmp_path / "user_dp.py"
    plugin.write_text(
        "from tests.plugins_example import ScaledNoiseOptimizer\n"
        "class UserOptimizer(ScaledNoiseOptimizer):\n"
        "    def __init__(self, *args, **kwargs):\n"
        f"        super().__init__(*args, noise_scale={scale}, **kwargs)\n"
    )
    cfg = write(tmp_path, TINY_WHITEBOX, out=tmp_path / "run", kind="optimizer-plugin", variant="")
    assert main(["run", str(cfg), "--no-progress", "--set", f"trainer.plugin='{plugin}:UserOptimizer'"]) == expected
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["verdict"]["decision"] == ("VIOLATION" if expected else "NO VIOLATION DETECTED")
