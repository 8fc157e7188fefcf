"""The command target (trainers.command): a black-box trainer run as a process, with the
script tests/fixtures/command_trainer.py (an honest Gaussian-mechanism classifier and its
misbehaviours). Unit tests of one fit, then audits through `dpaudit run`."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audit.cli import main
from audit.config import load_config, parse_config
from audit.errors import InputError
from audit.pipeline import preflight
from trainers.command import PASSED_ENV, CommandFailed, child_environment, load_command_trainer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "command_trainer.py"
DPAUDIT = str(Path(sys.executable).with_name("dpaudit"))


def argv(*extra: str) -> list[str]:
    return [sys.executable, str(FIXTURE), "{train}", "{query}", "{out}", "{seed}", *extra]


def trainer(*extra: str, timeout_s: float = 60.0, queries=()):
    return load_command_trainer(argv(*extra), epsilon=1.0, delta=1e-5, timeout_s=timeout_s).with_queries(*queries)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = (rng.normal(size=(200, 4)) + y[:, None]).astype(np.float32)
    return x[:120], y[:120], x[120:160], x[160:]


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ one model


@pytest.mark.parametrize("mode", ["private", "csv"])
def test_one_run_answers_the_training_records_and_every_declared_query(tmp_path, data, mode):
    x, y, q1, q2 = data
    log = tmp_path / "runs.jsonl"
    model = trainer("--mode", mode, "--log", str(log), queries=(q1, q2)).fit(x, y, seed=7)
    answers = [model.predict_proba(block) for block in (q1, x, q2, q1.copy())]
    assert [a.shape for a in answers] == [(40, 2), (120, 2), (40, 2), (40, 2)]
    np.testing.assert_array_equal(answers[0], answers[3])  # looked up by content, not identity
    assert (answers[1].argmax(1) == y).mean() > 0.7  # a working classifier
    with pytest.raises(LookupError, match="declared before training"):
        model.predict_proba(q1[:10])
    (run,) = log_lines(log)  # the command ran once for all of them
    work = Path(run["cwd"])
    assert work.name.startswith("dpaudit-command-") and not work.exists()  # its own directory, removed
    assert run["argv"][1:5] == [str(work / "train.npz"), str(work / "query.npz"), str(work / "out.npy"), "7"]
    if mode == "csv":  # the same model written as CSV text reads the same (up to the text's precision)
        npy = trainer(queries=(q1, q2)).fit(x, y, seed=7)
        np.testing.assert_allclose(answers[1], npy.predict_proba(x), rtol=1e-12)


def test_the_command_sees_only_the_documented_environment(tmp_path, data, monkeypatch):
    x, y, q1, _ = data
    monkeypatch.setenv("DPAUDIT_TEST_SENTINEL", "must-not-leak")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    log = tmp_path / "runs.jsonl"
    trainer("--log", str(log), queries=(q1,)).fit(x, y, seed=11)
    env = log_lines(log)[0]["env"]
    assert "DPAUDIT_TEST_SENTINEL" not in env and "PYTHONPATH" not in env
    assert env["DPAUDIT_SEED"] == "11" and env["PATH"] == os.environ["PATH"]
    # LC_CTYPE may be set by the child Python itself (PEP 538 locale coercion), not passed by dpaudit
    assert set(env) <= {*PASSED_ENV, "DPAUDIT_SEED", "LC_CTYPE"}
    expected = {k: os.environ[k] for k in PASSED_ENV if k in os.environ} | {"DPAUDIT_SEED": "3"}
    assert child_environment(3) == expected


def test_a_crash_is_one_line_with_the_exit_code_and_the_tail_of_stderr(data):
    x, y, q1, _ = data
    with pytest.raises(CommandFailed) as err:
        trainer("--mode", "crash", queries=(q1,)).fit(x, y, seed=5)
    message = str(err.value)
    assert "\n" not in message and "(model seed 5)" in message and "exited with code 3" in message
    assert "RuntimeError: the loss is nan" in message and "training step 7" in message
    assert "training step 3" not in message  # only the last five lines of stderr


def test_a_timeout_kills_the_whole_process_group(tmp_path, data):
    x, y, q1, _ = data
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(CommandFailed, match=r"timed out after 3 s \(trainer.timeout_s\)"):
        trainer("--mode", "hang", "--pid-out", str(pid_file), timeout_s=3, queries=(q1,)).fit(x, y, seed=0)
    assert time.monotonic() - start < 20
    child = int(pid_file.read_text())  # a process the command started, in its group
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its reaper counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


@pytest.mark.parametrize("mode, problem", [
    ("none", "did not write {out}"),
    ("garbage", "neither a .npy file nor CSV numbers"),
    ("shape", "returned shape (159, 2); expected [160, classes>=2]"),
    ("unnormalised", "rows summing to 1 +- 1"),
    ("nan", "negative or non-finite probabilities"),
])
def test_missing_or_malformed_output_is_a_runtime_failure(data, mode, problem):
    x, y, q1, _ = data
    with pytest.raises(CommandFailed) as err:
        trainer("--mode", mode, queries=(q1,)).fit(x, y, seed=0)
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_bad_commands_are_refused_before_any_run(tmp_path):
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/sh\n")  # not executable
    cases = [
        (["no-such-dpaudit-trainer", "{train}", "{query}", "{out}"], "not found on PATH"),
        ([str(script), "{train}", "{query}", "{out}"], "no such executable file (or not executable)"),
        (["python3", "{train}", "{query}"], "lacks the placeholder {out}"),
        (["python3", "{train}", "{query}", "{out}", "{model}"], "unknown placeholder {model}"),
        (["python3", "{train}", "{query}", "{out}", "{seed:x}"], "unknown placeholder {seed:x}"),
        (["python3", "{train}", "{query}", "{out}", "{"], "literal braces"),
        ([], "needs command"),
    ]
    for command, message in cases:
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
            load_command_trainer(command, epsilon=1.0, delta=1e-5, timeout_s=1.0)


def test_config_paths_resolve_against_the_config_file_and_the_claim_is_required(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("")
    (project / "audit.toml").write_text(
        '[trainer]\nkind = "command"\n'
        'command = ["python3", "train.py", "{train}", "{query}", "{out}", "--data", "absent.csv", "./run.sh"]\n'
        "[dp]\nclaimed_epsilon = inf\n"
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(project / "audit.toml")
    assert config.trainer.command == ["python3", str(project / "train.py"), "{train}", "{query}", "{out}",
                                      "--data", "absent.csv", "./run.sh"]  # only files next to the config
    assert config.mode == "non-dp"  # inf: a trainer without DP
    resolved = preflight.resolve_command(config)
    assert resolved.dp.claimed_epsilon is None and resolved.mode == "non-dp"
    # --set values are relative to the working directory; preflight makes them absolute,
    # since the command runs in its own temporary directory
    (tmp_path / "mine.py").write_text("")
    cli = load_config(project / "audit.toml", ['trainer.command=["python3", "mine.py", "{train}", "{query}", "{out}"]'])
    assert cli.trainer.command[1] == "mine.py"
    assert preflight.resolve_command(cli).trainer.command[1] == str(tmp_path / "mine.py")
    with pytest.raises(InputError, match="states no claim"):
        preflight.resolve_command(parse_config({"trainer": {"kind": "command", "command": argv()}}))
    with pytest.raises(InputError, match="claimed_epsilon"):
        parse_config({"dp": {"claimed_epsilon": float("nan")}})
    with pytest.raises(InputError, match="timeout_s"):
        parse_config({"trainer": {"kind": "command", "command": argv(), "timeout_s": 0}})


# ------------------------------------------------------------------ audits through `dpaudit run`

TINY = """
name = "tiny-command"
seed = 3
output_dir = "{out}"
[data]
name = "fair"
n = 1500
population = 100
test = 300
[trainer]
kind = "command"
command = {command}
[dp]
{claim}
[audit]
models = 5
canaries = 120
canary_kind = "mislabeled"
attacks = ["loss", "lira-offline-fixed"]
[mlflow]
enabled = false
"""


def write(tmp_path: Path, command: list[str], claim: str = "claimed_epsilon = 1.0") -> Path:
    path = tmp_path / "audit.toml"
    path.write_text(TINY.format(out=tmp_path / "run", command=json.dumps(command), claim=claim))
    return path


def test_an_honest_command_is_not_flagged(tmp_path):
    """The fixture's private mode is (0.5, 1e-5)-DP, claimed as epsilon = 1. With 120
    canaries the design could show epsilon up to about 3, above the claim, so the honest
    outcome is NO VIOLATION DETECTED (not INCONCLUSIVE, which needs power <= the claim)."""
    cfg = write(tmp_path, argv())
    assert main(["run", str(cfg), "--no-progress"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    v = report["verdict"]
    assert v["decision"] == "NO VIOLATION DETECTED" and v["epsilon_lower_bound"] <= 1.0 < v["power"]
    assert report["claimed"]["epsilon"] == 1.0 and "dp.claimed_epsilon" in report["claimed"]["source"]
    assert len(report["utility"]["models"]) == 5 and report["utility"]["test_accuracy"] > 0.55
    plugin = report["plugin"]  # provenance, as for a plugin: the command line and its script's hash
    assert plugin["command"] == argv() and plugin["file"] == str(FIXTURE)
    assert plugin["sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    from audit.tracking import tags_from_report

    tags = tags_from_report(report)
    assert tags["dp_audit.plugin"] == plugin["path"] and tags["dp_audit.plugin_sha256"] == plugin["sha256"]


def test_a_memorising_command_claimed_at_small_epsilon_is_a_violation(tmp_path):
    cfg = write(tmp_path, argv("--mode", "leak"))
    assert main(["run", str(cfg), "--no-progress"]) == 1
    v = json.loads((tmp_path / "run" / "report.json").read_text())["verdict"]
    assert v["decision"] == "VIOLATION" and v["epsilon_lower_bound"] > 2 * v["claimed_epsilon"]


def test_a_crashing_command_is_a_runtime_failure_with_one_line(tmp_path, capsys):
    cfg = write(tmp_path, argv("--mode", "crash"))
    assert main(["run", str(cfg), "--no-progress"]) == 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dpaudit: failure:") and "exited with code 3" in line and "the loss is nan" in line
    assert (tmp_path / "run" / "config.json").exists()  # kept, as for a plugin that raises: --resume continues


@pytest.mark.parametrize("command, claim, named", [
    ([], "claimed_epsilon = 1.0", "trainer: kind = 'command' needs command"),
    (argv()[:4], "claimed_epsilon = 1.0", "lacks the placeholder {out}"),
    (argv("{model}"), "claimed_epsilon = 1.0", "unknown placeholder {model}"),
    (["no-such-dpaudit-trainer", "{train}", "{query}", "{out}"], "claimed_epsilon = 1.0", "not found on PATH"),
    (argv(), "", "states no claim"),
])
def test_bad_config_exits_2_with_one_line_and_no_run_directory(tmp_path, capsys, command, claim, named):
    cfg = write(tmp_path, command, claim)
    assert main(["run", str(cfg), "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dpaudit: error:") and named in line
    assert not (tmp_path / "run").exists()


def test_kill_9_then_resume_finishes_the_rest(tmp_path):
    from audit.observations import n_models_done

    cfg = write(tmp_path, argv("--sleep", "0.5"))
    # The command killed with dpaudit finishes on its own; its temporary directory stays here.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([DPAUDIT, "run", str(cfg), "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    obs_dir = tmp_path / "run" / "observations"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (obs_dir / "manifest.json").exists() and n_models_done(obs_dir) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, 9)
    proc.wait()
    done = n_models_done(obs_dir)
    assert 1 <= done < 5 and not (tmp_path / "run" / "report.json").exists()
    out = subprocess.run([DPAUDIT, "run", str(cfg), "--no-progress", "--resume"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert n_models_done(obs_dir) == 5
    assert len(json.loads((tmp_path / "run" / "report.json").read_text())["utility"]["models"]) == 5
