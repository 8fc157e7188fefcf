"""trainers.thirdparty.diffprivlib_plugins: diffprivlib models as black-box plugins, and
experiments.third_party's quick run."""

import json
import math
import warnings

import numpy as np
import pytest
from diffprivlib.utils import PrivacyLeakWarning

from audit.config import parse_config
from audit.errors import InputError
from audit.pipeline.preflight import resolve_blackbox_claim
from trainers.data import load_dataset
from trainers.plugins import load_blackbox_plugin
from trainers.thirdparty import diffprivlib_plugins as dpl

# diffprivlib 0.6.6's L-BFGS call, not ours
pytestmark = pytest.mark.filterwarnings("ignore:scipy.optimize:DeprecationWarning")

EPSILONS = (1.0, 2.0, 4.0)
CORRECT = ("logreg_correct", "gnb_correct")
LEAKY = ("logreg_no_data_norm", "gnb_no_bounds")  # diffprivlib reads a bound from the data and warns


@pytest.fixture(scope="module")
def fair():
    data = load_dataset("fair", seed=0)
    idx = np.random.default_rng(0).permutation(len(data))
    return data.x[idx[:600]], data.y[idx[:600]], data.x[idx[600:800]], data.y[idx[600:800]]


def _path(name, epsilon):
    return f"trainers.thirdparty.diffprivlib_eps{epsilon:g}:{name}"


@pytest.mark.parametrize("epsilon", EPSILONS)
@pytest.mark.parametrize("name", sorted(dpl.PLUGINS))
def test_plugins_load_with_the_epsilon_diffprivlib_is_given(name, epsilon):
    trainer = load_blackbox_plugin(_path(name, epsilon))
    assert (trainer.epsilon, trainer.delta) == (epsilon, 0.0)  # pure DP, as diffprivlib documents
    assert trainer.train_fn.epsilon == epsilon and trainer.train_fn.variant == name
    assert trainer.train_fn.domain == dpl.FAIR


def test_a_config_cannot_audit_another_claim():
    tree = {"trainer": {"kind": "blackbox-plugin", "plugin": _path("logreg_correct", 1.0)}, "mlflow": {"enabled": False}}
    resolved = resolve_blackbox_claim(parse_config(tree))
    assert resolved.dp.claimed_epsilon == 1.0 and resolved.dp.delta == 1e-5  # delta 0 audited at dp.delta
    with pytest.raises(InputError, match="contradicts the plugin's CLAIMED_EPSILON"):
        resolve_blackbox_claim(parse_config({**tree, "dp": {"claimed_epsilon": 4.0}}))


@pytest.mark.filterwarnings("ignore::diffprivlib.utils.PrivacyLeakWarning")
@pytest.mark.parametrize("name", sorted(dpl.PLUGINS))
def test_models_give_probabilities_over_the_public_label_set(name, fair):
    x, y, xq, yq = fair
    model = load_blackbox_plugin(_path(name, 4.0)).fit(x, y, seed=3)
    probs = model.predict_proba(xq)  # BlackBoxModel checks finite, non-negative, rows summing to 1
    assert probs.shape == (len(xq), 2)
    assert (probs.argmax(axis=1) == yq).mean() > 0.6  # better than chance (about 0.69 majority here)
    again = load_blackbox_plugin(_path(name, 4.0)).fit(x, y, seed=3).predict_proba(xq)
    np.testing.assert_array_equal(probs, again)  # the seed drives diffprivlib's noise
    other = load_blackbox_plugin(_path(name, 4.0)).fit(x, y, seed=4).predict_proba(xq)
    assert not np.allclose(probs, other)


@pytest.mark.parametrize("name", CORRECT)
def test_correct_plugins_never_read_a_bound_from_the_data(name, fair):
    x, y, xq, _ = fair
    far = np.vstack([x, 50 * np.ones((1, x.shape[1]), dtype=x.dtype)])  # far outside the public bounds
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyLeakWarning)
        load_blackbox_plugin(_path(name, 1.0)).fit(far, np.append(y, 1), seed=0).predict_proba(xq)


@pytest.mark.parametrize("name", LEAKY)
def test_misconfigured_plugins_read_a_bound_from_the_data(name, fair):
    x, y, _, _ = fair
    with pytest.warns(PrivacyLeakWarning):
        load_blackbox_plugin(_path(name, 1.0)).fit(x, y, seed=0)


