"""LiRA reference layout (tensorflow/privacy research/mi_lira_2021): model order, file
robustness, export names; and interchange .npz files with extra arrays."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest

from audit.errors import InputError
from audit.observations import (
    Observations,
    export_lira_layout,
    import_lira_layout,
    load_observations,
    synthetic_observations,
)
from tests.test_observations import _same


def _write_reference(root, keep, logits, labels, names=None, expids=None, epochs=("0000000100",)):
    """Write a layout the way the reference train.py / inference.py name things."""
    n = keep.shape[0]
    for k in range(n):
        exp = root / (names[k] if names else f"experiment-{k}_{n}")
        (exp / "logits").mkdir(parents=True)
        np.save(exp / "keep.npy", keep[k])
        for epoch in epochs:
            np.save(exp / "logits" / f"{epoch}.npy", logits[k][:, None])
        expid = k if expids is None else expids[k]
        if expid != "absent":
            (exp / "hparams.json").write_text(json.dumps({"expid": expid, "num_experiments": n, "pkeep": 0.5}))
    np.save(root / "y_train.npy", labels)


def _obs(n_models=16, n_records=40, seed=0):
    return synthetic_observations(np.random.default_rng(seed), n_models=n_models, n_records=n_records,
                                  n_classes=5)


# --- import: model order -------------------------------------------------------------


def test_sixteen_models_in_reference_names_are_ordered_by_experiment_number(tmp_path):
    obs = _obs()
    _write_reference(tmp_path, obs.keep, obs.logits[:, :, 0], obs.labels)
    back = import_lira_layout(tmp_path)
    for k in range(16):  # as strings, experiment-10_16 .. experiment-15_16 sort before experiment-2_16
        np.testing.assert_array_equal(back.keep[k], np.load(tmp_path / f"experiment-{k}_16" / "keep.npy"))
    np.testing.assert_array_equal(back.keep, obs.keep)
    assert back.metadata["lira_experiments"] == [f"experiment-{k}_16" for k in range(16)]


def test_seed_named_experiments_are_ordered_numerically(tmp_path):
    obs = _obs(n_models=3)
    _write_reference(tmp_path, obs.keep, obs.logits[:, :, 0], obs.labels,
                     names=["experiment-9", "experiment-10", "experiment-100"], expids=[None] * 3)
    back = import_lira_layout(tmp_path)
    np.testing.assert_array_equal(back.keep, obs.keep)
    assert back.metadata["lira_experiments"] == ["experiment-9", "experiment-10", "experiment-100"]


def test_names_without_a_number_are_ordered_by_expid(tmp_path):
    obs = _obs(n_models=3)
    _write_reference(tmp_path, obs.keep, obs.logits[:, :, 0], obs.labels,
                     names=["experiment-c", "experiment-a", "experiment-b"], expids=[0, 2, 1])
    back = import_lira_layout(tmp_path)
    np.testing.assert_array_equal(back.keep, obs.keep[[0, 2, 1]])
    assert back.metadata["lira_experiments"] == ["experiment-c", "experiment-b", "experiment-a"]


@pytest.mark.parametrize(
    "names, expids, needle",
    [
        (["experiment-3_16", "experiment-3_8"], [3, 3], "experiment 3 appears twice"),
        (["experiment-a", "experiment-b"], [0, 0], "experiment 0 appears twice"),
        (["experiment-0_2", "experiment-x"], [0, "absent"], "experiment-x: no experiment number"),
        (["experiment-0_2", "experiment-x"], [0, None], "experiment-x: no experiment number"),
        (["experiment-0_2", "experiment-x"], [0, "7"], "experiment-x/hparams.json: expid"),
        (["experiment-0_2", "experiment-1_2"], [0, 5], "experiment-1_2: name says experiment 1"),
    ],
)
def test_duplicate_or_missing_experiment_numbers_are_refused(tmp_path, names, expids, needle):
    obs = _obs(n_models=2)
    _write_reference(tmp_path, obs.keep, obs.logits[:, :, 0], obs.labels, names=names, expids=expids)
    with pytest.raises(InputError) as err:
        import_lira_layout(tmp_path)
    assert needle in str(err.value)


def test_bad_hparams_json_is_named(tmp_path):
    obs = _obs(n_models=2)
    _write_reference(tmp_path, obs.keep, obs.logits[:, :, 0], obs.labels, names=["experiment-a", "experiment-b"])
    (tmp_path / "experiment-b" / "hparams.json").write_text("{not json")
    with pytest.raises(InputError, match="experiment-b/hparams.json: not valid JSON"):
        import_lira_layout(tmp_path)


def test_latest_epoch_is_chosen_by_number(tmp_path):
    obs = _obs(n_models=2)
    _write_reference(tmp_path, obs.keep, np.zeros_like(obs.logits[:, :, 0]), obs.labels, epochs=("10",))
    for k in range(2):  # "9" sorts after "10" as a string, but epoch 10 is the latest
        np.save(tmp_path / f"experiment-{k}_2" / "logits" / "9.npy", np.ones_like(obs.logits[k][:, None, 0]))
    back = import_lira_layout(tmp_path)
    assert not back.logits.any()
    np.save(tmp_path / "experiment-1_2" / "logits" / "last.npy", np.ones_like(obs.logits[1][:, None, 0]))
    with pytest.raises(InputError, match=r"experiment-1_2/logits/last.npy: expected <epoch>.npy"):
        import_lira_layout(tmp_path)


# --- import: unreadable files --------------------------------------------------------


def _corrupt(path, how: str, kind: str) -> None:
    good = np.load(path, allow_pickle=False)
    if how == "pickle":
        path.write_bytes(pickle.dumps(good))
    elif how == "text":
        np.savetxt(path, good.reshape(good.shape[0], -1))
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 7])
    elif how == "header":
        path.write_bytes(path.read_bytes()[:20])
    elif how == "npz":
        with open(path, "wb") as handle:
            np.savez(handle, x=good)
    elif how == "object":
        np.save(path, np.array([{"a": 1}] * good.shape[0], dtype=object), allow_pickle=True)
    elif how == "dtype":
        bad = {"keep": np.full(good.shape, 0.5), "logits": np.full(good.shape, "x"),
               "labels": good.astype(np.float64) + 0.5}[kind]
        np.save(path, bad)
    elif how == "shape":
        np.save(path, good.reshape(good.shape[0], 1, -1)[..., :1] if kind != "logits" else good[:, 0, 0])
    elif how == "nan":
        bad = good.astype(np.float64)
        bad.flat[3] = np.nan
        np.save(path, bad)


_FILES = {"keep": "experiment-1_3/keep.npy", "logits": "experiment-1_3/logits/0000000100.npy", "labels": "y_train.npy"}


@pytest.mark.parametrize("kind, how", [
    (kind, how) for kind in _FILES
    for how in ["pickle", "text", "truncated", "header", "npz", "object", "dtype", "shape", "nan"]
    if how != "nan" or kind == "logits"  # only logits are floating point
])
def test_unreadable_layout_files_are_input_errors_naming_the_file(tmp_path, kind, how):
    rel = _FILES[kind]
    obs = _obs(n_models=3, n_records=30)
    _write_reference(tmp_path, obs.keep, obs.logits[:, :, 0], obs.labels)
    _corrupt(tmp_path / rel, how, kind)
    with pytest.raises(InputError) as err:
        load_observations(tmp_path)
    assert rel in str(err.value), str(err.value)


def test_missing_keep_and_logits_are_named(tmp_path):
    obs = _obs(n_models=2)
    _write_reference(tmp_path, obs.keep, obs.logits[:, :, 0], obs.labels)
    (tmp_path / "experiment-1_2" / "keep.npy").unlink()
    with pytest.raises(InputError, match="experiment-1_2: missing keep.npy"):
        import_lira_layout(tmp_path)
    np.save(tmp_path / "experiment-1_2" / "keep.npy", obs.keep[1, :-1])
    with pytest.raises(InputError, match=r"experiment-1_2/keep.npy: 39 records"):
        import_lira_layout(tmp_path)


# --- export --------------------------------------------------------------------------


def test_export_writes_the_reference_names(tmp_path):
    obs = _obs(n_models=12)
    export_lira_layout(obs, tmp_path / "lira", epoch=100)
    root = tmp_path / "lira"
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [f"experiment-{k}_12" for k in range(12)] + ["y_train.npy"])
    for k in range(12):
        exp = root / f"experiment-{k}_12"
        assert sorted(p.name for p in exp.iterdir()) == ["hparams.json", "keep.npy", "logits"]
        hparams = json.loads((exp / "hparams.json").read_text())
        assert hparams["expid"] == k and hparams["num_experiments"] == 12
        np.testing.assert_array_equal(np.load(exp / "keep.npy"), obs.keep[k])
        written = np.load(exp / "logits" / "0000000100.npy")
        assert written.shape == (40, 1, 2, 5)  # [records, 1, queries, classes] as inference.py writes
        np.testing.assert_array_equal(written[:, 0], obs.logits[k])
    back = import_lira_layout(root)
    _same(obs, back)
    assert back.metadata["lira_experiments"] == [f"experiment-{k}_12" for k in range(12)]


def test_export_into_an_empty_directory_and_refusals(tmp_path):
    obs = _obs(n_models=2)
    (tmp_path / "empty").mkdir()
    export_lira_layout(obs, tmp_path / "empty")
    _same(obs, import_lira_layout(tmp_path / "empty"))
    with pytest.raises(InputError, match="not empty"):
        export_lira_layout(obs, tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        export_lira_layout(obs, tmp_path / "file")
    with pytest.raises(InputError, match="does not exist"):
        export_lira_layout(obs, tmp_path / "missing" / "lira")
    with pytest.raises(InputError, match="epoch"):
        export_lira_layout(obs, tmp_path / "neg", epoch=-1)
    white_box = Observations(keep=obs.keep, stats=np.zeros((2, 40, 1)))
    with pytest.raises(InputError, match="no logits"):
        export_lira_layout(white_box, tmp_path / "wb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file"]


def test_a_failed_export_leaves_no_half_layout(tmp_path, monkeypatch):
    obs = _obs(n_models=4)
    calls = []
    real_save = np.save

    def failing_save(file, arr, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_lira_layout(obs, tmp_path / "lira")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        export_lira_layout(obs, tmp_path / "empty")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"] and not any((tmp_path / "empty").iterdir())


# --- interchange .npz with extra arrays ----------------------------------------------


def test_extra_arrays_in_an_interchange_npz_are_ignored_with_a_warning(tmp_path):
    obs = _obs(n_models=3)
    np.savez(tmp_path / "x.npz", logits=obs.logits, labels=obs.labels, keep=obs.keep,
             outputs=np.zeros(3), features=np.ones((2, 2)))
    with pytest.warns(UserWarning, match=r"x.npz: ignoring unknown arrays \['features', 'outputs'\]"):
        back = load_observations(tmp_path / "x.npz")
    _same(obs, back)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning without extras
        np.savez(tmp_path / "y.npz", logits=obs.logits, labels=obs.labels, keep=obs.keep)
        _same(obs, load_observations(tmp_path / "y.npz"))
