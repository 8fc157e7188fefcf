"""Canary rows reserved where Opacus allocates the per-sample gradients.

A gradient canary is one more row of every parameter's per-sample gradient
(:mod:`canaries.gradient`): the optimizer's clipping stacks one norm per parameter and
row, so every ``p.grad_sample`` needs the same number of rows, the canary rows included
(zero outside the canary's own coordinates). Appending them after the backward pass
copies every real per-sample gradient once more at every step, which is the audit's main
cost on a user's own loop (issue 15).

Opacus' per-sample gradient hooks (``grad_sample_mode`` "hooks" and "functorch") allocate
each parameter's per-sample gradient themselves, as a zero tensor of the batch's rows into
which the layer's rows are copied
(``opacus.grad_sample.grad_sample_module.create_or_accumulate_grad_sample``). This module
wraps that function so that, for the parameters of an optimizer that carries canaries
and on the last physical batch of a logical step, the zero tensor has ``k`` more rows, k
being the number of canaries present at that step (drawn before the backward pass, in the
same order as they would be drawn after it). The real rows are then exactly Opacus' own
and the canary rows are already zero: nothing is copied again. (The tensor is allocated
empty and every row written once, the layer's rows copied and the others zeroed, where
Opacus zeroes all rows and then copies: the same values, one pass over memory fewer.) Parameters of any other
model, and every call while no optimizer carries canaries, go to Opacus' function
unchanged; per-sample gradients that do not come through it ("ew" mode, a parameter
accumulated over several backward passes) are padded after the fact as before.

A reserved tensor carries ``_canary_rows = k`` (Opacus marks these tensors the same way,
with ``_processed``); the canary optimizer checks it before using the rows.
"""

from __future__ import annotations

import threading
import weakref

import torch

_LOCK = threading.Lock()
# id(param) -> (weak reference to the parameter, weak reference to its canary optimizer).
# Kept here, not as an attribute of the parameter, so that pickling or copying the model
# never meets a weak reference.
_OWNERS: dict[int, tuple[weakref.ref, weakref.ref]] = {}
_ORIGINAL = None


def _module():
    import opacus.grad_sample.grad_sample_module as gsm

    return gsm


def _owner(param):
    entry = _OWNERS.get(id(param))
    if entry is None or entry[0]() is not param:
        return None
    return entry[1]()


def _reserving(*, param: torch.Tensor, grad_sample: torch.Tensor, max_batch_len: int) -> None:
    """Opacus' ``create_or_accumulate_grad_sample``, with the canary rows of a planned step."""
    owner = _owner(param) if _OWNERS else None
    if owner is None or not param.requires_grad or hasattr(param, "_current_grad_sample"):
        return _ORIGINAL(param=param, grad_sample=grad_sample, max_batch_len=max_batch_len)
    rows = owner._canary_planned_rows()
    if rows == 0:
        return _ORIGINAL(param=param, grad_sample=grad_sample, max_batch_len=max_batch_len)
    n = grad_sample.shape[0]
    buf = torch.empty(torch.Size([max_batch_len + rows]) + grad_sample.shape[1:], device=grad_sample.device,
                      dtype=grad_sample.dtype)
    buf[:n] = grad_sample  # the values Opacus' zero tensor would hold, written once
    buf[n:].zero_()
    buf._canary_rows = rows
    param._current_grad_sample = buf
    return None


def reserve(optimizer, params) -> None:
    """Have Opacus' hooks reserve ``optimizer``'s canary rows on ``params`` (its real parameters)."""
    global _ORIGINAL
    owner = weakref.ref(optimizer)
    with _LOCK:
        gsm = _module()
        if not hasattr(gsm, "create_or_accumulate_grad_sample"):
            return  # an Opacus without this function: the canary optimizer pads after the backward pass
        if gsm.create_or_accumulate_grad_sample is not _reserving:
            _ORIGINAL = gsm.create_or_accumulate_grad_sample
            gsm.create_or_accumulate_grad_sample = _reserving
        for p in params:
            _OWNERS[id(p)] = (weakref.ref(p), owner)


def release(optimizer, params) -> None:
    """Undo :func:`reserve` for ``params``; Opacus' own function is put back once no optimizer reserves rows."""
    global _ORIGINAL
    with _LOCK:
        for p in params:
            if _owner(p) is optimizer:
                del _OWNERS[id(p)]
        for key in [k for k, (p, o) in _OWNERS.items() if p() is None or o() is None]:
            del _OWNERS[key]  # parameters or optimizers that are gone
        gsm = _module()
        if not _OWNERS and gsm.create_or_accumulate_grad_sample is _reserving:
            gsm.create_or_accumulate_grad_sample = _ORIGINAL
            _ORIGINAL = None


def reserved_rows(tensor: torch.Tensor) -> int:
    """How many canary rows at the end of ``tensor`` were reserved (0 if none)."""
    return int(getattr(tensor, "_canary_rows", 0))
