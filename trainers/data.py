"""Datasets for training target and shadow models, all available offline.

Shipped datasets are registered by name in ``LOADERS`` (a name -> loader registry, after
opacus' ``accountants/registry.py``); ``load_dataset(name, seed=..., **size)`` looks the
name up. Each loader returns a :class:`Dataset` with ``x: float32[n, ...]`` and
``y: int64[n]`` labels in ``0..n_classes-1``.

- ``randhie``: RAND Health Insurance Experiment (statsmodels, 20,190 people); the label is
  the number of outpatient visits ``mdvis`` binned by ``mdvis_bins`` (default edges
  ``(1, 3, 6)``: 0, 1-2, 3-5, 6+ visits -> 4 classes); the other 9 columns are features.
- ``fair``: Fair's affairs survey (statsmodels, 6,366 women); label ``affairs > 0``.
- ``purchase``: synthetic Purchase-100-like data (Shokri et al., "Membership Inference
  Attacks against Machine Learning Models", S&P 2017, uses 600 binary purchase features
  and 100 clusters as classes). Here each class has a random binary prototype and a record
  is its class prototype with every bit flipped independently with ``flip_prob``.
- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images), ``x: float32[n, 1, 8, 8]``
  scaled to [0, 1].

Tabular features (randhie, fair, user data) are standardised to zero mean and unit
variance over the whole loaded table; binary (purchase) and image (digits) features are not.

User data, two layouts (no pickled objects are ever loaded):

- a table, :func:`load_user_data`: CSV, Parquet or NPZ with named feature and label
  columns (NPZ: one 1-d array per column), standardised like the shipped tables;
- arrays, :func:`load_user_arrays`: an NPZ holding ``x[records, ...]`` of any shape
  (tabular rows, images, token ids) and ``y[records]`` integer labels, used as stored
  (no standardisation). Floating ``x`` becomes float32, integer ``x`` int64 (token ids for
  an embedding model). Members written uncompressed (``np.savez``) are memory-mapped, not
  read: a record's bytes are read (and copied, once) only when a split selects it.
  Compressed members (``np.savez_compressed``) are decompressed once.

Splits: :func:`split_dataset` draws disjoint ``pool`` (from which each model's training
subset is drawn), ``population`` (reference data for attacks) and ``test`` (utility) sets
from a seed.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from audit.errors import InputError


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled dataset.

    x: float32[n, ...] features (tabular: [n, d]; images: [n, channels, h, w]), or
       int64[n, ...] token ids (a user's arrays, for a model that embeds them).
    y: int64[n] class indices in ``0..n_classes-1``.
    """

    x: np.ndarray
    y: np.ndarray
    n_classes: int
    name: str
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.x.dtype not in (np.float32, np.int64):
            raise InputError(f"Dataset.x dtype is {self.x.dtype}; expected float32 (features) or int64 (token ids)")
        if self.y.dtype != np.int64 or self.y.ndim != 1:
            raise InputError(f"Dataset.y is {self.y.dtype}{list(self.y.shape)}; expected int64[n]")
        if len(self.x) != len(self.y):
            raise InputError(f"Dataset has {len(self.x)} rows of x but {len(self.y)} labels")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.n_classes):
            raise InputError(
                f"labels span [{self.y.min()}, {self.y.max()}]; expected 0..{self.n_classes - 1}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one record's features, e.g. ``(d,)`` or ``(1, 8, 8)``."""
        return tuple(self.x.shape[1:])

    def subset(self, index: np.ndarray) -> "Dataset":
        """Rows ``index`` (int64[m] or bool[n]) as a new dataset."""
        return dataclasses.replace(self, x=self.x[index], y=self.y[index])


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """Disjoint splits of one dataset; ``*_index: int64[m]`` are row indices into the source."""

    pool: Dataset
    population: Dataset
    test: Dataset
    pool_index: np.ndarray
    population_index: np.ndarray
    test_index: np.ndarray


Loader = Callable[..., Dataset]
LOADERS: dict[str, Loader] = {}


def register_loader(name: str, loader: Loader, *, force: bool = False) -> None:
    """Register ``loader(*, seed, **size) -> Dataset`` under ``name``."""
    if name in LOADERS and not force:
        raise InputError(f"a dataset loader named {name!r} is already registered")
    LOADERS[name] = loader


def load_dataset(name: str, *, seed: int, **size) -> Dataset:
    """Load the registered dataset ``name``; ``size`` keywords go to its loader.

    ``seed`` drives subsampling (``n=``) and synthetic generation; the same seed gives
    the same dataset.
    """
    if name not in LOADERS:
        raise InputError(f"unknown dataset {name!r}; expected one of {sorted(LOADERS)}")
    loader = LOADERS[name]
    try:
        inspect.signature(loader).bind(seed=seed, **size)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(loader).parameters if p != "seed"]
        raise InputError(f"dataset {name!r} got size options {sorted(size)}; expected some of {accepted}") from exc
    return loader(seed=seed, **size)


