"""User data as an NPZ of arrays ``x[records, ...]`` and ``y[records]``: any record shape
(tabular rows, images, token ids), memory-mapped when stored uncompressed, validated at
the boundary with one-line errors, and the per-column NPZ layout still read as before."""

import mmap

import numpy as np
import pytest

from audit.config import parse_config
from audit.errors import InputError
from audit.pipeline import data as data_stage
from trainers.data import load_dataset, load_user_arrays, load_user_data, read_npz_arrays


def _mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is a view of a memory-mapped file (no bytes read, none copied)."""
    while a is not None and not isinstance(a, mmap.mmap):
        a = a.base
    return isinstance(a, mmap.mmap)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_uncompressed_arrays_are_memory_mapped_and_compressed_ones_read(tmp_path, digits):
    np.savez(tmp_path / "plain.npz", x=digits.x, y=digits.y)
    np.savez_compressed(tmp_path / "small.npz", x=digits.x, y=digits.y)
    plain, small = load_user_arrays(tmp_path / "plain.npz"), load_user_arrays(tmp_path / "small.npz")
    assert _mapped(plain.x) and _mapped(plain.y) and not plain.x.flags.writeable
    assert not _mapped(small.x)
    for ds in (plain, small):
        np.testing.assert_array_equal(ds.x, digits.x)
        np.testing.assert_array_equal(ds.y, digits.y)
        assert ds.x.dtype == np.float32 and ds.in_shape == (1, 8, 8) and ds.n_classes == 10
    # a split copies the records it selects, once, into ordinary memory
    assert not _mapped(plain.subset(np.arange(5)).x)


def test_a_wide_table_as_two_arrays(tmp_path):
    """Issue 18's purchase-shaped data: 2-d x (600 features) and y, not 601 columns."""
    rng = np.random.default_rng(0)
    x = (rng.random((300, 600)) < 0.5).astype(np.float32)
    y = rng.integers(0, 100, 300)
    np.savez(tmp_path / "purchase.npz", x=x, y=y)
    ds = load_user_arrays(tmp_path / "purchase.npz")
    assert _mapped(ds.x) and ds.x.shape == (300, 600) and ds.n_classes == int(y.max()) + 1
    np.testing.assert_array_equal(ds.x, x)  # used as stored: no standardisation


def test_fortran_order_and_npy_format_2_are_mapped_correctly(tmp_path):
    x = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(6, 4))
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0, 1] * 3))
    got = read_npz_arrays(tmp_path / "f.npz", ["x", "y"])
    assert _mapped(got["x"]) and got["x"].flags.f_contiguous
    np.testing.assert_array_equal(got["x"], x)


@pytest.mark.parametrize("x, y, stored", [
    (np.ones((4, 3), np.float64), [0, 1, 0, 1], np.float32),
    (np.ones((4, 3), np.int32), [0, 1, 0, 1], np.int64),
    (np.ones((4, 3), np.uint8), [0, 1, 0, 1], np.int64),
    (np.ones((4, 3), bool), [0, 1, 0, 1], np.float32),
])
def test_dtypes_become_float32_features_or_int64_token_ids(tmp_path, x, y, stored):
    np.savez(tmp_path / "d.npz", x=x, y=np.array(y))
    ds = load_user_arrays(tmp_path / "d.npz")
    assert ds.x.dtype == stored and ds.y.dtype == np.int64


@pytest.mark.parametrize("arrays, expected", [
    ({"x": np.ones((4, 2)), "lab": np.zeros(4)}, "missing arrays ['y']; file has ['x', 'lab'] (x[records, ...] and y"),
    ({"x": np.ones(4), "y": np.array([0, 1, 0, 1])}, "x has shape (4,); expected x[records, ...] with at least 2"),
    ({"x": np.ones((4, 2)), "y": np.array([0, 1, 0])}, "y has shape (3,); expected y[4]"),
    ({"x": np.ones((4, 2)), "y": np.array([0.0, 1, 0, 1])}, "y has dtype float64; expected integer class labels"),
    ({"x": np.ones((4, 2)), "y": np.array([0, -1, 0, 1])}, "y has label -1"),
    ({"x": np.ones((4, 2)), "y": np.zeros(4, np.int64)}, "single class"),
    ({"x": np.array([[1.0, 2], [np.nan, 1], [0, 0], [1, 1]]), "y": np.array([0, 1, 0, 1])},
     "x has NaN or infinite values (first at record 1)"),
    ({"x": np.array([[1, 2], [-3, 1]]), "y": np.array([0, 1])}, "x holds integer -3; expected token ids >= 0"),
    ({"x": np.array([["a"], ["b"]]), "y": np.array([0, 1])}, "x has dtype <U1; expected numbers"),
    ({"x": np.zeros((0, 3)), "y": np.zeros(0, np.int64)}, "x has shape (0, 3)"),
])
def test_bad_arrays_are_named_in_one_line(tmp_path, arrays, expected):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError) as err:
        load_user_arrays(tmp_path / "bad.npz")
    assert expected in str(err.value) and "bad.npz" in str(err.value) and "\n" not in str(err.value)


