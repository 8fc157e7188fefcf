"""``dpaudit attack`` and ``dpaudit evaluate``: outputs, JSON, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit.attacks import score_records
from audit.cli import EXIT_BAD_INPUT, main
from audit.evaluation import evaluate_attack
from audit.observations import save_observations, synthetic_observations

DPAUDIT = Path(sys.executable).parent / "dpaudit"


@pytest.fixture(scope="module")
def obs_path(tmp_path_factory):
    obs = synthetic_observations(np.random.default_rng(0), n_models=6, n_records=60, n_population=12, n_classes=4)
    path = tmp_path_factory.mktemp("obs") / "obs.npz"
    save_observations(obs, path)
    return path, obs


def _one_error_line(capsys, needle: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dpaudit: error: ")
    assert needle in err, err


def test_attack_writes_float64_scores(obs_path, tmp_path, capsys):
    path, obs = obs_path
    out = tmp_path / "scores.npy"
    assert main(["attack", "--method", "lira-offline", "--observations", str(path), "--target", "3",
                 "--out", str(out)]) == 0
    scores = np.load(out, allow_pickle=False)
    assert scores.dtype == np.float64 and scores.shape == (72,)
    np.testing.assert_array_equal(scores, score_records("lira-offline", obs, 3))
    assert "wrote 72 scores for target 3 of 6 models" in capsys.readouterr().out
    assert main(["attack", "--method", "rmia", "--observations", str(path), "--target", "0",
                 "--out", str(out), "--param", "gamma=1.5", "--param", "a=0.5"]) == 0
    np.testing.assert_array_equal(np.load(out), score_records("rmia", obs, 0, gamma=1.5, a=0.5))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--method", "nope", "--target", "0"], "unknown attack method 'nope'"),
        (["--method", "loss", "--target", "6"], "loss: target 6 out of range; expected 0..5"),
        (["--method", "loss", "--target", "-1"], "target -1 out of range"),
        (["--method", "rmia", "--target", "0", "--param", "gamma"], "--param: expected KEY=VALUE"),
        (["--method", "loss", "--target", "x"], "'x' is not a valid integer"),
    ],
)
def test_attack_bad_arguments(obs_path, tmp_path, capsys, args, needle):
    path, _ = obs_path
    code = main(["attack", "--observations", str(path), "--out", str(tmp_path / "s.npy"), *args])
    assert code == EXIT_BAD_INPUT
    _one_error_line(capsys, needle)
    assert not (tmp_path / "s.npy").exists()


def test_attack_bad_files(tmp_path, capsys):
    obs = synthetic_observations(np.random.default_rng(0), n_models=3, n_records=8)
    keep = np.zeros((3, 8), bool)
    keep[1] = True  # shadows of target 0: model 1 IN, model 2 OUT for every record ...
    keep[1, 0], keep[0, 0] = False, True  # ... except record 0, IN for the target only
    np.savez(tmp_path / "no_in.npz", logits=obs.logits, labels=obs.labels, keep=keep)
    np.savez(tmp_path / "shapes.npz", logits=obs.logits[:, :5], labels=obs.labels, keep=obs.keep)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    cases = [
        ("no_in.npz", "lira-online", "lira-online: 1 records have no IN shadow"),
        ("shapes.npz", "loss", "logits: shape (3, 5, 2, 10) disagrees with keep (3, 8)"),
        ("junk.npz", "loss", "junk.npz: not a readable .npz"),
        ("absent.npz", "loss", "absent.npz: no such file"),
    ]
    for name, method, needle in cases:
        code = main(["attack", "--method", method, "--observations", str(tmp_path / name),
                     "--target", "0", "--out", str(tmp_path / "s.npy")])
        assert code == EXIT_BAD_INPUT
        _one_error_line(capsys, needle)
    code = main(["attack", "--method", "loss", "--observations", str(tmp_path / "no_in.npz"),
                 "--target", "0", "--out", str(tmp_path / "missing" / "s.npy")])
    assert code == EXIT_BAD_INPUT
    _one_error_line(capsys, "--out: directory")


def test_evaluate_json_is_one_object_keyed_by_method(obs_path, capsys):
    path, obs = obs_path
    assert main(["evaluate", "--observations", str(path), "--methods", "loss,lira-online-fixed", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert list(payload) == ["loss", "lira-online-fixed"]
    want = evaluate_attack(obs, "lira-online-fixed")
    assert payload["lira-online-fixed"]["auc"] == want.auc
    assert [p["tpr"] for p in payload["lira-online-fixed"]["tpr_at_fpr"]] == [p.tpr for p in want.tpr_at_fpr]


def test_evaluate_table_and_default_methods(obs_path, tmp_path, capsys):
    path, obs = obs_path
    assert main(["evaluate", "--observations", str(path), "--plot", str(tmp_path / "roc.png")]) == 0
    out = capsys.readouterr().out
    assert "leave-one-out over 6 models" in out and "TPR@0.01%" in out
    for method in ("loss", "lira-online", "rmia", "shokri", "label-only"):
        assert f"\n{method} " in out
    assert (tmp_path / "roc.png").exists()
    # without population records, the default run lists rmia as skipped; naming it is an error
    no_pop = tmp_path / "nopop.npz"
    keep = obs.keep[:, :60]
    np.savez(no_pop, logits=obs.logits[:, :60], labels=obs.labels[:60], keep=keep)
    assert main(["evaluate", "--observations", str(no_pop), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert "needs population records" in payload["rmia"]["skipped"]
    assert main(["evaluate", "--observations", str(no_pop), "--methods", "rmia"]) == EXIT_BAD_INPUT
    _one_error_line(capsys, "rmia: needs population records")
    assert main(["evaluate", "--observations", str(no_pop), "--methods", "loss,bogus"]) == EXIT_BAD_INPUT
    _one_error_line(capsys, "--methods: unknown attack method(s) ['bogus']")


def test_console_script_prints_one_line_and_exits_2(obs_path, tmp_path):
    path, _ = obs_path
    proc = subprocess.run(
        [str(DPAUDIT), "attack", "--method", "lira-online", "--observations", str(path),
         "--target", "99", "--out", str(tmp_path / "s.npy")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("dpaudit: error: lira-online: target 99 out of range")


def test_help_lists_every_registered_method(capsys):
    from audit.attacks import available_attacks
    from audit.cli.attack import METHODS_HELP

    assert sorted(m.strip() for m in METHODS_HELP.split(",")) == list(available_attacks())
    assert main(["attack", "--help"]) == 0
    assert "lira-offline-fixed" in capsys.readouterr().out


def test_attack_on_white_box_stats_by_name(tmp_path, capsys):
    from audit.observations import Observations

    stats = np.array([[[1.0, 9.0], [4.0, -2.0]], [[0.5, 3.0], [2.0, 7.0]]])
    obs = Observations(keep=np.array([[1, 0], [0, 1]], bool), stats=stats,
                       metadata={"stat_names": ["grad_norm", "all_iterates"]})
    save_observations(obs, tmp_path / "wb.npz")
    out = tmp_path / "s.npy"
    assert main(["attack", "--method", "canary-statistic", "--observations", str(tmp_path / "wb.npz"),
                 "--target", "1", "--out", str(out), "--param", "column=all_iterates"]) == 0
    np.testing.assert_array_equal(np.load(out), [3.0, 7.0])
    assert main(["evaluate", "--observations", str(tmp_path / "wb.npz"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert list(payload) == ["gradient-norm", "canary-statistic"]
    assert payload["gradient-norm"]["auc"] == 0.5  # members {1, 2} vs non-members {4, 0.5}, score -norm