def standardise(x: np.ndarray) -> np.ndarray:
    """Columns of ``x: float[n, d]`` to zero mean, unit variance (constant columns -> 0)."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return ((x - x.mean(axis=0)) / std).astype(np.float32)


def subsample(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """``n`` records of ``ds`` drawn without replacement from ``seed`` (all when ``n`` is None), in file order."""
    if n is None:
        return ds
    if not isinstance(n, (int, np.integer)) or not 0 < n <= len(ds):
        raise InputError(f"n={n!r} for dataset {ds.name!r}; expected an int in 1..{len(ds)}")
    rng = np.random.default_rng(seed)
    return ds.subset(np.sort(rng.choice(len(ds), size=int(n), replace=False)))


def _load_randhie(*, seed: int, n: int | None = None, mdvis_bins: Sequence[float] = (1, 3, 6)) -> Dataset:
    from statsmodels.datasets import randhie

    frame = randhie.load_pandas().data
    edges = np.asarray(mdvis_bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) == 0 or np.any(np.diff(edges) <= 0):
        raise InputError(f"mdvis_bins={tuple(mdvis_bins)!r}; expected increasing bin edges")
    y = np.digitize(frame["mdvis"].to_numpy(), edges).astype(np.int64)
    features = [c for c in frame.columns if c != "mdvis"]
    x = standardise(frame[features].to_numpy())
    ds = Dataset(x=x, y=y, n_classes=len(edges) + 1, name="randhie", feature_names=tuple(features))
    return subsample(ds, n, seed)


def _load_fair(*, seed: int, n: int | None = None) -> Dataset:
    from statsmodels.datasets import fair

    frame = fair.load_pandas().data
    y = (frame["affairs"].to_numpy() > 0).astype(np.int64)
    features = [c for c in frame.columns if c != "affairs"]
    x = standardise(frame[features].to_numpy())
    ds = Dataset(x=x, y=y, n_classes=2, name="fair", feature_names=tuple(features))
    return subsample(ds, n, seed)


def make_purchase(
    *,
    seed: int,
    n: int = 10_000,
    n_features: int = 600,
    n_classes: int = 100,
    flip_prob: float = 0.4,
    density: float = 0.5,
) -> Dataset:
    """Synthetic Purchase-100-like data.

    Class prototypes: bool[n_classes, n_features], each bit Bernoulli(``density``).
    Record i: class c_i uniform, features = prototype[c_i] XOR Bernoulli(``flip_prob``) bits.
    Returns ``x: float32[n, n_features]`` in {0, 1}.

    The default ``flip_prob=0.4`` makes the task about as hard as the real one: a 128-unit
    MLP (Adam, 20 epochs) on 5,000 records reaches train 1.00 / test 0.66 (measured, seed 0);
    Shokri et al. report a comparable train/test gap on Purchase-100. At 0.3 the classes
    separate perfectly (test 1.00), leaving little membership signal.
    """
    for label, value, low in (("n", n, 1), ("n_features", n_features, 1), ("n_classes", n_classes, 2)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{label}={value!r}; expected an int >= {low}")
    for label, value in (("flip_prob", flip_prob), ("density", density)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{label}={value!r}; expected a probability in [0, 1]")
    rng = np.random.default_rng(seed)
    prototypes = rng.random((n_classes, n_features)) < density
    y = rng.integers(0, n_classes, size=n)
    flips = rng.random((n, n_features)) < flip_prob
    x = (prototypes[y] ^ flips).astype(np.float32)
    return Dataset(x=x, y=y.astype(np.int64), n_classes=int(n_classes), name="purchase")


def _load_digits(*, seed: int, n: int | None = None) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    ds = Dataset(x=x, y=bunch.target.astype(np.int64), n_classes=10, name="digits")
    return subsample(ds, n, seed)


register_loader("randhie", _load_randhie)
register_loader("fair", _load_fair)
register_loader("purchase", make_purchase)
register_loader("digits", _load_digits)


def _read_columns(path: Path, names: list[str] | None) -> dict[str, np.ndarray]:
    """Read the named columns (all with ``names=None``) of a CSV, Parquet or NPZ file as 1-d arrays."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
        with archive:
            names = list(archive.files) if names is None else names
            missing = [c for c in names if c not in archive.files]
            if missing:
                raise InputError(f"{path}: missing columns {missing}; file has {archive.files}")
            try:
                columns = {c: archive[c] for c in names}
            except ValueError as exc:  # object arrays need pickle, which we refuse
                raise InputError(f"{path}: column holds pickled objects, which are not loaded") from exc
        for c, col in columns.items():
            if col.ndim != 1:
                raise InputError(f"{path}: column {c!r} has shape {col.shape}; expected 1-d")
        return columns
    import pandas as pd

    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise InputError(f"{path}: unsupported extension {suffix!r}; expected .csv, .parquet or .npz")
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{path}: file is empty; expected a header and rows") from exc
    except InputError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:  # ragged rows, binary bytes
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise InputError(f"{path}: not a readable {kind} table ({' '.join(str(exc).split())[:200]})") from None
    except (OSError, ValueError, ImportError) as exc:  # pyarrow: not a Parquet file (ArrowInvalid is a ValueError)
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise InputError(f"{path}: not a readable {kind} table ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    names = [str(c) for c in frame.columns] if names is None else names
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}; file has {list(frame.columns)}")
    return {c: frame[c].to_numpy() for c in names}


