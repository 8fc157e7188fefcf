"""Shared pieces of the attacks: target/shadow split, softmax, per-record signals, and the
masks that let an attack score every target at once (arrays ``[targets, records]``)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from audit.errors import InputError
from audit.observations import Observations


class AttackWarning(UserWarning):
    """A score was computed, but on a footing the caller should know about (too few shadows).

    The pipeline records these in ``report.json`` (``attacks.<name>.warnings``).
    """


def check_target(observations: Observations, target: int, *, method: str, min_shadows: int = 1) -> np.ndarray:
    """Validate ``target``; return the shadow model indices (int[models - 1])."""
    k = observations.n_models
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise InputError(f"{method}: target must be an integer model index, got {target!r}")
    if not 0 <= target < k:
        raise InputError(f"{method}: target {target} out of range; expected 0..{k - 1} ({k} models)")
    shadows = np.array([m for m in range(k) if m != target], dtype=np.int64)
    if shadows.size < min_shadows:
        raise InputError(f"{method}: needs at least {min_shadows} shadow models, got {shadows.size}")
    return shadows


# Elements of one [targets, models, records, ...] block of the many-target attacks (32 MiB of
# float64): blocks of targets keep their memory independent of how many targets are scored.
BLOCK_ELEMENTS = 1 << 22


def check_targets(observations: Observations, targets, *, method: str, min_shadows: int = 1) -> np.ndarray:
    """int64[targets]: each of ``targets`` validated as :func:`check_target` validates one."""
    items = np.atleast_1d(targets).tolist() if isinstance(targets, np.ndarray) else list(targets)
    if not items:
        raise InputError(f"{method}: expected at least one target model index, got none")
    for t in items:
        check_target(observations, t, method=method, min_shadows=min_shadows)
    return np.array([int(t) for t in items], dtype=np.int64)


def records_seen(observations: Observations, targets: np.ndarray, records, *, method: str) -> np.ndarray:
    """bool[targets, records]: the records each target's attack sees (``records``; None: all)."""
    shape = (targets.size, observations.n_records)
    if records is None:
        return np.ones(shape, dtype=bool)
    seen = np.asarray(records)
    if seen.dtype != bool or seen.shape != shape:
        raise InputError(f"{method}: records must be bool{list(shape)} (targets, records), "
                         f"got {seen.dtype}{list(seen.shape)}")
    return seen


