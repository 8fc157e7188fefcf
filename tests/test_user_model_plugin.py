"""``model.plugin``: the user's own torch.nn.Module factory in ``dpaudit run`` audits,
black-box (plain, dp) and white-box (gradient canaries, Opacus), on images and token ids
from an NPZ of arrays; every bad plugin is refused in one line (exit 2) before any work."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.cli import main
from audit.config import load_config, parse_config
from audit.errors import InputError
from trainers.models import ModelPlugin, build_model, load_model_plugin

torch.set_num_threads(1)

PLUGINS = '''
import torch
from torch import nn


def cnn(in_shape, n_classes, *, channels=4):
    c, h, w = in_shape
    return nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(channels * (h // 2) * (w // 2), n_classes))


class Bag(nn.Module):
    """Mean of token embeddings -> Linear: takes int64 token ids."""

    def __init__(self, in_shape, n_classes, *, vocab_size, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x):
        return self.head(self.embed(x).mean(dim=1))


def with_batchnorm(in_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(in_shape).prod()), 8), nn.BatchNorm1d(8),
                         nn.Linear(8, n_classes))


class Unused(nn.Module):
    def __init__(self, in_shape, n_classes):
        super().__init__()
        self.used = nn.Linear(int(torch.tensor(in_shape).prod()), n_classes)
        self.spare = nn.Linear(3, 3)

    def forward(self, x):
        return self.used(x.flatten(1))


def not_a_module(in_shape, n_classes):
    return "a string"


def wrong_classes(in_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(in_shape).prod()), n_classes + 1))


def raises(in_shape, n_classes):
    raise ValueError("needs images")


def no_arguments():
    return nn.Linear(2, 2)


NOT_CALLABLE = 3
'''

CONFIG = """
name = "plugin"
seed = 1
output_dir = "{out}"
[data]
path = "{data}"
population = {population}
test = 100
[model]
plugin = "{plugin}"
[trainer]
kind = "{kind}"
epochs = 1
batch_size = 32
lr = 0.2
[audit]
models = 5
canaries = {canaries}
canary_kind = "{canary_kind}"
attacks = ["loss", "lira-offline-fixed"]
[mlflow]
enabled = false
"""

DP = "\n[dp]\nnoise_multiplier = 1.0\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``mymodels.py`` and two NPZs of arrays: digits images and synthetic token ids."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("plugin")
    (root / "mymodels.py").write_text(PLUGINS)
    digits = load_digits()
    np.savez(root / "images.npz", x=(digits.images[:700] / 16).astype(np.float32)[:, None],
             y=digits.target[:700].astype(np.int64))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 30, size=(600, 12))
    labels = (tokens == 7).any(axis=1).astype(np.int64)  # does token 7 occur?
    np.savez(root / "tokens.npz", x=tokens.astype(np.int32), y=labels)
    return root


def _config(root: Path, out: Path, *, data="images.npz", plugin="mymodels.py:cnn", kind="plain", population=100,
            canaries=60, canary_kind="natural", extra="") -> Path:
    text = CONFIG.format(out=out, data=data, plugin=plugin, kind=kind, population=population, canaries=canaries,
                         canary_kind=canary_kind)
    path = root / f"{out.name}.toml"
    path.write_text(text + extra)
    return path


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_factory_is_called_with_shape_classes_and_options_and_seeded_reproducibly(files):
    plugin = load_model_plugin(f"{files}/mymodels.py:Bag", {"vocab_size": 30})
    assert isinstance(plugin, ModelPlugin)
    state = torch.get_rng_state()
    a = build_model(plugin, (12,), 2, generator=torch.Generator().manual_seed(5))
    b = build_model(plugin, (12,), 2, generator=torch.Generator().manual_seed(5))
    c = build_model(plugin, (12,), 2, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is left as it was
    assert a.embed.num_embeddings == 30 and a.head.out_features == 2
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.embed.weight, c.embed.weight)
    with pytest.raises(InputError, match="keywords from \\[model.options\\]"):
        build_model(plugin, (12,), 2, generator=torch.Generator(), widths=(3,))


@pytest.mark.parametrize("name, options, expected", [
    ("not_a_module", {}, "returned str 'a string'; expected a torch.nn.Module"),
    ("NOT_CALLABLE", {}, "is int; expected a function"),
    ("no_arguments", {}, "cannot be called as build(in_shape, n_classes)"),
    ("cnn", {"depth": 3}, "with [model.options] ['depth']"),
    ("Bag", {}, "vocab_size"),
    ("missing", {}, "has no attribute 'missing'"),
])
def test_loading_or_building_a_bad_factory_names_it(files, name, options, expected):
    with pytest.raises(InputError) as err:
        plugin = load_model_plugin(f"{files}/mymodels.py:{name}", options)
        build_model(plugin, (1, 8, 8), 10, generator=torch.Generator())
    assert expected in str(err.value) and name in str(err.value) and "\n" not in str(err.value)


def test_config_resolves_the_plugin_file_against_the_config_and_checks_its_form(files, tmp_path):
    config = load_config(_config(files, tmp_path / "resolve"))
    assert config.model.plugin == f"{files}/mymodels.py:cnn"
    # reports and MLflow say what was built; the dumped config validates again (Ray workers)
    assert (config.model.name, config.model.widths) == ("plugin", [])
    assert parse_config(config.model_dump(mode="json")) == config
    base = {"data": {"name": "digits"}}
    for model, expected in [
        ({"plugin": "mymodels:"}, "model.plugin = 'mymodels:' is malformed"),
        ({"plugin": "m.py:f", "name": "cnn"}, "remove model.name"),
        ({"plugin": "m.py:f", "widths": [3]}, "remove model.widths"),
        ({"options": {"vocab_size": 3}}, "model.options are the keyword arguments of model.plugin"),
        ({"name": "plugin"}, "model.name = 'plugin' needs model.plugin"),
    ]:
        with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(".", r"\.")):
            parse_config({**base, "model": model})


@pytest.mark.parametrize("plugin, kind, expected", [
    ("mymodels.py:not_a_module", "plain", "returned str"),
    ("mymodels.py:wrong_classes", "plain", "expected float logits [2, 10]"),
    ("mymodels.py:raises", "plain", "raised ValueError: needs images when called as build(in_shape=(1, 8, 8), n_classes=10)"),
    ("mymodels.py:nowhere", "plain", "has no attribute 'nowhere'"),
    ("absent.py:cnn", "plain", "no such file"),
    ("mymodels.py:with_batchnorm", "dp", "is not Opacus-compatible"),
    ("mymodels.py:Unused", "dp", "no per-sample gradient for spare.weight, spare.bias"),
    ("mymodels.py:cnn", "fast", "'fast' trains its own vectorised MLPs"),
])
def test_bad_model_is_refused_in_one_line_before_any_work(files, tmp_path, capsys, plugin, kind, expected):
    out = tmp_path / "never"
    cfg = _config(files, out, plugin=plugin, kind=kind, extra=DP if kind != "plain" else "")
    assert main(["run", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "model.plugin" in err[0], err
    assert not out.exists()


def test_a_blackbox_trainer_with_a_model_plugin_is_refused(files, tmp_path, capsys):
    cfg = _config(files, tmp_path / "never", extra="")
    text = cfg.read_text().replace('kind = "plain"', 'kind = "blackbox-plugin"\nplugin = "mymodels.py:cnn"')
    cfg.write_text(text)
    assert main(["run", str(cfg), "--no-progress"]) == 2
    assert "brings its own model; remove model.plugin" in capsys.readouterr().err


def test_batchnorm_is_fine_without_dp(files, tmp_path):
    from audit.pipeline.preflight import check

    check(load_config(_config(files, tmp_path / "bn", plugin="mymodels.py:with_batchnorm")))


def test_blackbox_plain_cnn_on_images_is_deterministic(files, tmp_path):
    """Same config and seed, same numbers: two runs in two directories agree bit for bit."""
    reports = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["run", str(_config(files, out)), "--no-progress", "--set", "trainer.epochs=3"]) == 0
        reports.append(_report(out))
        obs = np.load(next((out / "observations").glob("*.npz")) if (out / "observations").is_dir() else out / "observations.npz")
        reports[-1]["_logits"] = obs[obs.files[0]]
    a, b = reports
    assert a["plugin"]["path"].endswith("mymodels.py:cnn") and len(a["plugin"]["sha256"]) == 64
    assert a["config"]["model"]["plugin"].endswith("mymodels.py:cnn")
    assert a["attacks"] == b["attacks"] and a["utility"]["models"] == b["utility"]["models"]
    np.testing.assert_array_equal(a["_logits"], b["_logits"])
    assert a["utility"]["test_accuracy"] > 0.5  # it learned (chance: 0.1)


def test_blackbox_dp_embedding_model_on_token_ids(files, tmp_path):
    out = tmp_path / "tokens"
    cfg = _config(files, out, data="tokens.npz", plugin="mymodels.py:Bag", kind="dp", canary_kind="mislabeled",
                  extra=DP + "\n[model.options]\nvocab_size = 30\n")
    # [model.options] must follow [model]: move it into place
    text = cfg.read_text().replace("\n[model.options]\nvocab_size = 30\n", "")
    cfg.write_text(text.replace('[model]\nplugin = "mymodels.py:Bag"\n',
                                '[model]\nplugin = "mymodels.py:Bag"\noptions = { vocab_size = 30 }\n'))
    assert main(["run", str(cfg), "--no-progress"]) in (0, 1)
    report = _report(out)
    assert report["mode"] == "dp" and np.isfinite(report["claimed"]["epsilon"])
    assert len(report["utility"]["models"]) == 5


def test_token_ids_need_a_model_that_embeds_them(files, tmp_path, capsys):
    cfg = _config(files, tmp_path / "never", data="tokens.npz")
    cfg.write_text(cfg.read_text().replace('plugin = "mymodels.py:cnn"', 'name = "mlp"'))
    assert main(["run", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "model.name = 'mlp' takes float features, but data x holds int64 (token ids)" in err


@pytest.mark.parametrize("kind, variant, decision", [
    ("zoo", "no_clipping", "VIOLATION"),  # a correct white-box run passes: the example's test below
])
def test_whitebox_gradient_canaries_audit_a_plugin_model(files, tmp_path, kind, variant, decision):
    """The Dirac canaries ride beside an nn.Sequential (whose forward runs every child) and
    see the optimizer: a planted missing clipping is flagged."""
    out = tmp_path / f"wb-{kind}"
    extra = DP
    cfg = _config(files, out, kind=kind, population=0, canaries=500, canary_kind="gradient", extra=extra)
    text = cfg.read_text().replace("epochs = 1", "epochs = 2").replace("population = 0", "population = 0\nn = 400")
    if variant:
        text = text.replace(f'kind = "{kind}"', f'kind = "{kind}"\nvariant = "{variant}"')
    cfg.write_text(text)
    code = main(["run", str(cfg), "--no-progress"])
    report = _report(out)
    assert report["verdict"]["decision"] == decision and code == (1 if decision == "VIOLATION" else 0)
    assert report["utility"]["models"][0]["steps"] > 0


def test_the_own_model_example_runs_white_box_and_black_box(tmp_path, monkeypatch):
    """examples/own_model.toml in small form, as shipped (white-box) and as its header's
    black-box variant, from a directory that is not the checkout."""
    example = Path(__file__).resolve().parents[1] / "examples" / "own_model.toml"
    monkeypatch.chdir(tmp_path)
    small = ["--no-progress", "--set", "mlflow.enabled=false", "--set", "trainer.epochs=1"]
    assert main(["run", str(example), *small, "--set", "output_dir='wb'"]) == 0
    assert _report(tmp_path / "wb")["plugin"]["path"].endswith("examples/own_model.py:build_model")
    blackbox = ["--set", "audit.canary_kind='natural'", "--set", "audit.canaries=100", "--set", "audit.models=5",
                "--set", "data.population=100", "--set", "data.n=600", "--set", "output_dir='bb'"]
    assert main(["run", str(example), *small, *blackbox]) == 0
    assert _report(tmp_path / "bb")["mode"] == "dp" and len(_report(tmp_path / "bb")["utility"]["models"]) == 5


def test_resume_refuses_an_edited_model_file(files, tmp_path, capsys):
    """The report names the model file's SHA-256, and a resume after the file changed is
    refused like a changed config (the models already trained came from the old code)."""
    import shutil

    root = tmp_path / "own"
    root.mkdir()
    shutil.copy(files / "mymodels.py", root / "mymodels.py")
    shutil.copy(files / "images.npz", root / "images.npz")
    cfg = _config(root, tmp_path / "run", extra="")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    with open(root / "mymodels.py", "a") as f:
        f.write("\n# edited\n")
    assert main(["run", str(cfg), "--no-progress", "--resume"]) == 2
    assert "plugin (its file changed)" in capsys.readouterr().err


def test_an_optimizer_plugin_and_a_model_plugin_are_both_recorded(files, tmp_path):
    from audit.pipeline.preflight import check

    optimizer = Path(__file__).resolve().parents[1] / "examples" / "my_dp_optimizer.py"
    cfg = _config(files, tmp_path / "never", kind="optimizer-plugin", population=0, canary_kind="gradient", extra=DP)
    cfg.write_text(cfg.read_text().replace('kind = "optimizer-plugin"',
                                           f'kind = "optimizer-plugin"\nplugin = "{optimizer}:MyDPOptimizer"'))
    plugin = check(load_config(cfg)).plugin
    assert plugin["path"].endswith("my_dp_optimizer.py:MyDPOptimizer")
    assert plugin["model"]["path"].endswith("mymodels.py:cnn") and len(plugin["model"]["sha256"]) == 64
    assert not (tmp_path / "never").exists()


def test_resume_compares_the_model_file_beside_a_trainer_plugin(files, tmp_path):
    """With an optimizer plugin and a model plugin, an edited model file alone is refused on
    resume too (the run directory keeps both SHA-256s)."""
    from audit.pipeline import rundir

    cfg = load_config(_config(files, tmp_path / "run", extra=""))
    trainer = {"path": "opt.py:Opt", "sha256": "a" * 64}
    rundir.prepare(cfg, resume=False, plugin={**trainer, "model": {"path": "m.py:build", "sha256": "b" * 64}})
    rundir.prepare(cfg, resume=True, plugin={**trainer, "model": {"path": "m.py:build", "sha256": "b" * 64}})
    with pytest.raises(InputError, match="plugin"):
        rundir.prepare(cfg, resume=True, plugin={**trainer, "model": {"path": "m.py:build", "sha256": "c" * 64}})
