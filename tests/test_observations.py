"""Observations container: validation, npz round trip, resumable runs, LiRA layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from audit.errors import InputError
from audit.observations import (
    ObservationRun,
    Observations,
    export_lira_layout,
    import_lira_layout,
    from_named_statistics,
    load_observations,
    n_models_done,
    save_observations,
    synthetic_observations,
)


def _tiny(rng=None):
    rng = rng or np.random.default_rng(1)
    keep = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]], dtype=bool)
    logits = rng.normal(size=(3, 4, 2, 3)).astype(np.float32)
    return Observations(keep=keep, labels=np.array([0, 1, 2, 1]), logits=logits,
                        metadata={"dataset": "tiny", "seed": 7, "claimed_epsilon": 2.5})


def _same(a: Observations, b: Observations) -> None:
    np.testing.assert_array_equal(a.keep, b.keep)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert a.logits.dtype == b.logits.dtype


def test_npz_round_trip_keeps_arrays_and_metadata(tmp_path):
    obs = _tiny()
    save_observations(obs, tmp_path / "o.npz")
    back = load_observations(tmp_path / "o.npz")
    _same(obs, back)
    assert back.metadata == {"dataset": "tiny", "seed": 7, "claimed_epsilon": 2.5}
    with np.load(tmp_path / "o.npz", allow_pickle=False) as data:  # readable with no pickle
        assert json.loads(str(data["metadata"]))["dataset"] == "tiny"


def test_interchange_npz_with_only_three_arrays_loads(tmp_path):
    obs = _tiny()
    np.savez(tmp_path / "x.npz", logits=obs.logits, labels=obs.labels, keep=obs.keep.astype(np.uint8))
    back = load_observations(tmp_path / "x.npz")
    _same(obs, back)
    assert back.metadata == {}
    assert back.keep.dtype == bool and back.n_queries == 2


def test_three_dimensional_logits_are_one_query():
    obs = Observations(keep=np.ones((2, 3), bool), labels=[0, 1, 0], logits=np.zeros((2, 3, 2)))
    assert obs.logits.shape == (2, 3, 1, 2)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(logits=np.full((3, 4, 1, 3), np.nan)), "logits: 36 non-finite"),
        (dict(logits=np.zeros((3, 5, 1, 3))), "logits: shape (3, 5, 1, 3) disagrees with keep (3, 4)"),
        (dict(labels=np.array([0, 1, 2, 3])), "labels: expected values in [0, 3)"),
        (dict(labels=np.array([0.0, 1, 2, 1])), "labels: expected integers"),
        (dict(keep=np.full((3, 4), 2)), "keep: expected booleans"),
        (dict(stats=np.array([[[np.inf]] * 4] * 3)), "stats: 12 non-finite"),
        (dict(population=np.array([1, 0, 0, 0], bool)), "population: 1 population records are IN"),
        (dict(metadata={"x": object()}), "metadata: expected a JSON-serialisable"),
        (dict(metadata={"claimed_epsilon": -1}), "metadata.claimed_epsilon: expected a non-negative"),
        (dict(metadata={"seed": "7"}), "metadata.seed: expected an integer"),
    ],
)
def test_validation_names_the_bad_array(kwargs, needle):
    base = dict(keep=np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]], bool),
                labels=np.array([0, 1, 2, 1]), logits=np.zeros((3, 4, 1, 3)))
    base.update(kwargs)
    with pytest.raises(InputError) as err:
        Observations(**base)
    assert needle in str(err.value)


def test_corrupted_and_pickled_files_are_input_errors(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match="junk.npz: not a readable .npz"):
        load_observations(tmp_path / "junk.npz")
    save_observations(_tiny(), tmp_path / "ok.npz")
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.npz"):
        load_observations(tmp_path / "cut.npz")
    np.savez(tmp_path / "obj.npz", keep=np.ones((1, 1), bool), logits=np.array([[{"a": 1}]], dtype=object))
    with pytest.raises(InputError, match="obj.npz"):
        load_observations(tmp_path / "obj.npz")
    np.savez(tmp_path / "nokeep.npz", logits=np.zeros((1, 1, 1, 2)))
    with pytest.raises(InputError, match="missing array 'keep'"):
        load_observations(tmp_path / "nokeep.npz")
    with pytest.raises(InputError, match="no such file"):
        load_observations(tmp_path / "absent.npz")


def test_run_directory_appends_and_resumes(tmp_path):
    obs = _tiny()
    run = ObservationRun.create(tmp_path / "run", labels=obs.labels, metadata={"trainer": "t"})
    assert run.n_models_done == 0
    for m in range(2):
        assert run.append(keep=obs.keep[m], logits=obs.logits[m]) == m
    again = ObservationRun.open(tmp_path / "run")
    assert again.n_models_done == 2
    again.append(keep=obs.keep[2], logits=obs.logits[2])
    back = load_observations(tmp_path / "run")
    _same(obs, back)
    assert back.metadata == {"trainer": "t"}
    with pytest.raises(InputError, match="disagree with earlier models"):
        again.append(keep=obs.keep[0], logits=obs.logits[0][:, :1])
    with pytest.raises(InputError, match="already holds a run"):
        ObservationRun.create(tmp_path / "run", labels=obs.labels)


def test_failure_while_writing_manifest_leaves_previous_state(tmp_path, monkeypatch):
    obs = _tiny()
    run = ObservationRun.create(tmp_path / "run", labels=obs.labels)
    run.append(keep=obs.keep[0], logits=obs.logits[0])
    import audit.observations as module

    real = module.atomic_open

    def failing(path, mode="w", **kw):
        if Path(path).name == "manifest.json":
            raise KeyboardInterrupt  # as if killed between the model file and the manifest
        return real(path, mode, **kw)

    monkeypatch.setattr(module, "atomic_open", failing)
    with pytest.raises(KeyboardInterrupt):
        run.append(keep=obs.keep[1], logits=obs.logits[1])
    monkeypatch.setattr(module, "atomic_open", real)
    resumed = ObservationRun.open(tmp_path / "run")
    assert resumed.n_models_done == 1
    resumed.append(keep=obs.keep[1], logits=obs.logits[1])
    resumed.append(keep=obs.keep[2], logits=obs.logits[2])
    _same(obs, resumed.load())


_WRITER = """
import sys, numpy as np
from audit.observations import ObservationRun
rng = np.random.default_rng(0)
run = ObservationRun.create(sys.argv[1], labels=np.zeros(2000, dtype=np.int64))
for m in range(10_000):
    run.append(keep=rng.random(2000) < 0.5, logits=rng.normal(size=(2000, 4, 10)))