def target_blocks(n_targets: int, per_target: int) -> list[slice]:
    """Slices of ``range(n_targets)`` of at most :data:`BLOCK_ELEMENTS` / ``per_target``
    targets each (at least one)."""
    size = max(1, BLOCK_ELEMENTS // max(per_target, 1))
    return [slice(i, min(i + size, n_targets)) for i in range(0, n_targets, size)]


def shadow_masks(mask: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``mask[models, records]`` for each of ``targets`` with the target's own row cleared:
    bool[targets, models, records] (each target's shadows only)."""
    others = np.arange(mask.shape[0])[None, :] != targets[:, None]
    return mask[None, :, :] & others[:, :, None]


def require_in_out_targets(
    observations: Observations,
    targets: np.ndarray,
    seen: np.ndarray,
    *,
    method: str,
    need_in: bool,
    need_out: bool,
) -> None:
    """:func:`require_in_out` for every target at once, on the records it sees
    (``seen: bool[targets, records]``); the error names the first target that fails."""
    keep = observations.keep
    k = keep.shape[0]
    in_all = keep.sum(axis=0)
    own = keep[targets].astype(np.int64)
    audited = audited_mask(observations)[None, :] & seen
    counts = {"IN": in_all[None, :] - own, "OUT": (k - in_all)[None, :] - (1 - own)}
    missing = {word: ((counts[word] == 0) & audited).sum(axis=1)
               for needed, word in ((need_in, "IN"), (need_out, "OUT")) if needed}
    for row in range(targets.size):
        for word, m in missing.items():
            if m[row]:
                raise _no_shadow(method, int(m[row]), word, k - 1)


def _no_shadow(method: str, missing: int, word: str, shadows: int) -> InputError:
    """The error of :func:`require_in_out` (and its many-target form) for ``missing`` records."""
    return InputError(f"{method}: {missing} records have no {word} shadow model ({shadows} shadows); "
                      f"{method} needs one per record")


def require_logits(observations: Observations, method: str) -> np.ndarray:
    """float[models, records, queries, classes], or InputError if absent."""
    if observations.logits is None:
        raise InputError(f"{method}: needs logits, the observations hold only white-box stats")
    return observations.logits


def require_stats(observations: Observations, method: str, column: int | str) -> np.ndarray:
    """float[models, records] (one white-box statistic), or InputError.

    ``column`` is an index or a name from ``metadata["stat_names"]``.
    """
    if observations.stats is None:
        raise InputError(f"{method}: needs white-box stats, the observations hold only logits")
    n = observations.stats.shape[2]
    if isinstance(column, str):
        names = observations.metadata.get("stat_names") or []
        if column not in names:
            raise InputError(f"{method}: stat {column!r} not in metadata.stat_names {names}")
        column = names.index(column)
    if isinstance(column, bool) or not isinstance(column, (int, np.integer)):
        raise InputError(f"{method}: stat column must be an index or a name, got {column!r}")
    if not 0 <= column < n:
        raise InputError(f"{method}: stat column {column} out of range; expected 0..{n - 1}")
    return observations.stats[:, :, column].astype(np.float64)


def audited_mask(observations: Observations) -> np.ndarray:
    """bool[records]: records that are not population (reference) records."""
    return ~observations.population_mask


def require_in_out(
    observations: Observations,
    shadows: np.ndarray,
    *,
    method: str,
    need_in: bool,
    need_out: bool,
) -> np.ndarray:
    """Check every audited record has the IN / OUT shadows ``method`` needs.

    Population records are exempt (they are OUT everywhere by definition; methods give
    them NaN where undefined). Returns ``keep[shadows]: bool[shadows, records]``.
    """
    keep = observations.keep[shadows]
    audited = audited_mask(observations)
    for needed, count, word in ((need_in, keep.sum(0), "IN"), (need_out, (~keep).sum(0), "OUT")):
        if needed:
            missing = int(((count == 0) & audited).sum())
            if missing:
                raise _no_shadow(method, missing, word, shadows.size)
    return keep


def log_probs(logits: np.ndarray) -> np.ndarray:
    """float64 log-softmax over the last axis (max subtracted first)."""
    return log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def true_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pick ``values[..., records, queries, labels[record]]`` -> float[..., records, queries]."""
    idx = np.broadcast_to(labels[:, None, None], values.shape[:-1] + (1,))
    return np.take_along_axis(values, idx, axis=-1)[..., 0]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-query cross-entropy loss float64[..., records, queries]."""
    return -true_class(log_probs(logits), labels)


def by_model_blocks(fn, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``fn(logits, labels)`` (a per-query signal, float64[models, records, queries]) computed
    on blocks of models of at most :data:`BLOCK_ELEMENTS` logits: the same numbers (each
    query's softmax is its own row), without float64 copies of every model's logits at once."""
    out = np.empty(logits.shape[:-1])
    for block in target_blocks(logits.shape[0], int(np.prod(logits.shape[1:]))):
        out[block] = fn(logits[block], labels)
    return out


def true_class_log_probs(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``true_class(log_probs(logits), labels)``: float64[..., records, queries]."""
    return true_class(log_probs(logits), labels)


def lira_phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Logit-scaled confidence of Carlini et al. (2022) (the "logit scaling" of the
    confidence), per query.

    ``phi = log(p_y + 1e-45) - log(sum_{y' != y} p_y' + 1e-45)`` with ``p`` the float64
    softmax after subtracting the max (as the reference ``score.py``).
    Shapes: logits float[..., records, queries, classes] -> float64[..., records, queries].
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    p_y = true_class(p, labels)
    onehot = np.arange(p.shape[-1]) == labels[:, None, None]
    p_wrong = np.where(onehot, 0.0, p).sum(axis=-1)
    return np.log(p_y + 1e-45) - np.log(p_wrong + 1e-45)
