"""Shared by the subcommands that read observations: loading with one-line warnings,
naming the LiRA layout directory behind each model index, and re-scoring a ``dpaudit
run`` directory the way its analysis scored it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from audit.errors import InputError

# What `--observations` accepts, for the --help of every subcommand that reads it.
OBSERVATIONS_HELP = (
    "Observations: an .npz, an observations run directory (with manifest.json), a LiRA "
    "reference layout directory, or a `dpaudit run` directory (RUN or RUN/observations; "
    "RUN/observations.npz for a white-box run)"
)


@contextlib.contextmanager
def warnings_on_stderr() -> Iterator[None]:
    """The warnings raised inside, each distinct one printed as one ``dpaudit: warning:``
    line on stderr once the block is done (none if it raises: an error is its one line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
        print(f"dpaudit: warning: {message}", file=sys.stderr)


def load(path: str):
    """:func:`audit.observations.load_observations`, its warnings printed as one stderr line each."""
    from audit.observations import load_observations

    with warnings_on_stderr():
        return load_observations(path)


def layout_names(observations) -> list[str] | None:
    """Directory of each model when the observations came from a LiRA layout, else None."""
    names = observations.metadata.get("lira_experiments")
    if isinstance(names, list) and len(names) == observations.n_models and all(isinstance(n, str) for n in names):
        return names
    return None


def describe_layout(names: list[str]) -> str:
    """``model k = experiment-k_N (k = 0..N-1)`` when the names say so, else each pair."""
    n = len(names)
    if all(name == f"experiment-{k}_{n}" for k, name in enumerate(names)):
        return f"model k = experiment-k_{n} (k = 0..{n - 1})"
    return ", ".join(f"model {k} = {name}" for k, name in enumerate(names))


def _run_settings(run: Path) -> tuple[tuple[float, ...], float, bool]:
    """(audit.fprs, confidence, white-box?) from the run's ``config.json``: what its
    analysis used. Only these fields are read, so a run written by another version of
    dpaudit still re-scores."""
    path = run / "config.json"
    try:
        config = json.loads(path.read_text())
        fprs = tuple(float(f) for f in config["audit"]["fprs"])
        confidence = float(config["confidence"])
        kind = config["audit"]["canary_kind"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not readable JSON ({err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: expected audit.fprs (numbers), confidence and audit.canary_kind, "
                         f"as dpaudit run writes them ({type(err).__name__}: {err})") from None
    if not fprs or not all(0.0 < f < 1.0 for f in fprs) or not 0.0 < confidence < 1.0 or not isinstance(kind, str):
        raise InputError(f"{path}: audit.fprs {list(fprs)}, confidence {confidence}, audit.canary_kind {kind!r}; "
                         "expected FPRs and a confidence in (0, 1) and a canary kind")
    return fprs, confidence, kind == "gradient"


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """The observations that ``--observations PATH`` names, and how they are scored.

    ``run``: the ``dpaudit run`` directory behind PATH, or None. On a black-box run the
    attacks follow its analysis (:func:`audit.pipeline.analysis.leave_one_out`): per
    target, the canaries its shadows include at least once and exclude at least once,
    the population records as references; ``keep: bool[models, canaries]``. On a
    white-box run each canary statistic of its one training run is a row, every canary
    audited. ``fprs`` and ``confidence`` are the run's (defaults elsewhere).
    """

    observations: Any
    run: Path | None = None
    keep: np.ndarray | None = None
    white_box: bool = False
    fprs: tuple[float, ...] = ()
    confidence: float = 0.95

    def stat_names(self) -> list[str]:
        """The canary statistics a white-box run reported (its attack table's rows)."""
        return list(self.observations.metadata.get("stat_names") or []) if self.white_box else []

    def default_methods(self) -> tuple[str, ...]:
        """Every attack the observations support (a white-box run: its statistics)."""
        from audit.attacks import LOGIT_METHODS, WHITE_BOX_METHODS

        if self.white_box:
            return tuple(self.stat_names())
        methods: tuple[str, ...] = ()
        if self.observations.logits is not None:
            methods += LOGIT_METHODS
        if self.observations.stats is not None:
            methods += WHITE_BOX_METHODS
        return methods

    def known_methods(self) -> tuple[str, ...]:
        from audit.attacks import available_attacks

        return (*available_attacks(), *self.stat_names())

    def evaluate(self, name: str, *, confidence: float):
        """:class:`audit.evaluation.AttackEvaluation` of attack (or statistic) ``name``."""
        from audit.evaluation import evaluate_attack, summarize_scores

        fprs = {"fprs": self.fprs} if self.fprs else {}
        if self.keep is not None:
            from audit.pipeline.analysis import leave_one_out

            return summarize_scores(leave_one_out(self.observations, name, self.keep), confidence=confidence, **fprs)
        if name in self.stat_names():
            ev = evaluate_attack(self.observations, "canary-statistic", params={"column": name},
                                 confidence=confidence, **fprs)
            return dataclasses.replace(ev, method=name)
        return evaluate_attack(self.observations, name, confidence=confidence, **fprs)

    def scores(self, method: str, target: int, params: dict) -> np.ndarray:
        """float64[records]: ``method``'s scores of ``target``'s records (NaN: not scored)."""
        from audit.attacks import get_attack

        if self.keep is not None:
            from audit.pipeline.analysis import leave_one_out

            n = self.observations.n_models
            if not 0 <= target < n:
                raise InputError(f"--target: {target} out of range; expected 0..{n - 1} ({n} models)")
            return leave_one_out(self.observations, method, self.keep, targets=[target], params=params).scores[0]
        return np.asarray(get_attack(method, **params).score(self.observations, target), dtype=np.float64)

    def protocol(self) -> str | None:
        """One line on how a run's analysis scored the records, or None."""
        if self.run is None:
            return None
        if self.white_box:
            return (f"dpaudit run {self.run} (white-box): each canary statistic of its one training run, "
                    "every canary audited, as in its report.json")
        n_population = self.observations.n_records - self.keep.shape[1]
        return (f"dpaudit run {self.run}: per target, the canaries its shadows include at least once and "
                f"exclude at least once, with the {n_population} population records as references, as in "
                "its report.json")


def load_source(path: str) -> Source:
    """The :class:`Source` that ``--observations PATH`` names (loaded with :func:`load`)."""
    from audit.observations import run_directory

    observations = load(path)
    run = run_directory(path)
    if run is None:
        return Source(observations)
    fprs, confidence, white_box = _run_settings(run)
    if white_box:  # one model and no population: every canary is audited, members and non-members
        observations = dataclasses.replace(observations, population=np.zeros(observations.n_records, bool))
        return Source(observations, run, white_box=True, fprs=fprs, confidence=confidence)
    from audit.pipeline.analysis import stored_keep

    return Source(observations, run, keep=stored_keep(observations), fprs=fprs, confidence=confidence)