def test_the_public_preprocessing_clips_as_declared():
    x = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    np.testing.assert_allclose(dpl.clip_rows(x, 1.0), [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])
    np.testing.assert_allclose(dpl.clip_features(x, -1.0, 1.0), [[1.0, 1.0], [0.3, 0.4], [0.0, 0.0]])
    assert dpl.FAIR.data_norm == pytest.approx(4.0) and (dpl.FAIR.lower, dpl.FAIR.upper) == (-3.0, 3.0)


def test_label_set_given_or_read_from_the_data(fair):
    x, y, xq, _ = fair
    only0 = y == 0
    given = dpl.gnb_correct(1.0)(x[only0], y[only0], seed=0)
    read = dpl.gnb_no_classes(1.0)(x[only0], y[only0], seed=0)
    assert list(given.model.classes_) == [0, 1] and list(read.model.classes_) == [0]
    for model in (given, read):  # both answer over the public label set ...
        probs = model.predict_proba(xq)
        assert probs.shape == (len(xq), 2)
        # ... and both give an absent class probability exactly 0: diffprivlib draws no noisy
        # count for a class without records, even when the label set is given (see the experiment)
        assert np.all(probs[:, 1] == 0.0)


def test_bad_domains_and_labels_are_refused(fair):
    x, y, _, _ = fair
    for kwargs in ({"classes": (0,)}, {"classes": (0, 0)}, {"data_norm": 0.0}, {"data_norm": math.inf},
                   {"lower": 1.0, "upper": 1.0}):
        with pytest.raises(InputError):
            dpl.PublicDomain(**{"classes": (0, 1), "data_norm": 1.0, "lower": -1.0, "upper": 1.0, **kwargs})
    with pytest.raises(InputError, match="outside the public label set"):
        dpl.logreg_correct(1.0)(x, np.where(y == 1, 2, 0), seed=0)
    for bad in (0.0, -1.0, math.inf, True):
        with pytest.raises(InputError, match="epsilon"):
            dpl.gnb_correct(bad)


def test_quick_experiment_writes_markdown_and_json(tmp_path):
    from experiments import third_party as T

    with pytest.raises(InputError, match="no plugin module"):
        T.plugin_path("logreg_correct", 3.0)
    assert T.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "third_party.md").read_text()
    payload = json.loads((tmp_path / "third_party.json").read_text())
    assert payload["versions"]["diffprivlib"] == "0.6.6"
    for name in ("diffprivlib", "numpy", "scikit-learn"):
        assert f"{name} {payload['versions'][name]}" in text
    assert "OMP_NUM_THREADS=1 python -m experiments.third_party --quick" in text
    pipeline = {r["plugin"]: r for r in payload["pipeline"]}
    assert set(pipeline) == set(T.PLUGINS)
    for name, r in pipeline.items():
        assert r["claimed_epsilon"] == r["epsilon"] == 1.0 and r["claimed_delta"] == T.DELTA
        assert 0.0 <= r["epsilon_lower_bound"] <= r["power"] and 0.5 < r["test_accuracy"] <= 1.0
        assert (r["warnings"].get("PrivacyLeakWarning", 0) > 0) == (name in LEAKY)
        assert f"| `{name}` | 1 |" in text
    for r in payload["pipeline"] + [r for r in payload["replace_one"] if r["probe"] == "range"]:
        if r["plugin"] in CORRECT:
            assert r["decision"] != "VIOLATION", r
    label = {r["plugin"]: r for r in payload["replace_one"] if r["probe"] == "label"}
    runs = T.QUICK.runs
    # an absent class is certain to show: every run separated, the bound at its ceiling
    assert label["gnb_no_classes"]["decision"] == "VIOLATION"
    assert (label["gnb_no_classes"]["tp"], label["gnb_no_classes"]["fp"]) == (runs, 0)
    assert label["gnb_no_classes"]["epsilon_lower_bound"] == pytest.approx(label["gnb_no_classes"]["ceiling"])
    # --render rewrites the same Markdown from the JSON alone
    (tmp_path / "third_party.md").unlink()
    assert T.main(["--render", str(tmp_path / "third_party.json")]) == 0
    assert (tmp_path / "third_party.md").read_text() == text
