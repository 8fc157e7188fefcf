"""A black-box trainer that is a command line: a training script in any framework or language.

Contract (``trainer.kind = "command"``; README "Auditing a trainer in any framework")::

    command = ["python3", "train.py", "{train}", "{query}", "{out}", "{seed}"]

For every model, dpaudit writes

- ``{train}``: an ``.npz`` with ``x`` (float32[records, ...], the records' features, as the
  data has them: float32[records, features] for a table) and ``y`` (int64[records], class
  indices), the model's training set;
- ``{query}``: an ``.npz`` with ``x`` (float32[queries, ...]), the points to predict;

runs the command once, and reads ``{out}``, which the command writes: the predicted
probabilities float[queries, classes], row i for query i, as a NumPy ``.npy`` file (``np.save``;
read without pickle) or, when the file is text, as CSV (one row per query, numbers separated by
commas, no header; ``np.savetxt(out, probs, delimiter=",")``). They are checked as a black-box
plugin's are (``trainers.plugins.checked_probabilities``: shape, finite, non-negative, rows
summing to 1). ``{seed}`` is the model's seed (also ``$DPAUDIT_SEED``); it should drive every
random choice of the training, so that a retried or resumed model is the same model.

Queries are known before training. A black-box plugin returns a model that is queried later;
a process that has exited cannot be, and running it again would train another model. The
pipeline knows every point it will ask about before it trains (``audit.pipeline.training``:
the views of the canaries and population records, the test set) and declares them with
:meth:`CommandTrainer.with_queries`; :meth:`CommandTrainer.fit` adds the training records
themselves (for the training accuracy), writes them all to ``{query}``, runs the command once,
and returns a model that answers exactly those blocks of queries (looked up by content) and
refuses any other with a ``LookupError``. So the command runs once per model. ``{query}``
holds every audited record, members and non-members alike, without labels: the command must
only predict on it, never train on it.

The process (never a shell: ``argv`` is passed to ``exec`` as a list):

- working directory: a fresh empty temporary directory per model (``tempfile.mkdtemp``),
  holding the three files and removed afterwards, whatever happened. Files the command names
  must therefore be absolute; :func:`absolute_command` (run by ``audit.pipeline.preflight``)
  makes every argument that names an existing file absolute (a config file's own relative
  paths are joined to its directory first: ``audit.config.rebase_command``);
- environment: only :data:`PASSED_ENV` (``PATH``, ``HOME``, ``LANG``, ``LC_ALL``, and
  ``SYSTEMROOT`` where set, which Windows programs need), each passed only if set in dpaudit's
  environment, plus ``DPAUDIT_SEED``. Nothing else of dpaudit's environment (tokens, tracking
  URIs, ``PYTHONPATH``, thread settings) reaches it;
- ``stdin`` is ``/dev/null``, ``stdout`` is discarded, ``stderr`` is kept for the error message;
- its own session and process group: after ``timeout_s`` seconds the whole group is killed
  (the command and whatever it started), and after a normal exit any process it left behind
  in its group is killed too. A dpaudit killed with ``kill -9`` cannot do this: the command
  then runs to its end on its own, and its temporary directory stays.

Failures raise :class:`CommandFailed` (a ``RuntimeError``: exit code 3, like a plugin that
raises; finished models stay for ``--resume``, and Ray retries the unit) with one line naming
the command and the model seed: a non-zero exit (with the code, or the signal, and the last
lines of stderr, at most :data:`STDERR_TAIL_CHARS` characters), a timeout, a missing or
unreadable ``{out}``, malformed probabilities. Bad configuration (no executable, missing
placeholder, no claim) is an ``InputError`` found before any work (``audit.config``,
``audit.pipeline.preflight``).

Provenance (:func:`command_source`): the report and the MLflow tags record the command line
(``dp_audit.plugin``) and the SHA-256 of its script (``dp_audit.plugin_sha256``), as
``trainers.plugins.plugin_source`` does for a plugin: the first argument after the executable
that names an existing file, else the executable itself when it is given as a path
(``./train.sh``). The hash covers that one file, not what it imports. A command is code: a
config that names one must be reviewed like the code it runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from audit.config import check_command, is_path, rebase_command
from audit.errors import InputError
from trainers.plugins import BlackBoxModel, checked_probabilities

# The only variables of dpaudit's environment the command sees (each where set), besides
# DPAUDIT_SEED: where to find programs, the user's home (caches, user site-packages), the
# locale, and Windows' system root (without it a Windows process cannot start).
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT")
SEED_VARIABLE = "DPAUDIT_SEED"
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 500
_NPY_MAGIC = b"\x93NUMPY"


class CommandFailed(RuntimeError):
    """The command of a model failed (exit code, timeout, missing or malformed output):
    a runtime failure, not bad input. The message is one line."""


def find_executable(name: str) -> str:
    """The absolute path of the executable ``name``: a path (``./train.sh``, relative to
    the working directory) or a bare name looked up on ``PATH`` (the command's own PATH
    is dpaudit's). InputError when there is none or it is not executable."""
    found = shutil.which(name) if name else None
    if found is None:
        where = "no such executable file" if is_path(name) else "not found on PATH"
        raise InputError(f"trainer.command[0] = {name!r}: {where} (or not executable); "
                         "expected a program, e.g. 'python3', or the path of an executable file")
    return str(Path(found).absolute())


def absolute_command(argv: Sequence[str]) -> list[str]:
    """``argv`` with its relative paths made absolute against the working directory
    (``audit.config.rebase_command``: the executable when given as a path, and any other
    argument that names an existing file), so that the command finds its files from its
    own temporary working directory. A bare executable name (``python3``) stays, to be
    looked up on PATH."""
    return rebase_command(list(argv), Path.cwd())


def _script(argv: Sequence[str]) -> Path | None:
    for arg in argv[1:]:
        if arg and "{" not in arg and Path(arg).is_file():
            return Path(arg)
    if argv and is_path(argv[0]) and Path(argv[0]).is_file():
        return Path(argv[0])
    return None


def command_source(argv: Sequence[str]) -> dict[str, Any]:
    """What the audit records about the command ``argv``, in the shape of
    ``trainers.plugins.plugin_source``: ``path`` (the command line, shell-quoted),
    ``command`` (the argument list), ``executable`` (as found on PATH), ``file`` and
    ``sha256`` (its script, see the module docstring; None when no argument is a file)."""
    script = _script(argv)
    return {
        "kind": "command",
        "path": shlex.join(argv),
        "command": list(argv),
        "executable": find_executable(argv[0]),
        "file": str(script.resolve()) if script else None,
        "sha256": hashlib.sha256(script.read_bytes()).hexdigest() if script else None,
    }


def child_environment(seed: int) -> dict[str, str]:
    """The command's whole environment: :data:`PASSED_ENV` where set, and ``DPAUDIT_SEED``."""
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env[SEED_VARIABLE] = str(seed)
    return env


def _stderr_tail(path: Path) -> str:
    """The last lines of the command's stderr, on one line (`` | `` between lines)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 64 * STDERR_TAIL_CHARS))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    tail = " | ".join(line for line in lines if line)
    tail = " | ".join(tail.split(" | ")[-STDERR_TAIL_LINES:])
    return tail if len(tail) <= STDERR_TAIL_CHARS else "..." + tail[-STDERR_TAIL_CHARS:]


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the command's process group (the command and what it started), or on a system
    without process groups the command itself."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    elif proc.poll() is None:
        proc.kill()


def run_command(argv: Sequence[str], *, cwd: Path, env: dict[str, str], timeout_s: float) -> tuple[int | None, str]:
    """Run ``argv`` (a list, no shell) in ``cwd`` with exactly ``env``, in its own process
    group; returns (exit code, or None when it timed out; the tail of its stderr). The group
    is killed at the timeout, on an interrupt, and after the command exits."""
    stderr_path = cwd / ".dpaudit-stderr"
    with open(stderr_path, "wb") as stderr:
        # stderr goes to a file, not a pipe: a process the command leaves behind holding the
        # pipe open could otherwise block dpaudit after the command itself has ended.
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:  # also on Ctrl-C: nothing the command started outlives it
            _kill_group(proc)
            proc.wait()
    return code, _stderr_tail(stderr_path)


def read_probabilities(path: Path) -> np.ndarray:
    """``{out}`` as a float64 array: a ``.npy`` file (no pickle), else CSV text.
    ValueError saying what is wrong; the caller names the command."""
    if not path.is_file():
        raise ValueError("did not write {out}")
    with open(path, "rb") as handle:
        magic = handle.read(len(_NPY_MAGIC))
    try:
        if magic == _NPY_MAGIC:
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (ValueError, TypeError, UnicodeDecodeError, EOFError) as err:
        reason = " ".join(str(err).split())[:200]
        if magic == _NPY_MAGIC:
            raise ValueError(f"wrote a .npy {{out}} that does not load as numbers ({reason})") from None
        raise ValueError(f"wrote an {{out}} that is neither a .npy file nor CSV numbers ({reason})") from None


@dataclasses.dataclass(frozen=True, eq=False)
class _Answers:
    """The command's probabilities for each block of queries it was given, looked up by content."""

    blocks: tuple[tuple[np.ndarray, np.ndarray], ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        for query, probs in self.blocks:
            if query.shape == x.shape and np.array_equal(query, x, equal_nan=True):
                return probs
        raise LookupError(f"a command target answers only the queries declared before training "
                          f"(CommandTrainer.with_queries); got {x.shape} that is none of them")


@dataclasses.dataclass(frozen=True, eq=False)
class CommandTrainer:
    """A command that trains one model per call, with its claimed (epsilon, delta).

    ``argv``: the argument list with placeholders (absolute paths, see
    :func:`absolute_command`); ``queries``: the blocks ``float32[n_i, ...]`` each model is
    asked about besides its own training records (:meth:`with_queries`)."""

    argv: tuple[str, ...]
    epsilon: float
    delta: float
    timeout_s: float
    queries: tuple[np.ndarray, ...] = ()

    @property
    def source(self) -> str:
        return shlex.join(self.argv)

    def with_queries(self, *blocks: np.ndarray) -> "CommandTrainer":
        """This trainer, each model of which also answers ``blocks`` (float32[n_i, ...])."""
        return dataclasses.replace(self, queries=tuple(np.asarray(b, dtype=np.float32) for b in blocks))

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> BlackBoxModel:
        """Run the command once on ``x: float32[n, ...]``, ``y: int64[n]``; returns the model
        that answers ``x`` and the declared query blocks. CommandFailed when it fails."""
        x = np.asarray(x, dtype=np.float32)
        blocks = (x, *self.queries)
        queries = np.concatenate(blocks)  # declared by the pipeline with the records' shape
        work = Path(tempfile.mkdtemp(prefix="dpaudit-command-"))
        try:
            files = {"train": work / "train.npz", "query": work / "query.npz", "out": work / "out.npy"}
            np.savez(files["train"], x=x, y=np.asarray(y, dtype=np.int64))
            np.savez(files["query"], x=queries)
            argv = [find_executable(self.argv[0]), *(a.format(**files, seed=seed) for a in self.argv[1:])]
            code, stderr = run_command(argv, cwd=work, env=child_environment(seed), timeout_s=self.timeout_s)
            if code is None:
                self._fail(seed, f"timed out after {self.timeout_s:g} s (trainer.timeout_s); its process group was killed")
            if code != 0:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                self._fail(seed, f"{how}; stderr: {stderr}" if stderr else f"{how} (nothing on stderr)")
            try:
                probs = checked_probabilities(read_probabilities(files["out"]), len(queries), what="it (in {out})")
            except ValueError as err:  # InputError included: the command's output, not the user's input
                self._fail(seed, str(err))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        bounds = np.cumsum([0] + [len(b) for b in blocks])
        answers = _Answers(tuple((b, probs[lo:hi]) for b, lo, hi in zip(blocks, bounds[:-1], bounds[1:])))
        return BlackBoxModel(source=self.source, _predict=answers)

    def _fail(self, seed: int, problem: str) -> None:
        raise CommandFailed(f"command {self.source} (model seed {seed}): {problem}")


def load_command_trainer(argv: Sequence[str], *, epsilon: float, delta: float,
                         timeout_s: float) -> CommandTrainer:
    """Check a command (``audit.config.check_command``, the executable on PATH) and its
    claim, and return its trainer. Every failure is an InputError naming the field."""
    try:
        check_command(argv)
    except ValueError as err:
        raise InputError(str(err)) from None
    find_executable(argv[0])
    if math.isnan(epsilon) or epsilon <= 0 or not 0 <= delta < 1:
        raise InputError(f"command claim (epsilon={epsilon!r}, delta={delta!r}); expected epsilon > 0 (inf allowed) "
                         "and delta in [0, 1)")
    if not timeout_s > 0:
        raise InputError(f"trainer.timeout_s = {timeout_s!r}; expected > 0")
    return CommandTrainer(tuple(argv), float(epsilon), float(delta), float(timeout_s))
