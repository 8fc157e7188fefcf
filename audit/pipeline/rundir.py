"""The run directory: resolved config, per-model utility, observations, reports.

Layout (everything written atomically, so a kill leaves a consistent directory):

    run_dir/config.json        the validated config the run was started with
    run_dir/observations/      audit.observations.ObservationRun (model by model)
    run_dir/utility.json       {model index: {n_train, train_accuracy, test_accuracy, epsilon}}
    run_dir/readings.npz       white-box only: the canaries' per-step readings and C
    run_dir/report.json        written last, once the audit is complete
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audit.atomic import atomic_open
from audit.config import AuditConfig
from audit.errors import InputError
from audit.stats.result import jsonable


def write_json(path: Path, payload: Any) -> None:
    """Strict JSON (infinities as the string "inf", as in every result object), atomically."""
    with atomic_open(path) as handle:
        json.dump(jsonable(payload), handle, indent=1, sort_keys=True, default=str, allow_nan=False)
        handle.write("\n")


def prepare(config: AuditConfig, *, resume: bool, plugin: dict[str, Any] | None = None) -> Path:
    """Create (or, with ``resume``, reopen) the run directory; refuse to mix two configs.

    ``plugin``: the plugin's provenance (path, file, SHA-256), saved with the config under
    ``"plugin"``, so that a resume with a changed plugin file is refused like a changed config.
    """
    run_dir = Path(config.output_dir)
    saved = run_dir / "config.json"
    current = config.model_dump(mode="json")
    if plugin is not None:  # where the file lies may change; what it holds may not
        current["plugin"] = {"path": plugin["path"], "sha256": plugin["sha256"]}
        if isinstance(plugin.get("model"), dict):  # a model.plugin beside a trainer plugin
            current["plugin"]["model"] = {"path": plugin["model"]["path"], "sha256": plugin["model"]["sha256"]}
    # What may change on resume without changing the audit: where results are logged and
    # where models are trained (any executor gives the same observations).
    volatile = ("mlflow", "gate", "executor")
    if saved.exists():
        if not resume:
            raise InputError(f"output_dir {run_dir} already holds a run: pass --resume to continue it, or choose another output_dir")
        before = json.loads(saved.read_text())
        differs = _differences(before, current, skip=volatile)
        if differs:
            what = ", ".join("plugin (its file changed)" if k == "plugin" else k for k in differs)
            raise InputError(f"--resume: the config differs from the saved one in {what}")
        return run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(saved, current)
    except OSError as err:
        raise InputError(f"output_dir {run_dir}: cannot write there ({err.strerror})") from None
    return run_dir


_MISSING = object()


def _defaults() -> dict[str, Any]:
    """Every config field's default, as ``model_dump(mode="json")`` writes it."""
    return AuditConfig().model_dump(mode="json")


def _same(old: Any, new: Any, default: Any) -> bool:
    """Saved ``old`` and current ``new`` make the same audit: equal, or ``old`` missing (a
    field added after the run was started) and ``new`` at the field's ``default``."""
    return old == new or (old is _MISSING and default is not _MISSING and new == default)


def _differences(before: dict, current: dict, *, skip) -> list[str]:
    """Top-level keys (``section.field`` inside a section) where the saved config
    ``before`` and ``current`` differ (:func:`_same`); a changed default is a difference."""
    defaults = _defaults()
    out = []
    for key in sorted(set(before) | set(current)):
        old, new, default = before.get(key, _MISSING), current.get(key, _MISSING), defaults.get(key, _MISSING)
        if key in skip or _same(old, new, default):
            continue
        if isinstance(old, dict) and isinstance(new, dict) and isinstance(default, dict):
            out.extend(f"{key}.{f}" for f in sorted(set(old) | set(new))
                       if not _same(old.get(f, _MISSING), new.get(f, _MISSING), default.get(f, _MISSING)))
        else:
            out.append(key)
    return out


def save_readings(run_dir: Path, readings, max_grad_norm: float) -> None:
    """A white-box run's per-step canary readings ``float[steps, canaries]`` (unnormalised
    scale) and the clipping norm they are read under."""
    import numpy as np

    with atomic_open(run_dir / "readings.npz", "wb") as handle:
        np.savez(handle, readings=np.asarray(readings, dtype=np.float64), max_grad_norm=np.float64(max_grad_norm))


def load_readings(run_dir: Path):
    """(readings, max_grad_norm) saved by :func:`save_readings`, or None (a run directory
    from before readings were kept: the audit then runs without the noise test)."""
    import numpy as np

    path = run_dir / "readings.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as saved:
        return saved["readings"], float(saved["max_grad_norm"])


def load_utility(run_dir: Path) -> dict[int, dict]:
    path = run_dir / "utility.json"
    if not path.exists():
        return {}
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def save_utility(run_dir: Path, utility: dict[int, dict]) -> None:
    write_json(run_dir / "utility.json", {str(k): v for k, v in sorted(utility.items())})
