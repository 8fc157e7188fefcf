"""Issue 13: verdicts that cannot be fooled, and bad input refused before any work starts.

Every test here failed before its fix: a plugin's own claim was ignored, empty statistic
lists passed the gate, a risk gate decided on the point estimate, bad inputs left run
directories behind or exited 3 after training, MLFLOW_TRACKING_URI was ignored.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from audit.cli import main
from audit.pipeline.verdict import dp_verdict, risk_verdict
from tests.test_pipeline import TINY_BLACKBOX

TINY = TINY_BLACKBOX.format(out="run").replace(
    'attacks = ["loss", "lira-offline-fixed", "rmia"]', 'attacks = ["loss", "lira-offline-fixed"]\nbound_attacks = ["loss"]')

# A black-box "trainer" that memorises its training set: it outputs the training label of
# a record it has seen, and uniform probabilities otherwise. Whatever it claims, it leaks.
MEMORISER = '''
import numpy as np
{claim}

def train(x, y, *, seed):
    seen = {{row.tobytes(): int(label) for row, label in zip(np.asarray(x, np.float32), y)}}
    k = int(max(y.max() + 1, 2))

    def predict_proba(q):
        out = np.full((len(q), k), {uniform})
        for i, row in enumerate(np.asarray(q, np.float32)):
            label = seen.get(row.tobytes())
            if label is not None:
                out[i] = 0.0
                out[i, label] = 1.0
        return out
    return predict_proba
'''


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "audit.toml").write_text(TINY)
    return tmp_path


def plugin(tmp_path, claim="CLAIMED_EPSILON = 1.0\nCLAIMED_DELTA = 1e-5", uniform="1.0 / k", name="memoriser.py"):
    path = tmp_path / name
    path.write_text(MEMORISER.format(claim=claim, uniform=uniform))
    return path


def run(*args):
    return main(["run", "audit.toml", "--no-progress", *args])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dpaudit: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


# ---------------------------------------------------------------- 1. a plugin's own claim


def test_a_blackbox_plugins_own_claim_is_audited(workdir, capsys):
    """Before: CLAIMED_EPSILON = 1.0 in the module, none in the config -> "Non-DP audit", exit 0."""
    path = plugin(workdir)
    code = run("--set", f"trainer.kind='blackbox-plugin'", "--set", f"trainer.plugin='{path}:train'",
               "--set", "audit.canaries=300", "--set", "data.n=2000")
    report = json.loads((workdir / "run" / "report.json").read_text())
    assert report["mode"] == "dp" and report["claimed"]["epsilon"] == 1.0
    assert report["verdict"]["decision"] == "VIOLATION" and code == 1
    assert report["verdict"]["epsilon_lower_bound"] > 1.0
    # 11: the plugin's path and file hash are recorded
    assert report["plugin"]["path"] == f"{path}:train"
    assert report["plugin"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_claim_in_the_config_must_agree_with_the_plugins(workdir, capsys):
    path = plugin(workdir)
    code = run("--set", "trainer.kind='blackbox-plugin'", "--set", f"trainer.plugin='{path}:train'",
               "--set", "dp.claimed_epsilon=100.0")
    assert code == 2 and "contradicts the plugin's CLAIMED_EPSILON" in one_error_line(capsys)
    assert not (workdir / "run").exists()


def test_a_plugin_claiming_infinity_is_a_nondp_audit(workdir):
    path = plugin(workdir, claim="CLAIMED_EPSILON = float('inf')\nCLAIMED_DELTA = 0.0")
    assert run("--set", "trainer.kind='blackbox-plugin'", "--set", f"trainer.plugin='{path}:train'") == 0
    report = json.loads((workdir / "run" / "report.json").read_text())
    assert report["mode"] == "non-dp" and report["verdict"]["decision"] == "REPORTED"


def test_a_plugin_failing_validation_late_leaves_nothing_behind(workdir, capsys):
    """12: outputs are checked when model 0 is queried; the run directory is then removed,
    so the corrected rerun is not refused with 'already holds a run'."""
    bad = plugin(workdir, uniform="-1.0")  # negative probabilities for unseen records
    args = ["--set", "trainer.kind='blackbox-plugin'"]
    assert run(*args, "--set", f"trainer.plugin='{bad}:train'") == 2
    assert "negative or non-finite" in one_error_line(capsys)
    assert not (workdir / "run").exists()
    good = plugin(workdir, name="good.py")
    assert run(*args, "--set", f"trainer.plugin='{good}:train'") in (0, 1)


# ---------------------------------------------------------------- 4. no pass without power


@pytest.mark.parametrize("override", ["audit.statistics=[]", "audit.bound_attacks=[]", "audit.attacks=[]",
                                      "audit.fprs=[]"])
def test_empty_lists_are_bad_input(workdir, capsys, override):
    assert run("--set", override) == 2
    assert override.split("=")[0] in one_error_line(capsys)
    assert not (workdir / "run").exists()


def _bound(lb, power, name="one-run/x"):
    return {"name": name, "epsilon_lower_bound": lb, "details": {"power": power}}


def test_a_dp_verdict_without_power_is_inconclusive_and_fails():
    v = dp_verdict([_bound(0.0, 0.8)], 2.0, 0.95)
    assert v["decision"] == "INCONCLUSIVE" and v["exit_code"] == 1
    assert dp_verdict([_bound(0.0, 0.8)], 2.0, 0.95, on_inconclusive="pass")["exit_code"] == 0
    assert dp_verdict([], 2.0, 0.95)["decision"] == "INCONCLUSIVE"  # nothing measured
    assert dp_verdict([_bound(0.1, 50.0)], float("inf"), 0.95)["decision"] == "INCONCLUSIVE"
    assert dp_verdict([_bound(0.1, 2.0)], 2.0, 0.95)["decision"] == "INCONCLUSIVE"  # power = claim
    assert dp_verdict([_bound(0.1, 2.5)], 2.0, 0.95)["decision"] == "NO VIOLATION DETECTED"
    assert dp_verdict([_bound(2.1, 2.5)], 2.0, 0.95)["decision"] == "VIOLATION"


def test_a_whitebox_audit_too_small_to_see_the_claim_is_inconclusive(workdir, capsys):
    """Ten gradient canaries cannot show epsilon above about 1: before, exit 0 and NO VIOLATION."""
    (workdir / "wb.toml").write_text(TINY.replace('kind = "plain"', 'kind = "dp"')
                                     .replace('canary_kind = "mislabeled"', 'canary_kind = "gradient"')
                                     .replace("canaries = 120", "canaries = 10")
                                     + "[dp]\nnoise_multiplier = 1.0\n")
    assert main(["run", "wb.toml", "--no-progress"]) == 1
    report = json.loads((workdir / "run" / "report.json").read_text())
    assert report["verdict"]["decision"] == "INCONCLUSIVE"
    assert report["verdict"]["power"] <= report["claimed"]["epsilon"]
    assert "INCONCLUSIVE" in capsys.readouterr().out


# ---------------------------------------------------------------- 3. the risk gate


def _attacks(tp, n_members, n_nonmembers=2000, fpr=0.001):
    from audit.stats.roc import tpr_at_fpr_from_curve

    from audit.stats.roc import roc_curve

    scores = np.r_[np.full(tp, 10.0), np.zeros(n_members - tp), np.linspace(-5, 5, n_nonmembers)]
    members = np.r_[np.ones(n_members, bool), np.zeros(n_nonmembers, bool)]
    row = tpr_at_fpr_from_curve(roc_curve(scores, members), fpr).to_dict()
    return {"loss": {"auc": 0.5, "tpr_at_fpr": [row]}}, row


def test_the_risk_gate_decides_on_the_upper_end_of_the_interval_by_default():
    """TPR 0.55% with interval [0.25%, 1.05%] against a limit of 0.5%: the point estimate
    alone passes a close call either way; the default passes only a whole interval within."""
    attacks, row = _attacks(tp=11, n_members=2000)
    lo, hi = row["tpr_interval"]
    assert lo < 0.005 < hi and row["tpr"] == pytest.approx(0.0055)
    kw = dict(attack="loss", at_fpr=0.001, max_tpr=0.005)
    assert risk_verdict(attacks, [], **kw)["decision"] == "GATE FAILED"
    assert risk_verdict(attacks, [], **kw, decide_on="point")["decision"] == "GATE FAILED"
    assert risk_verdict(attacks, [], **kw, decide_on="lower")["decision"] == "GATE PASSED"
    attacks, row = _attacks(tp=8, n_members=2000)  # 0.4%: the estimate is within, the interval is not
    assert risk_verdict(attacks, [], **kw, decide_on="point")["decision"] == "GATE PASSED"
    failed = risk_verdict(attacks, [_bound(0.395, 3.0)], **kw)
    assert failed["decision"] == "GATE FAILED" and "upper end" in failed["message"]
    assert failed["epsilon_lower_bound"] == 0.395  # before: the tag read 'null'


def test_the_risk_gate_cannot_pass_an_fpr_it_could_not_measure():
    attacks, _ = _attacks(tp=0, n_members=200, n_nonmembers=300)
    v = risk_verdict(attacks, [], attack="loss", at_fpr=0.001, max_tpr=0.5)
    assert v["decision"] == "INCONCLUSIVE" and v["exit_code"] == 1


def test_a_gate_failed_run_tags_its_bound(workdir):
    from audit.tracking import tags_from_report

    v = risk_verdict(_attacks(tp=11, n_members=2000)[0], [_bound(0.395, 3.0)], attack="loss", at_fpr=0.001,
                     max_tpr=0.005)
    assert tags_from_report({"verdict": v})["dp_audit.epsilon_lower_bound"] == "0.395"


def test_a_missing_registered_model_is_found_before_any_work(workdir, capsys):
    code = main(["gate", "audit.toml", "--no-progress", "--model-name", "nowhere", "--set", "mlflow.enabled=true",
                 "--set", "gate.max_tpr=0.5", "--set", "gate.attack='loss'"])
    assert code == 2 and "registered model 'nowhere' not found" in one_error_line(capsys)
    assert not (workdir / "run").exists()


def test_a_nondp_gate_without_a_threshold_is_refused_before_any_work(workdir, capsys):
    assert main(["gate", "audit.toml", "--no-progress", "--model-name", "m"]) == 2
    assert "max_tpr" in one_error_line(capsys)
    assert not (workdir / "run").exists()


# ---------------------------------------------------------------- 6, 8, 9. bad input, before any work


BAD = [
    ("seed=-1", "seed"),
    ("model.widths=[-4]", "model.widths"),
    ("model.widths=[0]", "model.widths"),
    ("audit.canaries=1000000000000", "audit.canaries"),
    ("audit.models=1000000000000", "audit.models"),
    ("gate.attack='bogus'", "gate.attack"),
    ("audit.attacks=['bogus']", "audit.attacks"),
    ("dp.target_epsilon=inf", "dp.target_epsilon"),
    ("dp.noise_multiplier=inf", "dp.noise_multiplier"),
    ("trainer.lr=inf", "trainer.lr"),
    ("trainer.lr=nan", "trainer.lr"),
    ("name=''", "name"),
    ("trainer.epochs=100000000", "trainer.epochs"),
    ("trainer.variant='bogus' --set trainer.kind='zoo' --set dp.noise_multiplier=1.0", "trainer.variant"),
    ("model.name='cnn'", "model.name"),  # a CNN on tabular data
    ("audit.augment='shift'", "audit.augment"),  # image shifts of tabular data
    ("dp.target_epsilon=1e-9 --set trainer.kind='dp'", "dp.target_epsilon"),  # Opacus: budget too low
    ("mlflow.experiment=''", "mlflow.experiment"),
]


@pytest.mark.parametrize("override, field", BAD)
def test_bad_input_exits_2_naming_the_value_before_any_work(workdir, capsys, override, field):
    args = [a for item in override.split(" --set ") for a in ("--set", item)]
    assert run(*args) == 2
    assert field in one_error_line(capsys)
    assert not (workdir / "run").exists()


def test_observations_larger_than_memory_are_refused_before_any_work(workdir, capsys, monkeypatch):
    from audit.pipeline import preflight

    monkeypatch.setattr(preflight, "_physical_memory", lambda: 2**20)  # a 1 MiB machine
    assert run("--set", "audit.models=200") == 2
    assert "audit.models = 200" in one_error_line(capsys)
    assert not (workdir / "run").exists()


def test_gate_at_fpr_must_be_among_the_measured_fprs(workdir, capsys):
    assert run("--set", "gate.max_tpr=0.1", "--set", "gate.attack='loss'", "--set", "gate.at_fpr=0.5") == 2
    assert "gate.at_fpr" in one_error_line(capsys)
    assert not (workdir / "run").exists()


@pytest.mark.parametrize("content, suffix", [
    (b"a,b,label\n1,2,0\n1,2,3,4,5\n1,2,1\n", ".csv"),
    (bytes(range(256)) * 4, ".csv"),
    (b"not parquet", ".parquet"),
])
def test_unreadable_user_data_exits_2_before_any_work(workdir, capsys, content, suffix):
    data = workdir / f"data{suffix}"
    data.write_bytes(content)
    assert run("--set", f"data.path='{data}'", "--set", "data.label='label'") == 2
    assert data.name in one_error_line(capsys)
    assert not (workdir / "run").exists()


# ---------------------------------------------------------------- 10. MLflow conventions


def test_mlflow_tracking_uri_is_honoured_when_the_config_names_none(workdir, monkeypatch):
    from audit.tracking import resolve_tracking_uri

    uri = f"sqlite:///{workdir / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert resolve_tracking_uri(None)[0] == uri
    assert resolve_tracking_uri("sqlite:///x.db")[0] == "sqlite:///x.db"  # the config wins
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None)[0] == f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def test_report_log_to_mlflow_twice_logs_one_run(workdir, capsys):
    from mlflow import MlflowClient

    assert run("--set", "mlflow.enabled=true") == 0
    capsys.readouterr()
    for _ in range(2):
        assert main(["report", "run", "--log-to-mlflow"]) == 0
    assert run("--set", "mlflow.enabled=true", "--resume") == 0  # a resumed audit is the same audit
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dpaudit")
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_report_upload_failures_go_to_stderr(workdir, capsys):
    assert run() == 0
    capsys.readouterr()
    assert main(["report", "run", "--log-to-mlflow", "--tracking-uri", "http://127.0.0.1:9"]) == 3
    out = capsys.readouterr()
    assert "not logged" in out.err and "not logged" not in out.out


def test_the_registry_tags_carry_the_plugin_and_its_hash(workdir):
    from mlflow import MlflowClient

    from audit.tracking import gate_model

    uri = f"sqlite:///{workdir / 'reg.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    client.create_model_version("m", source="file:///tmp/model")
    report = {"verdict": dp_verdict([_bound(0.2, 3.0)], 2.0, 0.95), "claimed": {"epsilon": 2.0},
              "plugin": {"path": "p.py:train", "sha256": "ab" * 32}}
    result = gate_model(report, tracking_uri=uri, model_name="m")
    assert result.passed and result.tags["dp_audit.plugin_sha256"] == "ab" * 32
    assert client.get_model_version("m", "1").tags["dp_audit.plugin"] == "p.py:train"
    inconclusive = {**report, "verdict": dp_verdict([_bound(0.2, 1.0)], 2.0, 0.95)}
    assert not gate_model(inconclusive, tracking_uri=uri, model_name="m").passed
    assert "dp-audited" not in client.get_registered_model("m").aliases
