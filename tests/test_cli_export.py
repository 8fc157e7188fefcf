"""``dpaudit export``; layout directories named in ``attack``/``evaluate`` output; output
paths refused before any work (``attack --out``, ``evaluate --plot``, ``report --out``);
extra arrays in an interchange .npz warned about in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit.cli import EXIT_BAD_INPUT, main
from audit.observations import (
    Observations,
    export_lira_layout,
    import_lira_layout,
    save_observations,
    synthetic_observations,
)

DPAUDIT = Path(sys.executable).parent / "dpaudit"
FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"


@pytest.fixture(scope="module")
def obs():
    return synthetic_observations(np.random.default_rng(2), n_models=16, n_records=40, n_classes=4)


@pytest.fixture(scope="module")
def layout(obs, tmp_path_factory):
    root = tmp_path_factory.mktemp("layout") / "lira"
    export_lira_layout(obs, root)
    return root


def _one_error_line(capsys, *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dpaudit: error: "), err
    assert all(needle in err for needle in needles), err


# --- dpaudit export --------------------------------------------------------------------


def test_export_round_trip(obs, tmp_path, capsys):
    save_observations(obs, tmp_path / "obs.npz")
    out = tmp_path / "lira"
    assert main(["export", "--observations", str(tmp_path / "obs.npz"), "--out", str(out), "--epoch", "7"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 16 models" in printed and "experiment-0_16" in printed and "experiment-15_16" in printed
    assert (out / "experiment-15_16" / "logits" / "0000000007.npy").exists()
    back = import_lira_layout(out)
    np.testing.assert_array_equal(back.keep, obs.keep)
    np.testing.assert_array_equal(back.labels, obs.labels)
    np.testing.assert_array_equal(back.logits, obs.logits)
    assert back.logits.dtype == obs.logits.dtype
    (tmp_path / "empty").mkdir()  # an empty directory is fine too
    assert main(["export", "--observations", str(out), "--out", str(tmp_path / "empty")]) == 0
    np.testing.assert_array_equal(import_lira_layout(tmp_path / "empty").logits, obs.logits)


def test_export_refuses_a_bad_out_before_loading(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    missing = str(tmp_path / "absent.npz")  # loading it would be a different error
    for out, needle in [
        (tmp_path / "full", "directory is not empty"),
        (tmp_path / "file", "exists and is not a directory"),
        (tmp_path / "nowhere" / "lira", "parent directory"),
    ]:
        assert main(["export", "--observations", missing, "--out", str(out)]) == EXIT_BAD_INPUT
        _one_error_line(capsys, f"--out: {out}: {needle}")
    assert main(["export", "--observations", missing, "--out", str(tmp_path / "new"), "--epoch", "-1"]) == EXIT_BAD_INPUT
    _one_error_line(capsys, "--epoch: expected an integer >= 0, got -1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]


def test_export_of_white_box_observations_is_refused(tmp_path, capsys):
    save_observations(Observations(keep=np.ones((2, 3), bool), stats=np.zeros((2, 3, 1))), tmp_path / "wb.npz")
    assert main(["export", "--observations", str(tmp_path / "wb.npz"), "--out", str(tmp_path / "lira")]) == EXIT_BAD_INPUT
    _one_error_line(capsys, "holds no logits")
    assert not (tmp_path / "lira").exists()


def test_export_says_what_the_layout_cannot_hold(tmp_path, capsys):
    obs = synthetic_observations(np.random.default_rng(0), n_models=3, n_records=8, n_population=2)
    both = Observations(keep=obs.keep, labels=obs.labels, logits=obs.logits, stats=np.zeros((3, 10, 1)),
                        population=obs.population, metadata=obs.metadata)
    save_observations(both, tmp_path / "o.npz")
    assert main(["export", "--observations", str(tmp_path / "o.npz"), "--out", str(tmp_path / "lira")]) == 0
    out = capsys.readouterr().out
    assert "not exported" in out and "stats" in out and "metadata" in out


# --- layout directories in attack and evaluate output ----------------------------------


def test_attack_names_the_target_directory(layout, obs, tmp_path, capsys):
    assert main(["attack", "--method", "loss", "--observations", str(layout), "--target", "5",
                 "--out", str(tmp_path / "s.npy")]) == 0
    out = capsys.readouterr().out
    assert "target 5 = experiment-5_16" in out
    # a layout with a gap: model 1 is experiment 2
    gap = tmp_path / "gap"
    gap.mkdir()
    for name in ("experiment-0_4", "experiment-2_4", "experiment-3_4"):
        (gap / name).symlink_to(layout / name.replace("_4", "_16"))
    np.save(gap / "y_train.npy", obs.labels)
    assert main(["attack", "--method", "loss", "--observations", str(gap), "--target", "1",
                 "--out", str(tmp_path / "s.npy")]) == 0
    assert "target 1 = experiment-2_4" in capsys.readouterr().out


def test_attack_on_an_npz_says_nothing_about_directories(tmp_path, obs, capsys):
    save_observations(obs, tmp_path / "o.npz")
    assert main(["attack", "--method", "loss", "--observations", str(tmp_path / "o.npz"), "--target", "5",
                 "--out", str(tmp_path / "s.npy")]) == 0
    assert "experiment-" not in capsys.readouterr().out


def test_evaluate_names_the_layout_directories(layout, capsys):
    assert main(["evaluate", "--observations", str(layout), "--methods", "loss"]) == 0
    out = capsys.readouterr().out
    assert "model k = experiment-k_16 (k = 0..15)" in out
    assert main(["evaluate", "--observations", str(layout), "--methods", "loss", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["loss"]  # stdout stays one JSON object


# --- output paths refused before any work -----------------------------------------------


def test_attack_out_that_is_a_directory_is_refused_before_loading(tmp_path, capsys):
    (tmp_path / "dir").mkdir()
    assert main(["attack", "--method", "loss", "--observations", str(tmp_path / "absent.npz"), "--target", "0",
                 "--out", str(tmp_path / "dir")]) == EXIT_BAD_INPUT
    _one_error_line(capsys, "--out: ")
    assert list(tmp_path.iterdir()) == [tmp_path / "dir"] and not any((tmp_path / "dir").iterdir())


@pytest.mark.parametrize("plot, needle", [("missing/roc.png", "does not exist"), ("dir", "is a directory")])
def test_evaluate_bad_plot_path_is_refused_before_loading(tmp_path, capsys, plot, needle):
    (tmp_path / "dir").mkdir()
    assert main(["evaluate", "--observations", str(tmp_path / "absent.npz"),
                 "--plot", str(tmp_path / plot)]) == EXIT_BAD_INPUT
    _one_error_line(capsys, "--plot: ", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_report_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "report.json").write_text(FIXTURE.read_text())
    (tmp_path / "cmp").write_text("x")
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == EXIT_BAD_INPUT
    _one_error_line(capsys, "--out: ")
    assert (tmp_path / "cmp").read_text() == "x"
    for run in ("a", "b"):  # nothing rendered into the runs either
        assert [p.name for p in (tmp_path / run).iterdir()] == ["report.json"]
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp" / "sub")]) == EXIT_BAD_INPUT
    _one_error_line(capsys, "--out: ")


# --- interchange .npz with extra arrays, through the CLI --------------------------------


def test_extra_npz_arrays_give_one_warning_line_and_the_command_runs(obs, tmp_path, capsys):
    np.savez(tmp_path / "x.npz", logits=obs.logits, labels=obs.labels, keep=obs.keep, outputs=np.zeros(3))
    assert main(["attack", "--method", "loss", "--observations", str(tmp_path / "x.npz"), "--target", "0",
                 "--out", str(tmp_path / "s.npy")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dpaudit: warning: "), err
    assert "ignoring unknown arrays ['outputs']" in err
    assert (tmp_path / "s.npy").exists()


def test_console_script_on_a_corrupt_layout_prints_one_line(layout, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for exp in layout.iterdir():
        (bad / exp.name).symlink_to(exp)
    (bad / "y_train.npy").unlink()
    (bad / "y_train.npy").write_text("0 1 2\n")
    proc = subprocess.run([str(DPAUDIT), "evaluate", "--observations", str(bad), "--methods", "loss"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"dpaudit: error: {bad / 'y_train.npy'}: not a .npy file")
