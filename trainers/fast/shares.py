"""Threads for shares of K models: contiguous groups of models that workers compute at the
same time (:func:`trainers.fast.train`'s ``workers``, :meth:`StackedMLP.logits`). Each
model's arithmetic is its own, so the shares change no number; torch releases the GIL
inside its operations, so the threads run on separate cores.
"""

from __future__ import annotations

from typing import Sequence

import torch


def thread_pool(workers: int, prefix: str):
    """A ``ThreadPoolExecutor`` whose threads compute on the caller's torch thread count.
    A new thread's OpenMP default is every core, so without this each worker's operations
    would oversubscribe the cores (measured, 2 workers at one torch thread each, K = 18:
    19.3 -> 16.2 ms a step)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(workers, thread_name_prefix=prefix, initializer=torch.set_num_threads,
                              initargs=(torch.get_num_threads(),))


class ShareRunner:
    """Calls one function per share of the models and returns their results in order:
    inline for one share; else the calling thread runs the first while a pool (kept
    across calls, :func:`thread_pool`) runs the rest."""

    def __init__(self, shares: int, prefix: str):
        self.pool = thread_pool(shares - 1, prefix) if shares > 1 else None

    def __enter__(self) -> "ShareRunner":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def __call__(self, calls: Sequence) -> list:
        if self.pool is None:
            return [call() for call in calls]
        futures = [self.pool.submit(call) for call in calls[1:]]
        first = calls[0]()
        return [first, *(f.result() for f in futures)]


def share_slices(n_models: int, workers: int) -> list[slice]:
    """``min(workers, n_models)`` contiguous shares of ``range(n_models)``, sizes differing
    by at most one (``torch.tensor_split``'s split); one empty share when there are none."""
    parts = torch.arange(n_models).tensor_split(max(1, min(int(workers), n_models)))
    bounds = [0, *(int(p[-1]) + 1 if len(p) else 0 for p in parts)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