def test_pickled_objects_and_non_archives_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([[1], None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(InputError, match="holds pickled objects, which are not loaded"):
        load_user_arrays(tmp_path / "obj.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(InputError, match="not a readable .npz file"):
        load_user_arrays(tmp_path / "text.npz")
    with open(tmp_path / "single.npz", "wb") as f:
        np.save(f, np.ones((2, 2)))
    with pytest.raises(InputError, match="a single .npy array, not an .npz archive"):
        load_user_arrays(tmp_path / "single.npz")
    with pytest.raises(InputError, match="no such file"):
        load_user_arrays(tmp_path / "absent.npz")


def test_config_takes_arrays_when_label_is_empty_and_only_for_npz():
    parse_config({"data": {"path": "d.npz"}})
    parse_config({"data": {"path": "d.NPZ", "label": "y"}})  # the per-column layout, as before
    with pytest.raises(InputError, match="label is empty; expected the label column's name"):
        parse_config({"data": {"path": "d.csv"}})
    with pytest.raises(InputError, match="takes no features"):
        parse_config({"data": {"path": "d.npz", "features": ["a"]}})


def test_columns_layout_still_works_and_points_at_arrays_for_2d(tmp_path):
    np.savez(tmp_path / "cols.npz", a=np.arange(6.0), b=np.ones(6), lab=np.array([0, 1] * 3))
    ds = load_user_data(tmp_path / "cols.npz", features=None, label="lab")
    assert ds.x.shape == (6, 2) and ds.feature_names == ("a", "b")
    np.savez(tmp_path / "arr.npz", x=np.ones((6, 2)), y=np.array([0, 1] * 3))
    with pytest.raises(InputError, match=r"column 'x' has shape \(6, 2\); expected 1-d"):
        load_user_data(tmp_path / "arr.npz", features=None, label="y")


def _tree(path, **audit):
    return {"seed": 4, "data": {"path": str(path), "population": 200, "test": 300},
            "trainer": {"kind": "plain", "epochs": 2}, "audit": {"models": 5, "canaries": 100, **audit},
            "mlflow": {"enabled": False}}


def test_the_same_records_from_a_file_split_as_the_shipped_dataset(tmp_path, digits):
    """digits written as arrays and read back give the audit the very records (and split) of
    the shipped dataset: same config and seed, same numbers."""
    np.savez(tmp_path / "digits.npz", x=digits.x, y=digits.y)
    from_file = data_stage.build(parse_config(_tree(tmp_path / "digits.npz")))
    shipped = data_stage.build(parse_config({**_tree(""), "data": {"name": "digits", "population": 200, "test": 300}}))
    for part in ("base", "canaries", "population", "test"):
        np.testing.assert_array_equal(getattr(from_file, part).x, getattr(shipped, part).x)
        np.testing.assert_array_equal(getattr(from_file, part).y, getattr(shipped, part).y)
    assert from_file.base.name == "digits"


@pytest.mark.parametrize("model", [{"name": "mlp", "widths": [16]}, {"name": "logreg"}])
def test_builtin_models_flatten_images(tmp_path, digits, model):
    """mlp and logreg flatten x[records, 1, 8, 8] (cnn takes the images as they are)."""
    from audit.pipeline import run_audit

    np.savez(tmp_path / "digits.npz", x=digits.x, y=digits.y)
    tree = {**_tree(tmp_path / "digits.npz"), "model": model, "output_dir": str(tmp_path / "run"),
            "trainer": {"kind": "plain", "epochs": 3, "lr": 0.5}}
    report = run_audit(parse_config(tree), progress=False)
    assert report["verdict"]["decision"] == "REPORTED" and report["utility"]["test_accuracy"] > 0.5


def test_builtin_models_refuse_token_ids_and_crafted_canaries_refuse_them(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tokens.npz", x=rng.integers(0, 50, (900, 10)), y=rng.integers(0, 2, 900))
    tree = _tree(tmp_path / "tokens.npz")
    with pytest.raises(InputError, match="takes float features, but data x holds int64"):
        from audit.pipeline.preflight import check

        check(parse_config(tree))
    with pytest.raises(InputError, match="canary_kind = 'clipbkd' crafts float inputs"):
        data_stage.build(parse_config({**tree, "audit": {**tree["audit"], "canary_kind": "clipbkd"}}))
    # natural canaries keep the ids as ids
    built = data_stage.build(parse_config({**tree, "audit": {**tree["audit"], "canary_kind": "natural"}}))
    assert built.canaries.x.dtype == np.int64 and built.base.x.dtype == np.int64
