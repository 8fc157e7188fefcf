"""Executors: where the black-box units of work run.

A unit is "train these models and return their observations" (one model for the
per-model trainers, a block of models for the fast trainer). Units are independent and
each model draws only from its own seed, so an executor may run them anywhere and in any
order: results are identical whichever executor ran them.

- :class:`LocalExecutor` runs the units one after another in this process (the default).
- :class:`RayExecutor` sends them as Ray tasks to an existing cluster
  (``executor.address``) or to a local Ray started for the run, and yields each unit's
  result as it arrives; Ray retries a unit whose worker dies or that raises
  (``executor.max_retries``). Ray is an optional extra: ``pip install 'dpaudit[ray]'``.

The function a unit runs must be importable on the workers (dpaudit installed there) and
take plain data: the config as a dict, the audit's arrays, a list of model indices.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence

from audit.config import ExecutorSettings
from audit.errors import InputError

Unit = Sequence[int]


class Executor(Protocol):
    """Runs ``fn(*shared, unit)`` for every unit and yields the results as they finish."""

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...

    def map_unordered(self, fn: Callable[..., Any], shared: Sequence[Any], units: Sequence[Unit]) -> Iterator[Any]: ...


class LocalExecutor:
    """Every unit in this process, in the order given."""

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map_unordered(self, fn, shared, units):
        for unit in units:
            yield fn(*shared, list(unit))


def import_ray():
    """The ``ray`` module, or an InputError naming the extra that installs it."""
    try:
        import ray
    except ImportError as err:
        raise InputError(f"executor.kind = 'ray' needs the ray extra: pip install 'dpaudit[ray]' ({err})") from None
    return ray


class RayExecutor:
    """Units as Ray tasks, each reserving ``num_cpus``/``num_gpus``.

    On entry: a Ray already initialised in this process (by the caller) is used and left
    as it is; else ``ray.init(address=...)`` joins an existing cluster, or, with no
    address, a local Ray is started with its node address on 127.0.0.1 and no dashboard.
    On exit the driver disconnects from what it joined or started; a cluster it joined
    keeps running, a local Ray it started stops with it.
    """

    def __init__(self, settings: ExecutorSettings):
        self.settings = settings
        self._ray = None
        self._owns_connection = False

    def __enter__(self) -> "RayExecutor":
        ray = self._ray = import_ray()
        s = self.settings
        if not ray.is_initialized():
            if s.address:
                ray.init(address=s.address, log_to_driver=False)
            else:
                ray.init(num_cpus=s.local_cpus or None, include_dashboard=False,
                         _node_ip_address="127.0.0.1", log_to_driver=False)
            self._owns_connection = True
        return self

    def __exit__(self, *exc) -> None:
        if self._owns_connection:
            self._ray.shutdown()
            self._owns_connection = False

    def map_unordered(self, fn, shared, units):
        ray, s = self._ray, self.settings
        task = ray.remote(num_cpus=s.num_cpus, num_gpus=s.num_gpus, max_retries=s.max_retries,
                          retry_exceptions=True)(fn)
        refs = [ray.put(value) for value in shared]  # once in the object store, not once per task
        pending = [task.remote(*refs, list(unit)) for unit in units]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                # A unit that failed after its retries raises here as its own exception type
                # (Ray's error is also an instance of the cause), e.g. InputError stays one.
                yield ray.get(done[0])
        finally:
            for ref in pending:  # the driver stops early (error, Ctrl-C): drop what is left
                ray.cancel(ref, force=True)


def make_executor(settings: ExecutorSettings) -> Executor:
    """The executor ``settings.kind`` names (Ray imported only when asked for)."""
    if settings.kind == "ray":
        import_ray()  # fail before any work, with the extra's name
        return RayExecutor(settings)
    return LocalExecutor()