"""


def test_sigkill_during_appends_never_corrupts_the_run(tmp_path):
    path = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=Path(__file__).parents[1])
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            manifest = path / "manifest.json"
            if manifest.exists() and len(json.loads(manifest.read_text())["models"]) >= 3:
                break
            time.sleep(0.01)
        time.sleep(0.037)  # land somewhere inside a write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = ObservationRun.resume_or_create(path, labels=np.zeros(2000, dtype=np.int64))
    assert not list(path.glob(".*.tmp"))  # a killed writer's temporary files are cleaned up
    done = run.n_models_done
    assert done >= 3 and n_models_done(path) == done
    assert n_models_done(tmp_path / "elsewhere") == 0
    obs = run.load()
    assert obs.logits.shape == (done, 2000, 4, 10)
    run.append(keep=np.ones(2000, bool), logits=np.zeros((2000, 4, 10)))
    assert ObservationRun.open(path).n_models_done == done + 1


@pytest.mark.parametrize("layout", ["n1qc", "nq1c", "nqc"])
def test_lira_reference_layout_import(tmp_path, layout):
    obs = _tiny()
    for m in range(3):
        exp = tmp_path / f"experiment-{m}_3"
        (exp / "logits").mkdir(parents=True)
        np.save(exp / "keep.npy", obs.keep[m])
        x = obs.logits[m]
        x = {"n1qc": x[:, None], "nq1c": x[:, :, None], "nqc": x}[layout]
        np.save(exp / "logits" / "0000000099.npy", np.zeros_like(x))  # older epoch: ignored
        np.save(exp / "logits" / "0000000100.npy", x)
    _same(obs, import_lira_layout(tmp_path, labels=obs.labels))


def test_lira_reference_layout_round_trip(tmp_path):
    obs = _tiny()
    export_lira_layout(obs, tmp_path / "lira", epoch=100)
    written = np.load(tmp_path / "lira" / "experiment-1_3" / "logits" / "0000000100.npy")
    assert written.shape == (4, 1, 2, 3)  # [records, 1, queries, classes] as inference.py writes
    _same(obs, import_lira_layout(tmp_path / "lira"))  # labels from y_train.npy
    _same(obs, import_lira_layout(tmp_path / "lira", labels=obs.labels))


def test_lira_layout_errors(tmp_path):
    with pytest.raises(InputError, match="no experiment-"):
        import_lira_layout(tmp_path, labels=[0])
    (tmp_path / "experiment-0" / "logits").mkdir(parents=True)
    np.save(tmp_path / "experiment-0" / "keep.npy", np.ones(3, bool))
    np.save(tmp_path / "experiment-0" / "logits" / "1.npy", np.zeros((3, 2, 2, 2)))
    with pytest.raises(InputError, match=r"logits shape \(3, 2, 2, 2\)"):
        import_lira_layout(tmp_path, labels=[0, 1, 0])


def test_synthetic_is_seeded_and_balanced():
    a = synthetic_observations(np.random.default_rng(3), n_models=6, n_records=50, n_population=5)
    b = synthetic_observations(np.random.default_rng(3), n_models=6, n_records=50, n_population=5)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert a.logits.shape == (6, 55, 2, 10)
    np.testing.assert_array_equal(a.keep[:, :50].sum(0), 3)
    assert not a.keep[:, 50:].any() and a.population_mask.sum() == 5


def test_resume_or_create_checks_the_run_matches(tmp_path):
    obs = _tiny()
    run = ObservationRun.resume_or_create(tmp_path / "r", labels=obs.labels)
    run.append(keep=obs.keep[0], logits=obs.logits[0])
    again = ObservationRun.resume_or_create(tmp_path / "r", labels=obs.labels)
    assert again.n_models_done == 1
    with pytest.raises(InputError, match="different labels; refusing to resume"):
        ObservationRun.resume_or_create(tmp_path / "r", labels=obs.labels[::-1])
    pop = ObservationRun.create(tmp_path / "p", labels=obs.labels, population=np.array([0, 0, 0, 1], bool))
    with pytest.raises(InputError, match="keep: 1 population records marked IN"):
        pop.append(keep=np.ones(4, bool), logits=obs.logits[0])
    with pytest.raises(InputError, match="metadata.seed"):
        ObservationRun.create(tmp_path / "q", labels=obs.labels, metadata={"seed": 1.5})
    with pytest.raises(InputError, match="different population"):
        ObservationRun.resume_or_create(tmp_path / "r", labels=obs.labels, population=np.zeros(4, bool))


def test_load_observations_reads_a_lira_layout_directory(tmp_path):
    obs = _tiny()
    export_lira_layout(obs, tmp_path / "lira")
    _same(obs, load_observations(tmp_path / "lira"))
    with pytest.raises(InputError, match="no manifest.json"):
        load_observations(tmp_path)


def test_white_box_only_run(tmp_path):
    run = ObservationRun.create(tmp_path / "wb", labels=None, metadata={"claimed_epsilon": float("inf")})
    stats = np.arange(12.0).reshape(2, 3, 2)
    keep = np.array([[1, 0, 1], [0, 1, 0]], bool)
    for m in range(2):
        run.append(keep=keep[m], stats=stats[m])
    back = load_observations(tmp_path / "wb")
    assert back.logits is None and back.labels is None
    np.testing.assert_array_equal(back.stats, stats)
    assert back.metadata["claimed_epsilon"] == float("inf")


def test_from_named_statistics(tmp_path):
    keep = np.array([[1, 0, 1], [0, 1, 0]], bool)
    a, b = np.arange(6.0).reshape(2, 3), -np.arange(6.0).reshape(2, 3)
    obs = from_named_statistics(keep, {"all_iterates": a, "last_iterate": b}, metadata={"trainer": "x"})
    np.testing.assert_array_equal(obs.stats[..., 1], b)
    assert obs.metadata == {"trainer": "x", "stat_names": ["all_iterates", "last_iterate"]}
    save_observations(obs, tmp_path / "s.npz")
    assert load_observations(tmp_path / "s.npz").metadata["stat_names"] == ["all_iterates", "last_iterate"]
    with pytest.raises(InputError, match="statistics: shapes differ"):
        from_named_statistics(keep, {"a": a, "b": b[:, :2]})
    with pytest.raises(InputError, match=r"statistics\['a'\]: 1 non-finite"):
        from_named_statistics(keep, {"a": np.where(a == 0, np.nan, a)})