def load_user_data(
    path: str | os.PathLike,
    *,
    features: Sequence[str] | None,
    label: str,
    standardise_features: bool = True,
    name: str | None = None,
) -> Dataset:
    """Load a user's table: ``features`` columns -> ``x: float32[n, d]``, ``label`` -> ``y``.

    ``features=None`` takes every column except ``label``, in file order.

    Labels may be integers or strings; they are encoded as indices into their sorted
    unique values. Raises :class:`InputError` for a missing file or column, an empty table,
    NaN or non-numeric features, missing labels, or fewer than two classes.
    """
    path = Path(path)
    if features is not None and (isinstance(features, str) or len(features) == 0):
        raise InputError(f"features={features!r}; expected a non-empty list of column names or None")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty; expected a header and rows")
    columns = _read_columns(path, None if features is None else [*features, label])
    if label not in columns:
        raise InputError(f"{path}: missing columns {[label]}; file has {list(columns)}")
    if features is None:
        features = [c for c in columns if c != label]
        if not features:
            raise InputError(f"{path}: no feature columns besides label {label!r}")
    n = len(columns[label])
    if n == 0:
        raise InputError(f"{path}: table has no rows")
    xs = []
    for c in features:
        col = columns[c]
        if col.dtype.kind not in "biuf":
            raise InputError(f"{path}: feature column {c!r} is non-numeric (dtype {col.dtype}); expected numbers")
        col = col.astype(np.float64)
        if not np.all(np.isfinite(col)):
            bad = int(np.flatnonzero(~np.isfinite(col))[0])
            raise InputError(f"{path}: feature column {c!r} has NaN or infinite values (first at row {bad})")
        xs.append(col)
    x = np.stack(xs, axis=1)
    raw = columns[label]
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)):
            raise InputError(f"{path}: label column {label!r} has NaN or infinite values")
        if np.any(raw != np.round(raw)):
            raise InputError(f"{path}: label column {label!r} has non-integer values; expected class labels")
        raw = raw.astype(np.int64)
    elif raw.dtype.kind == "O":
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in raw):
            raise InputError(f"{path}: label column {label!r} has missing values")
        raw = raw.astype(str)
    classes, y = np.unique(raw, return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"{path}: label column {label!r} has a single class {classes.tolist()}; expected >= 2")
    x = standardise(x) if standardise_features else x.astype(np.float32)
    return Dataset(
        x=x, y=y.astype(np.int64).ravel(), n_classes=len(classes),
        name=name or path.stem, feature_names=tuple(features),
    )


