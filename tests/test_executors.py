"""Executors without Ray: out-of-order appends, units of work, config, the missing-extra error."""

import builtins

import numpy as np
import pytest

from audit.cli import main
from audit.config import parse_config
from audit.errors import InputError
from audit.observations import ObservationRun, load_observations, synthetic_observations
from audit.pipeline import executors, training


def _obs():
    return synthetic_observations(np.random.default_rng(1), n_models=4, n_records=30, n_queries=2, n_classes=3)


def test_models_arriving_out_of_order_load_in_index_order(tmp_path):
    obs = _obs()
    run = ObservationRun.create(tmp_path / "run", labels=obs.labels)
    for m in (2, 0, 3):
        assert run.append(keep=obs.keep[m], logits=obs.logits[m], index=m) == m
    reopened = ObservationRun.open(tmp_path / "run")
    assert reopened.n_models_done == 3 and reopened.indices == [0, 2, 3]
    assert reopened.missing_models(4) == [1] and reopened.missing_models(6) == [1, 4, 5]
    with pytest.raises(InputError, match=r"models \[1\] are missing before model 3"):
        reopened.load()
    with pytest.raises(InputError, match="model 2 is already recorded"):
        reopened.append(keep=obs.keep[2], logits=obs.logits[2], index=2)
    with pytest.raises(InputError, match="index -1"):
        reopened.append(keep=obs.keep[1], logits=obs.logits[1], index=-1)
    reopened.append(keep=obs.keep[1], logits=obs.logits[1], index=1)
    back = load_observations(tmp_path / "run")
    np.testing.assert_array_equal(back.keep, obs.keep)
    np.testing.assert_array_equal(back.logits, obs.logits.astype(back.logits.dtype))
    # without an index, a model goes after the largest recorded one
    assert reopened.append(keep=obs.keep[0], logits=obs.logits[0]) == 4


def _config(**executor):
    tree = {"trainer": {"kind": "fast"}, "audit": {"models": 7}, "executor": executor}
    return parse_config(tree)


def test_fast_units_are_fixed_index_blocks():
    assert training.units(_config(block_models=3), list(range(7))) == [[0, 1, 2], [3, 4, 5], [6]]
    # a resumed run keeps the blocks' boundaries: models 2 and 4 were lost, 2 stays in block 0
    assert training.units(_config(block_models=3), [2, 4, 6]) == [[2], [4], [6]]
    assert training.units(_config(), [1, 5]) == [[1, 5]]  # 0: one block of what is left
    plain = parse_config({"audit": {"models": 5}})
    assert training.units(plain, [0, 3]) == [[0], [3]]


@pytest.mark.parametrize(
    "executor, named",
    [
        ({"kind": "dask"}, "executor.kind"),
        ({"kind": "ray", "num_cpus": 0}, "executor.num_cpus"),
        ({"kind": "ray", "num_gpus": -1}, "executor.num_gpus"),
        ({"kind": "ray", "max_retries": -1}, "executor.max_retries"),
        ({"kind": "ray", "address": "auto", "local_cpus": 2}, "local_cpus"),
        ({"kind": "ray", "workers": 2}, "executor.workers: unknown key"),
    ],
)
def test_bad_executor_settings_name_the_field(executor, named):
    with pytest.raises(InputError, match=named):
        parse_config({"executor": executor})


def test_ray_fields_are_ignored_by_the_local_executor():
    config = parse_config({"executor": {"kind": "local", "address": "auto", "num_gpus": 1}})
    assert isinstance(executors.make_executor(config.executor), executors.LocalExecutor)


@pytest.fixture
def no_ray(monkeypatch):
    real = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)


def test_missing_ray_names_the_extra(no_ray):
    with pytest.raises(InputError, match=r"pip install 'dpaudit\[ray\]'"):
        executors.make_executor(parse_config({"executor": {"kind": "ray"}}).executor)


def test_executor_flag_without_ray_exits_2_with_one_line(tmp_path, capsys, no_ray):
    cfg = tmp_path / "audit.toml"
    cfg.write_text(f'output_dir = "{tmp_path / "run"}"\n[audit]\nmodels = 5\ncanaries = 20\n[mlflow]\nenabled = false\n')
    assert main(["run", str(cfg), "--no-progress", "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dpaudit[ray]" in err[0] and "executor.kind = 'ray'" in err[0]


def test_a_unit_computes_on_the_configured_threads_whatever_the_callers():
    """Torch's float sums depend on its thread count (here: the logits of a seed-0 MLP
    move by ~1e-7 between 1 and 2 threads); a unit fixes the count, so an in-process run
    (2 threads on this machine) and a Ray task (1 thread per CPU) agree bit for bit."""
    import torch

    from audit.pipeline import data

    config = parse_config({
        "seed": 0, "data": {"name": "fair", "n": 1000, "population": 200, "test": 500},
        "model": {"widths": [64]}, "trainer": {"epochs": 2}, "audit": {"models": 5, "canaries": 100, "canary_kind": "mislabeled"},
    })
    audit_data = data.build(config)
    keep = data.inclusion(config, len(audit_data.canaries))
    before = torch.get_num_threads()
    raw, unit = [], []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            raw.append(training._train_models(config, audit_data, keep, [0])[0].logits)
            unit.append(training.train_unit(config, audit_data, keep, [0])[0].logits)
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(unit[0], unit[1])
    np.testing.assert_array_equal(unit[0], raw[0])  # executor.threads defaults to 1 (num_cpus = 1)
    if np.array_equal(raw[0], raw[1]):
        pytest.skip("this machine's torch gives the same sums on 1 and 2 threads: nothing to pin")
