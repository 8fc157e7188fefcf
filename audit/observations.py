"""Observations: what the attacks see of K trained models.

One container, :class:`Observations`, holds per model x record outputs:

- ``logits: float[models, records, queries, classes]`` (black box; queries are
  augmentations or repeated/perturbed queries), and/or
- ``stats: float[models, records, stats]`` (white-box statistics, e.g. per-example
  gradient norms or gradient-canary dot products),
- ``labels: int[records]``, ``keep: bool[models, records]`` (True = record was in that
  model's training set), an optional ``population: bool[records]`` mask of reference
  records that no model trained on, and JSON-serialisable metadata.

Storage (no pickle anywhere):

- a single ``.npz`` (:func:`save_observations`, :func:`load_observations`); the
  interchange format holds just ``logits``, ``labels`` and ``keep`` and loads without
  metadata; metadata is stored as a JSON string in a 0-d unicode array;
- a run directory grown model by model (:class:`ObservationRun`): ``manifest.json``,
  ``shared.npz`` (labels, population) and one ``model-XXXXX.npz`` per model. Each model
  file is written atomically, then the manifest is rewritten atomically, so a kill at
  any point leaves a readable run whose ``n_models_done`` counts only complete models;
- the LiRA reference layout of Carlini et al. (2022), tensorflow/privacy
  ``research/mi_lira_2021``: ``experiment-K_N/keep.npy`` (bool[records]),
  ``experiment-K_N/hparams.json`` (with ``expid`` = K) and
  ``experiment-K_N/logits/<epoch>.npy`` (``float[records, 1, queries, classes]`` as
  written by its ``inference.py``), beside ``y_train.npy``; models are ordered by
  experiment number K, see :func:`import_lira_layout` and :func:`export_lira_layout`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from audit.atomic import atomic_open
from audit.errors import InputError

__all__ = [
    "Observations",
    "ObservationRun",
    "n_models_done",
    "from_named_statistics",
    "save_observations",
    "load_observations",
    "run_directory",
    "import_lira_layout",
    "export_lira_layout",
    "check_export_target",
    "synthetic_observations",
]

_FORMAT = "dpaudit-observations"
_RUN_FORMAT = "dpaudit-observations-run"
_VERSION = 1


def _check_metadata(meta: dict[str, Any]) -> None:
    """Type-check the well-known metadata keys; other keys are free-form JSON."""
    for key in ("dataset", "trainer"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise InputError(f"metadata.{key}: expected a string, got {meta[key]!r}")
    seed = meta.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InputError(f"metadata.seed: expected an integer, got {seed!r}")
    eps = meta.get("claimed_epsilon")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0):
        raise InputError(f"metadata.claimed_epsilon: expected a non-negative number, got {eps!r}")


def _as_keep(name: str, value: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise InputError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise InputError(f"{name}: expected booleans (or integers 0/1), got dtype {arr.dtype}")


def _as_float(name: str, value: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise InputError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{name}: {int(bad.sum())} non-finite values (NaN or inf), first at index {first}"
        )
    return arr


def _as_labels(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise InputError(f"labels: expected 1 dimension [records], got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise InputError(f"labels: expected integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Observations:
    """Outputs of K models on the same records, with who trained on what.

    Attributes:
        keep: bool[models, records]; ``keep[m, i]`` is True when model ``m`` trained on
            record ``i``.
        labels: int[records] (required with ``logits``; may be None for white-box only).
        logits: float[models, records, queries, classes] or None.
        stats: float[models, records, stats] or None (white-box statistics).
        population: bool[records] or None. Reference records that no model trained on
            (RMIA's population set). None means: the records whose keep column is all
            False (see :attr:`population_mask`).
        metadata: JSON-serialisable mapping; known keys are checked: ``dataset`` and
            ``trainer`` (str), ``seed`` (int), ``claimed_epsilon`` (number >= 0; may be
            ``Infinity`` for a non-private model), ``stat_names`` (list of str, one per
            ``stats`` column, so white-box attacks can pick a column by name).

    Validated on construction; raises :class:`audit.errors.InputError` naming the array.
    """

    keep: np.ndarray
    labels: np.ndarray | None = None
    logits: np.ndarray | None = None
    stats: np.ndarray | None = None
    population: np.ndarray | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        keep = _as_keep("keep", self.keep, 2)
        n_models, n_records = keep.shape
        if n_models < 1 or n_records < 1:
            raise InputError(f"keep: expected at least one model and one record, got {keep.shape}")
        object.__setattr__(self, "keep", keep)
        if self.logits is None and self.stats is None:
            raise InputError("observations: need logits or stats (white-box), got neither")
        if self.logits is not None:
            logits = np.asarray(self.logits)
            if logits.ndim == 3:  # [models, records, classes]: a single query
                logits = logits[:, :, None, :]
            logits = _as_float("logits", logits, 4)
            if logits.shape[:2] != keep.shape:
                raise InputError(
                    f"logits: shape {logits.shape} disagrees with keep {keep.shape} "
                    "(expected [models, records, queries, classes])"
                )
            if logits.shape[2] < 1 or logits.shape[3] < 2:
                raise InputError(f"logits: need >= 1 query and >= 2 classes, got {logits.shape}")
            object.__setattr__(self, "logits", logits)
            if self.labels is None:
                raise InputError("labels: required with logits, got None")
        if self.labels is not None:
            labels = _as_labels(self.labels)
            if labels.shape[0] != n_records:
                raise InputError(f"labels: {labels.shape[0]} records, keep has {n_records}")
            if self.logits is not None:
                n_classes = self.logits.shape[3]
                if labels.min() < 0 or labels.max() >= n_classes:
                    raise InputError(
                        f"labels: expected values in [0, {n_classes}), "
                        f"got range [{labels.min()}, {labels.max()}]"
                    )
            object.__setattr__(self, "labels", labels)
        if self.stats is not None:
            stats = _as_float("stats", self.stats, 3)
            if stats.shape[:2] != keep.shape:
                raise InputError(
                    f"stats: shape {stats.shape} disagrees with keep {keep.shape} "
                    "(expected [models, records, stats])"
                )
            object.__setattr__(self, "stats", stats)
        if self.population is not None:
            population = _as_keep("population", self.population, 1)
            if population.shape[0] != n_records:
                raise InputError(f"population: {population.shape[0]} records, keep has {n_records}")
            trained = keep[:, population].any(axis=0)
            if trained.any():
                raise InputError(
                    f"population: {int(trained.sum())} population records are IN for some model "
                    "(population records must be OUT for all models)"
                )
            object.__setattr__(self, "population", population)
        try:
            metadata = json.loads(json.dumps(dict(self.metadata)))
        except (TypeError, ValueError) as err:
            raise InputError(f"metadata: expected a JSON-serialisable mapping ({err})") from err
        _check_metadata(metadata)
        names = metadata.get("stat_names")
        if names is not None:
            n_stats = None if self.stats is None else self.stats.shape[2]
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)
                    and len(set(names)) == len(names) and len(names) == n_stats):
                raise InputError(
                    f"metadata.stat_names: expected {n_stats} distinct names, one per stats column, got {names!r}"
                )
        object.__setattr__(self, "metadata", metadata)

    @property
    def n_models(self) -> int:
        return int(self.keep.shape[0])

    @property
    def n_records(self) -> int:
        return int(self.keep.shape[1])

    @property
    def n_queries(self) -> int:
        return 0 if self.logits is None else int(self.logits.shape[2])

    @property
    def population_mask(self) -> np.ndarray:
        """bool[records]: the explicit population, else records OUT for every model."""
        if self.population is not None:
            return self.population
        return ~self.keep.any(axis=0)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays as stored in an ``.npz`` (metadata as a 0-d JSON string)."""
        out: dict[str, np.ndarray] = {"keep": self.keep}
        if self.labels is not None:
            out["labels"] = self.labels
        if self.logits is not None:
            out["logits"] = self.logits
        if self.stats is not None:
            out["stats"] = self.stats
        if self.population is not None:
            out["population"] = self.population
        out["metadata"] = np.array(json.dumps({"format": _FORMAT, "version": _VERSION, **self.metadata}))
        return out


def select_records(observations: Observations, index: np.ndarray) -> Observations:
    """The observations restricted to the records ``index`` (all models), in that order."""
    o = observations
    return replace(
        o,
        keep=o.keep[:, index],
        labels=None if o.labels is None else o.labels[index],
        logits=None if o.logits is None else o.logits[:, index],
        stats=None if o.stats is None else o.stats[:, index],
        population=None if o.population is None else o.population[index],
    )


def from_named_statistics(
    keep: np.ndarray,
    statistics: Mapping[str, np.ndarray],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Observations:
    """White-box observations from named statistics, e.g. the ``all_iterates``,
    ``likelihood_ratio`` and ``last_iterate`` of gradient canaries, one model per row.

    Args:
        keep: bool[models, records].
        statistics: name -> float[models, records]; stacked in order into
            ``stats: float[models, records, len(statistics)]`` with
            ``metadata["stat_names"]`` set to the names.
    """
    if not statistics:
        raise InputError("statistics: expected at least one named statistic, got none")
    columns = [_as_float(f"statistics[{name!r}]", value, 2) for name, value in statistics.items()]
    shapes = {c.shape for c in columns}
    if len(shapes) != 1:
        raise InputError(f"statistics: shapes differ between statistics: {sorted(shapes)}")
    meta = {**dict(metadata or {}), "stat_names": list(statistics)}
    return Observations(keep=keep, stats=np.stack(columns, axis=-1), metadata=meta)


def save_observations(observations: Observations, path: str | os.PathLike) -> None:
    """Write ``observations`` to ``path`` as an uncompressed ``.npz``, atomically."""
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **observations.arrays())


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such file") from err
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        # ValueError covers object arrays (pickle refused) and malformed headers.
        raise InputError(f"{path}: not a readable .npz without pickle ({err})") from err


def _parse_metadata(path: Path, raw: np.ndarray | None) -> dict[str, Any]:
    if raw is None:
        return {}
    if raw.ndim != 0 or raw.dtype.kind != "U":
        raise InputError(f"{path}: metadata: expected a 0-d JSON string, got dtype {raw.dtype}")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: metadata: not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise InputError(f"{path}: metadata: expected a JSON object, got {type(meta).__name__}")
    meta.pop("format", None)
    meta.pop("version", None)
    return meta


def _stored_observations(run: Path) -> list[Path]:
    return [p for p in (run / "observations", run / "observations.npz") if p.exists()]


def run_directory(path: str | os.PathLike) -> Path | None:
    """The ``dpaudit run`` directory that ``path`` is, or whose observations ``path`` are;
    None if it is neither.

    A run directory (:mod:`audit.pipeline.rundir`) holds ``config.json`` beside its
    observations: ``observations/`` (an :class:`ObservationRun`, black-box audits) or
    ``observations.npz`` (white-box audits). A run that has no observations yet is none.
    """
    path = Path(path)
    for run in (path, path.parent):
        stored = _stored_observations(run)
        if (run / "config.json").is_file() and stored and path in (run, *stored):
            return run
    return None


def load_observations(path: str | os.PathLike) -> Observations:
    """Load and validate observations from an ``.npz`` file or a directory.

    A directory is an :class:`ObservationRun`; a ``dpaudit run`` directory (its
    observations are loaded, see :func:`run_directory`); or, with ``experiment-*``
    subdirectories, the LiRA reference layout (labels from ``y_train.npy``).

    An interchange ``.npz`` needs only ``keep`` and ``logits`` (+ ``labels``) or ``stats``;
    arrays it does not know are ignored with a :class:`UserWarning` that names them.
    Raises InputError for a missing, corrupted or inconsistent file.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "manifest.json").exists():
            return ObservationRun.open(path).load()
        if run_directory(path) == path:
            return load_observations(_stored_observations(path)[0])
        if any(path.glob("experiment-*")):
            return import_lira_layout(path)
        raise InputError(f"{path}: no manifest.json (not an observations run), no config.json beside "
                         "observations (not a dpaudit run directory) and no experiment-* (not a LiRA layout)")
    data = _read_npz(path)
    if "keep" not in data:
        raise InputError(f"{path}: missing array 'keep' (found {sorted(data)})")
    unknown = set(data) - {"keep", "labels", "logits", "stats", "population", "metadata"}
    if unknown:  # e.g. another tool's `outputs` beside `logits`: not ours to judge
        warnings.warn(f"{path}: ignoring unknown arrays {sorted(unknown)}", UserWarning, stacklevel=2)
    try:
        return Observations(
            keep=data["keep"],
            labels=data.get("labels"),
            logits=data.get("logits"),
            stats=data.get("stats"),
            population=data.get("population"),
            metadata=_parse_metadata(path, data.get("metadata")),
        )
    except InputError as err:
        raise InputError(f"{path}: {err}") from err


class ObservationRun:
    """A run directory to which models are appended one at a time (resumable).

    Models may arrive in any order (a cluster finishes them as it likes): each is stored
    under its index, the manifest lists the complete ones sorted by index, and
    :meth:`missing_models` says which a resumed run still has to train.

    Layout: ``manifest.json`` (format, n_records, model file names by index, metadata),
    ``shared.npz`` (labels, population) and ``model-00000.npz`` ... each holding
    ``keep: bool[records]`` and ``logits: float[records, queries, classes]`` and/or
    ``stats: float[records, stats]``. Every file is written with
    :func:`audit.atomic.atomic_open`; the manifest is rewritten last, so a kill leaves
    the previous complete state.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self._manifest = manifest

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        labels: np.ndarray | None,
        population: np.ndarray | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> "ObservationRun":
        """Start an empty run in a new (or empty) directory ``path``."""
        path = Path(path)
        if (path / "manifest.json").exists():
            raise InputError(f"{path}: already holds a run (use ObservationRun.open to resume)")
        path.mkdir(parents=True, exist_ok=True)
        shared: dict[str, np.ndarray] = {}
        n_records = None
        if labels is not None:
            shared["labels"] = _as_labels(labels)
            n_records = int(shared["labels"].shape[0])
        if population is not None:
            shared["population"] = _as_keep("population", population, 1)
            if n_records is not None and shared["population"].shape[0] != n_records:
                raise InputError(f"population: {shared['population'].shape[0]} records, labels has {n_records}")
            n_records = int(shared["population"].shape[0])
        try:
            meta = json.loads(json.dumps(dict(metadata or {})))
        except (TypeError, ValueError) as err:
            raise InputError(f"metadata: expected a JSON-serialisable mapping ({err})") from err
        _check_metadata(meta)
        with atomic_open(path / "shared.npz", "wb") as handle:
            np.savez(handle, **shared)
        manifest = {
            "format": _RUN_FORMAT,
            "version": _VERSION,
            "n_records": n_records,
            "models": [],
            "metadata": meta,
        }
        run = cls(path, manifest)
        run._write_manifest()
        return run

    @classmethod
    def resume_or_create(
        cls,
        path: str | os.PathLike,
        *,
        labels: np.ndarray | None,
        population: np.ndarray | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> "ObservationRun":
        """Open the run at ``path`` if there is one (checking it has the same labels and
        population), else create it. Resume training at model ``n_models_done``.

        Resuming means the previous writer is gone: the temporary files a killed writer
        left behind (``.<name>.*.tmp``, from :func:`audit.atomic.atomic_open`) are removed.
        """
        path = Path(path)
        if not (path / "manifest.json").exists():
            return cls.create(path, labels=labels, population=population, metadata=metadata)
        run = cls.open(path)
        shared = _read_npz(path / "shared.npz")
        for name, given in (("labels", labels), ("population", population)):
            stored = shared.get(name)
            if (given is None) != (stored is None) or (
                given is not None and not np.array_equal(np.asarray(given), stored)
            ):
                raise InputError(f"{path}: existing run has different {name}; refusing to resume")
        for leftover in path.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ObservationRun":
        """Open an existing run to resume appending or to load it."""
        path = Path(path)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except FileNotFoundError as err:
            raise InputError(f"{path}: no manifest.json (not an observations run)") from err
        except json.JSONDecodeError as err:
            raise InputError(f"{path}/manifest.json: not valid JSON ({err})") from err
        if not isinstance(manifest, dict) or manifest.get("format") != _RUN_FORMAT:
            raise InputError(f"{path}/manifest.json: expected format {_RUN_FORMAT!r}")
        return cls(path, manifest)

    @property
    def n_models_done(self) -> int:
        """Number of complete models recorded in the manifest."""
        return len(self._manifest["models"])

    @property
    def indices(self) -> list[int]:
        """Indices of the complete models, ascending."""
        return [_model_index(name) for name in self._manifest["models"]]

    def missing_models(self, n_models: int) -> list[int]:
        """Indices in ``0 .. n_models - 1`` not recorded yet (what a resumed run trains)."""
        done = set(self.indices)
        return [k for k in range(n_models) if k not in done]

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._manifest["metadata"])

    def _write_manifest(self) -> None:
        with atomic_open(self.path / "manifest.json", "w") as handle:
            json.dump(self._manifest, handle, indent=1)

    def append(
        self,
        *,
        keep: np.ndarray,
        logits: np.ndarray | None = None,
        stats: np.ndarray | None = None,
        index: int | None = None,
    ) -> int:
        """Record one more model; returns its model index.

        Args:
            keep: bool[records].
            logits: float[records, queries, classes] (or [records, classes]) or None.
            stats: float[records, stats] or None.
            index: the model's index, for models finishing out of order; None = the
                index after the largest recorded one. An index already recorded is refused.
        """
        recorded = self.indices
        if index is None:
            index = recorded[-1] + 1 if recorded else 0
        elif isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise InputError(f"append: index {index!r}; expected a model index >= 0")
        elif int(index) in recorded:
            raise InputError(f"append: model {index} is already recorded in {self.path}")
        index = int(index)
        keep = _as_keep("keep", keep, 1)
        arrays: dict[str, np.ndarray] = {"keep": keep}
        if logits is not None:
            logits = np.asarray(logits)
            if logits.ndim == 2:
                logits = logits[:, None, :]
            arrays["logits"] = _as_float("logits", logits, 3)
        if stats is not None:
            arrays["stats"] = _as_float("stats", stats, 2)
        if len(arrays) == 1:
            raise InputError("append: need logits or stats, got neither")
        n_records = self._manifest["n_records"]
        for name, arr in arrays.items():
            if n_records is not None and arr.shape[0] != n_records:
                raise InputError(f"{name}: {arr.shape[0]} records, run has {n_records}")
        population = _read_npz(self.path / "shared.npz").get("population")
        if population is not None and keep[population].any():
            raise InputError(
                f"keep: {int(keep[population].sum())} population records marked IN "
                "(population records must be OUT for every model)"
            )
        shapes = {name: list(arr.shape) for name, arr in arrays.items()}
        expected = self._manifest.get("shapes")
        if expected is not None and expected != shapes:
            raise InputError(f"append: array shapes {shapes} disagree with earlier models {expected}")
        name = f"model-{index:05d}.npz"
        with atomic_open(self.path / name, "wb") as handle:
            np.savez(handle, **arrays)
        self._manifest["models"] = sorted([*self._manifest["models"], name], key=_model_index)
        self._manifest["n_records"] = int(keep.shape[0])
        self._manifest["shapes"] = shapes
        self._write_manifest()
        return index

    def load(self) -> Observations:
        """Stack the complete models, in index order, into validated :class:`Observations`.

        Model ``m`` of the result is the model recorded under index ``m``: a run with a gap
        (model 2 missing while 3 is done, as an unfinished cluster run leaves it) is refused.
        """
        if not self._manifest["models"]:
            raise InputError(f"{self.path}: run holds no models yet")
        gaps = self.missing_models(self.indices[-1] + 1)
        if gaps:
            raise InputError(f"{self.path}: models {gaps} are missing before model {self.indices[-1]}; resume the run to train them")
        shared = _read_npz(self.path / "shared.npz")
        models = [_read_npz(self.path / name) for name in self._manifest["models"]]
        try:
            stacked = {
                key: np.stack([m[key] for m in models]) for key in ("keep", "logits", "stats") if key in models[0]
            }
        except (KeyError, ValueError) as err:
            raise InputError(f"{self.path}: model files disagree ({err})") from err
        try:
            return Observations(
                keep=stacked["keep"],
                labels=shared.get("labels"),
                logits=stacked.get("logits"),
                stats=stacked.get("stats"),
                population=shared.get("population"),
                metadata=self._manifest["metadata"],
            )
        except InputError as err:
            raise InputError(f"{self.path}: {err}") from err


_MODEL_FILE = re.compile(r"^model-(\d+)\.npz$")


def _model_index(name: str) -> int:
    match = _MODEL_FILE.match(name)
    if match is None:
        raise InputError(f"manifest.json: model file {name!r}; expected model-<index>.npz")
    return int(match.group(1))


def n_models_done(path: str | os.PathLike) -> int:
    """Complete models recorded in the run directory ``path`` (0 if there is no run yet)."""
    path = Path(path)
    if not (path / "manifest.json").exists():
        return 0
    return ObservationRun.open(path).n_models_done


_EXPERIMENT = re.compile(r"^experiment-")
# train.py names a run experiment-<expid>_<num_experiments>, or experiment-<seed> without --expid.
_EXPERIMENT_NUMBER = re.compile(r"^experiment-(\d+)(_\d+)?$")
# inference.py names the logits of an epoch "%010d.npy".
_EPOCH_FILE = re.compile(r"^(\d+)\.npy$")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _load_npy(path: Path) -> np.ndarray:
    """One ``.npy`` array, read without pickle; any other content is an InputError naming ``path``."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such file") from err
    except OSError as err:
        raise InputError(f"{path}: not readable ({_one_line(err)})") from err
    if magic.startswith(b"PK"):
        raise InputError(f"{path}: expected one .npy array, got an .npz (zip) archive")
    if magic != b"\x93NUMPY":
        raise InputError(f"{path}: not a .npy file (no NumPy header; pickles and text are refused)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        # ValueError covers object arrays (refused without pickle), malformed headers and
        # truncated data.
        raise InputError(f"{path}: not a readable .npy without pickle ({_one_line(err)})") from err


def _hparams_expid(exp: Path) -> int | None:
    """The ``expid`` that train.py writes to ``hparams.json`` (None if absent or null)."""
    path = exp / "hparams.json"
    if not path.exists():
        return None
    try:
        hparams = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not readable ({_one_line(err)})") from err
    if not isinstance(hparams, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(hparams).__name__}")
    expid = hparams.get("expid")
    if expid is not None and (isinstance(expid, bool) or not isinstance(expid, int) or expid < 0):
        raise InputError(f"{path}: expid {expid!r}; expected an integer >= 0 or null")
    return expid


def _experiment_number(exp: Path) -> int:
    """K of ``experiment-K_N`` or ``experiment-K``, else ``expid`` of ``hparams.json``."""
    match = _EXPERIMENT_NUMBER.match(exp.name)
    expid = _hparams_expid(exp)
    if match is None:
        if expid is None:
            raise InputError(
                f"{exp}: no experiment number; expected a name experiment-K_N or experiment-K, "
                "or an integer expid in hparams.json"
            )
        return expid
    number = int(match.group(1))
    if match.group(2) and expid is not None and expid != number:  # renamed directory?
        raise InputError(f"{exp}: name says experiment {number} but hparams.json has expid {expid}")
    return number


def _lira_experiments(root: Path) -> list[Path]:
    """The ``experiment-*`` directories of ``root`` in experiment-number order.

    Ordered by number, not by name: as strings, ``experiment-10_16`` sorts before
    ``experiment-2_16``, which would silently make model 2 a different model.
    """
    found: dict[int, Path] = {}
    for exp in (p for p in root.iterdir() if p.is_dir() and _EXPERIMENT.match(p.name)):
        number = _experiment_number(exp)
        if number in found:
            first, second = sorted([found[number].name, exp.name])
            raise InputError(f"{root}: experiment {number} appears twice ({first} and {second})")
        found[number] = exp
    if not found:
        raise InputError(f"{root}: no experiment-* directories")
    return [found[k] for k in sorted(found)]


def _latest_logits_file(exp: Path) -> Path:
    """The file of the latest epoch in ``exp/logits`` (epochs compared as numbers)."""
    folder = exp / "logits"
    files = list(folder.glob("*.npy")) if folder.is_dir() else []
    if not files:
        raise InputError(f"{exp}: no logits/*.npy")
    epochs = []
    for path in files:
        match = _EPOCH_FILE.match(path.name)
        if match is None:
            raise InputError(f"{path}: expected <epoch>.npy (an integer epoch, as inference.py names it)")
        epochs.append((int(match.group(1)), path.name))
    return folder / max(epochs)[1]


def _lira_logits(path: Path) -> np.ndarray:
    """Return float[records, queries, classes] from one reference logits file."""
    arr = _load_npy(path)
    if arr.ndim == 4 and arr.shape[1] == 1:  # [n, 1, q, c]: what inference.py writes
        arr = arr[:, 0]
    elif arr.ndim == 4 and arr.shape[2] == 1:  # [n, q, 1, c]
        arr = arr[:, :, 0]
    elif arr.ndim != 3:
        raise InputError(
            f"{path}: logits shape {arr.shape}; expected [records, queries, classes], "
            "[records, 1, queries, classes] or [records, queries, 1, classes]"
        )
    return _as_float(str(path), arr, 3)


def import_lira_layout(root: str | os.PathLike, labels: np.ndarray | None = None) -> Observations:
    """Read the LiRA reference layout (Carlini et al. 2022, tensorflow/privacy mi_lira_2021).

    Each ``root/experiment-*`` directory is one model: its ``keep.npy`` (bool[records])
    and the latest-epoch file of ``logits/<epoch>.npy``. Model ``m`` is the directory
    with the ``m``-th smallest experiment number: the ``K`` of ``experiment-K_N`` (what
    the reference ``train.py --expid K --num_experiments N`` writes) or of
    ``experiment-K``, else the ``expid`` in its ``hparams.json``. A number that appears
    twice, or a directory without one, is refused. ``metadata["lira_experiments"]``
    lists the directory names in model order.

    Labels are given separately (int[records]); if None, ``root/y_train.npy`` is read,
    as the reference ``score.py`` does (and, like it, cut to the number of records).
    Every file is read without pickle; an unreadable one is an InputError naming it.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    experiments = _lira_experiments(root)
    if labels is None:
        labels_path = root / "y_train.npy"
        if not labels_path.exists():
            raise InputError(f"{root}: labels not given and no y_train.npy")
        raw = _load_npy(labels_path)
        try:
            labels = _as_labels(raw)
        except InputError as err:
            raise InputError(f"{labels_path}: {err}") from err
    keeps, logits = [], []
    first_file = None
    for exp in experiments:
        keep_path = exp / "keep.npy"
        if not keep_path.exists():
            raise InputError(f"{exp}: missing keep.npy")
        keep = _as_keep(str(keep_path), _load_npy(keep_path), 1)
        logits_path = _latest_logits_file(exp)
        logit = _lira_logits(logits_path)
        if keep.shape[0] != logit.shape[0]:
            raise InputError(f"{keep_path}: {keep.shape[0]} records, {logits_path} has {logit.shape[0]}")
        if logits and logit.shape != logits[0].shape:
            raise InputError(
                f"{logits_path}: logits shape {logit.shape} differs from {first_file}'s {logits[0].shape}"
            )
        first_file = first_file or logits_path
        keeps.append(keep)
        logits.append(logit)
    n = logits[0].shape[0]
    labels = np.asarray(labels)
    if labels.ndim == 1 and labels.shape[0] > n:  # the reference truncates y_train to COUNT
        labels = labels[:n]
    try:
        return Observations(
            keep=np.stack(keeps),
            labels=labels,
            logits=np.stack(logits),
            metadata={"lira_experiments": [exp.name for exp in experiments]},
        )
    except InputError as err:
        raise InputError(f"{root}: {err}") from err


def check_export_target(root: str | os.PathLike) -> Path:
    """Refuse (InputError) a ``root`` that :func:`export_lira_layout` cannot write to:
    an existing file, a non-empty directory, or a missing parent directory."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a directory; expected a new or empty directory")
    if root.is_dir() and any(root.iterdir()):
        raise InputError(f"{root}: directory is not empty; expected a new or empty directory")
    if not root.parent.is_dir():
        raise InputError(f"{root}: parent directory {str(root.parent)!r} does not exist")
    return root


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, arr)
        handle.flush()
        os.fsync(handle.fileno())


def export_lira_layout(observations: Observations, root: str | os.PathLike, *, epoch: int = 0) -> None:
    """Write ``observations`` in the LiRA reference layout under ``root``, with its names.

    ``root`` must not exist or be an empty directory. Writes, for model ``K`` of ``N``:
    ``experiment-K_N/keep.npy`` (bool[records]), ``experiment-K_N/logits/<epoch>.npy``
    (``%010d``; float[records, 1, queries, classes], as the reference ``inference.py``
    writes) and ``experiment-K_N/hparams.json`` (``expid``, ``num_experiments``); and
    ``root/y_train.npy`` (int[records]), which ``score.py`` and :func:`import_lira_layout`
    read. Only the logits, keep and labels travel: white-box ``stats``, an explicit
    ``population`` and the metadata have no place in the layout.

    Everything is written into a temporary directory beside ``root`` that is renamed to
    ``root`` at the end, so a failure leaves no half layout.
    """
    if observations.logits is None:
        raise InputError("export_lira_layout: observations hold no logits (the layout stores logits only)")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise InputError(f"epoch: {epoch!r}; expected an integer >= 0")
    root = check_export_target(root)
    n = observations.n_models
    tmp = root.parent / f".{root.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    tmp.mkdir()
    try:
        _save_npy(tmp / "y_train.npy", observations.labels)
        for k in range(n):
            exp = tmp / f"experiment-{k}_{n}"
            (exp / "logits").mkdir(parents=True)
            with open(exp / "hparams.json", "w") as handle:
                json.dump({"expid": k, "num_experiments": n}, handle)
            _save_npy(exp / "keep.npy", observations.keep[k])
            _save_npy(exp / "logits" / f"{int(epoch):010d}.npy", observations.logits[k][:, None])
        try:
            os.rename(tmp, root)  # replaces an empty directory on POSIX
        except OSError as err:
            raise InputError(f"{root}: could not move the layout into place ({_one_line(err)})") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def synthetic_observations(
    rng: np.random.Generator,
    *,
    n_models: int = 16,
    n_records: int = 500,
    n_queries: int = 2,
    n_classes: int = 10,
    n_population: int = 0,
    hardness_sd: float = 3.0,
    signal: float = 1.0,
    vulnerable_fraction: float = 0.2,
    model_noise: float = 0.5,
    query_noise: float = 0.2,
) -> Observations:
    """Seeded synthetic observations from a parametric member/non-member model.

    Record ``i`` has a label, a hardness ``h_i ~ N(2, hardness_sd)`` and a membership
    effect ``d_i``: ``signal * 4`` for a random ``vulnerable_fraction`` of records
    (outliers that models memorise), ``signal * 0.25`` for the rest. For model ``m`` and
    query ``q`` the true-class logit is
    ``h_i + d_i * keep[m, i] + model_noise * e_mi + query_noise * e_miq`` and the other
    classes' logits are standard normal. Because ``h_i`` varies much more across records
    than ``d_i`` moves a record, a global threshold (LOSS) mixes easy non-members with
    hard members, whereas per-record calibration (LiRA) separates the vulnerable ones:
    the shape of the low-FPR gap reported by Carlini et al. (2022).

    Membership of the ``n_records`` audited records is LiRA-balanced (each record IN
    for exactly ``n_models // 2`` models); ``n_population`` extra records are OUT for
    every model and marked as the population.

    Returns Observations with ``logits: float32[models, records + population, queries, classes]``.
    """
    if n_models < 2 or n_records < 1 or n_queries < 1 or n_classes < 2 or n_population < 0:
        raise InputError(
            "synthetic_observations: need n_models >= 2, n_records >= 1, n_queries >= 1, "
            f"n_classes >= 2, n_population >= 0; got {n_models}, {n_records}, {n_queries}, "
            f"{n_classes}, {n_population}"
        )
    total = n_records + n_population
    keep = np.zeros((n_models, total), dtype=bool)
    half = n_models // 2
    for i in range(n_records):
        keep[rng.permutation(n_models)[:half], i] = True
    labels = rng.integers(0, n_classes, size=total)
    hardness = rng.normal(2.0, hardness_sd, size=total)
    vulnerable = rng.random(total) < vulnerable_fraction
    effect = np.where(vulnerable, 4.0 * signal, 0.25 * signal)
    true_logit = (
        hardness[None, :, None]
        + effect[None, :, None] * keep[:, :, None]
        + model_noise * rng.standard_normal((n_models, total, 1))
        + query_noise * rng.standard_normal((n_models, total, n_queries))
    )
    logits = rng.standard_normal((n_models, total, n_queries, n_classes))
    logits[np.arange(n_models)[:, None, None], np.arange(total)[None, :, None],
           np.arange(n_queries)[None, None, :], labels[None, :, None]] = true_logit
    population = np.zeros(total, dtype=bool)
    population[n_records:] = True
    return Observations(
        keep=keep,
        labels=labels,
        logits=logits.astype(np.float32),
        population=population if n_population else None,
        metadata={"dataset": "synthetic", "trainer": "parametric", "n_population": n_population},
    )