def _npz_members(path: Path) -> dict[str, tuple[int, int]]:
    """``{name: (offset, size)}`` of the members of the zip ``path`` stored uncompressed:
    the byte range of each member's ``.npy`` bytes inside the file (after its local header)."""
    import struct
    import zipfile

    out = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # compressed or encrypted
                continue
            raw.seek(info.header_offset)
            header = raw.read(30)
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                continue
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            out[info.filename] = (info.header_offset + 30 + name_len + extra_len, info.file_size)
    return out


def _mapped_npy(path: Path, offset: int, size: int) -> np.ndarray | None:
    """The ``.npy`` array stored at ``offset`` in ``path`` as a read-only memory map, or
    None when it cannot be mapped (object dtype, empty, an unexpected header)."""
    from numpy.lib import format as npy

    with open(path, "rb") as raw:
        raw.seek(offset)
        try:
            version = npy.read_magic(raw)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(raw)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(raw)
            else:  # format 3.0 (utf-8 field names) has no public reader: read it instead
                return None
        except ValueError:
            return None
        data_start = raw.tell()
    if dtype.hasobject or 0 in shape or not shape:
        return None
    if data_start - offset + math.prod(shape) * dtype.itemsize > size:
        return None
    # a plain ndarray view of the map (np.memmap's subclass would follow slices around)
    return np.asarray(np.memmap(path, dtype=dtype, mode="r", offset=data_start, shape=shape, order="F" if fortran else "C"))


def read_npz_arrays(path: str | os.PathLike, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the NPZ ``path``, never unpickling: uncompressed members as
    read-only memory maps (no read, no copy), compressed ones decompressed once.
    InputError for an unreadable file, a missing name or an object (pickled) array."""
    import zipfile

    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: a single .npy array, not an .npz archive; expected arrays {list(names)}")
    with archive:
        missing = [n for n in names if n not in archive.files]
        if missing:
            raise InputError(f"{path}: missing arrays {missing}; file has {archive.files}")
        try:
            stored = _npz_members(path)
        except (zipfile.BadZipFile, OSError):
            stored = {}
        out = {}
        for n in names:
            member = f"{n}.npy"
            mapped = _mapped_npy(path, *stored[member]) if member in stored else None
            if mapped is not None:
                out[n] = mapped
                continue
            try:
                out[n] = archive[n]
            except ValueError as exc:  # object arrays need pickle, which we refuse
                raise InputError(f"{path}: array {n!r} holds pickled objects, which are not loaded") from exc
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise InputError(f"{path}: array {n!r} is not readable ({exc})") from None
    return out


def _first_non_finite(x: np.ndarray, chunk: int = 1 << 14) -> int | None:
    """The first record of ``x`` (float) holding a NaN or infinity, else None; in chunks
    of records, so a memory-mapped file is read once without a full-size temporary."""
    for start in range(0, len(x), chunk):
        bad = ~np.isfinite(x[start : start + chunk].reshape(min(chunk, len(x) - start), -1)).all(axis=1)
        if bad.any():
            return start + int(np.flatnonzero(bad)[0])
    return None


def load_user_arrays(path: str | os.PathLike, *, name: str | None = None) -> Dataset:
    """Load a user's NPZ of arrays ``x[records, ...]`` (any shape) and ``y[records]``.

    ``x``: floating -> float32 (finite), integer -> int64 (ids >= 0), bool -> float32; kept
    as stored otherwise (memory-mapped when stored uncompressed as float32 or int64, see
    the module docstring). ``y``: integers in ``0..C-1`` with ``C = y.max() + 1 >= 2``
    classes. Raises :class:`InputError` naming the file and the array for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty; expected an .npz with arrays x and y")
    try:
        arrays = read_npz_arrays(path, ["x", "y"])
    except InputError as err:
        if "missing arrays" in str(err):
            raise InputError(f"{err} (x[records, ...] and y[records] integer labels; or set data.label to read "
                             "one 1-d array per column)") from None
        raise
    x, y = arrays["x"], arrays["y"]
    if x.ndim < 2:
        raise InputError(f"{path}: x has shape {x.shape}; expected x[records, ...] with at least 2 dimensions "
                         "(one row per record; a single feature is x[records, 1])")
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"{path}: y has shape {y.shape}; expected y[{len(x)}], one label per record of x {x.shape}")
    if len(x) == 0 or 0 in x.shape:
        raise InputError(f"{path}: x has shape {x.shape}; expected records with at least one value")
    if y.dtype.kind not in "iu":
        raise InputError(f"{path}: y has dtype {y.dtype}; expected integer class labels 0..C-1")
    y = np.asarray(y, dtype=np.int64)  # no copy for int64 (a mapped file stays mapped)
    if y.min() < 0:
        raise InputError(f"{path}: y has label {int(y.min())}; expected integer class labels 0..C-1")
    n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise InputError(f"{path}: y holds a single class {[0]}; expected >= 2 classes")
    kind = x.dtype.kind
    if kind == "f":
        bad = _first_non_finite(x)
        if bad is not None:
            raise InputError(f"{path}: x has NaN or infinite values (first at record {bad})")
        x = x if x.dtype == np.float32 else x.astype(np.float32)
    elif kind in "iu":
        if x.dtype.kind == "i" and x.min() < 0:
            raise InputError(f"{path}: x holds integer {int(x.min())}; expected token ids >= 0 (or store float features)")
        if x.dtype == np.uint64 and x.max() > np.iinfo(np.int64).max:
            raise InputError(f"{path}: x holds ids beyond int64")
        x = x if x.dtype == np.int64 else x.astype(np.int64)
    elif kind == "b":
        x = x.astype(np.float32)
    else:
        raise InputError(f"{path}: x has dtype {x.dtype}; expected numbers (floats, or integer token ids)")
    return Dataset(x=x, y=y, n_classes=n_classes, name=name or path.stem)


def split_dataset(ds: Dataset, *, pool: int, population: int, test: int, seed: int) -> Splits:
    """Disjoint random ``pool``, ``population`` and ``test`` subsets (sizes in records).

    One permutation from ``np.random.default_rng(seed)``; the same seed gives the same splits.
    """
    sizes = {"pool": pool, "population": population, "test": test}
    for label, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"{label}={value!r}; expected a non-negative int")
    if pool == 0:
        raise InputError("pool=0; expected at least one training record")
    if sum(sizes.values()) > len(ds):
        raise InputError(
            f"pool+population+test = {sum(sizes.values())} exceeds the {len(ds)} records of {ds.name!r}"
        )
    order = np.random.default_rng(seed).permutation(len(ds))
    idx_pool = np.sort(order[:pool])
    idx_pop = np.sort(order[pool : pool + population])
    idx_test = np.sort(order[pool + population : pool + population + test])
    return Splits(
        pool=ds.subset(idx_pool), population=ds.subset(idx_pop), test=ds.subset(idx_test),
        pool_index=idx_pool, population_index=idx_pop, test_index=idx_test,
    )
