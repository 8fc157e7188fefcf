"""White-box gradient canaries inserted into Opacus' DP-SGD.

A gradient canary is a per-sample gradient chosen by the auditor, added to the batch as
one more example (Steinke, Nasr & Jagielski 2023, Section 7; Nasr et al. 2023, "Tight
auditing of differentially private machine learning", Section 3). An included canary
is present at each step independently with the Poisson rate q of the real records; when
present it is clipped over all of its coordinates and summed with the real examples,
exactly as DP-SGD treats a record. Non-included canaries are never present but are
observed the same way, so they are the one-run audit's non-members.

Where the canaries live
-----------------------
A canary needs coordinates that no real per-sample gradient touches, so that its reading
is its own contribution plus noise. The default is a dedicated *canary slot*
(:class:`CanarySlots`): ``n_tensors`` zero-initialised parameters of size m (one
coordinate per canary) registered on the model but never used in its forward pass, so
every real per-sample gradient there is exactly zero (Opacus computes no per-sample
gradient for them; the optimizer fills in zero rows). Coordinates inside a real
parameter can be used instead (:meth:`GradientCanaries.dirac` with ``indices``), e.g.
input-layer weights of an input feature that is always zero; the optimizer checks at
every step that real per-sample gradients there are zero and raises
:class:`~audit.errors.InputError` otherwise.

Kinds
-----
* Dirac (:meth:`GradientCanaries.dirac`): canary i is ``norm * e_i`` on one coordinate.
* Split (:meth:`GradientCanaries.split`): canary i is spread equally over coordinate i of
  two or more parameter tensors, ``norm / sqrt(k)`` on each. Clipping the whole
  per-sample gradient brings it to norm C; clipping each tensor separately to C lets
  ``sqrt(k) * C`` through, which its reading shows.

The inserted norm is ``norm_factor * C`` with ``norm_factor = 1000`` by default: correct
clipping scales it to C (up to Opacus' ``1e-6`` stabiliser: ``C * 1000C / (1000C + 1e-6)``),
so a correct optimizer is audited exactly as with a norm-C canary, while missing or
broken clipping lets the large norm through.

Observations
------------
A reading comes from what the step releases, after everything the optimizer does to the
noisy sum (Steinke, Nasr & Jagielski 2023 and Nasr et al. 2023 audit the released
iterates): at each (non-skipped) logical step, the change of the canary's coordinates
between the iterates before and after the step, turned back into a gradient by the
inner optimizer's own rule and brought to the unnormalised scale with the *configured*
expected batch size (times the accumulated physical batches, under ``loss_reduction =
"mean"``), projected on the canary's unit direction u_i:

    x_t = b_t * C + N(0, sigma^2 C^2)          for a correct optimizer.

The rule is inverted exactly for ``torch.optim.SGD`` without momentum (any learning rate
and weight decay: ``g = (theta_before - theta_after) / lr - weight_decay * theta_before``),
the optimizer of DP-SGD. With momentum, Adam or any other inner optimizer (whose update is
not a function of this step's gradient alone) the reading is the gradient the inner
optimizer receives (``p.grad`` after ``add_noise`` and ``scale_grad``), again times the
configured scale; :attr:`GradientCanaryObservations.reading_source` says which. Either
way, what a faulty step does after the noise (dividing by the realised batch size,
scaling the noise twice) shows in the readings instead of being undone.

from which :class:`GradientCanaryObservations` holds the all-iterates sum (Nasr et al.
2023), the likelihood-ratio statistic over iterates
(:func:`canaries.iterate_scores.likelihood_ratio`, its derivation is there), and the
last-iterate statistic ``<theta_0 - theta_T, u_i>`` (final minus initial parameter value
on the canary's coordinates, negated so that higher means member, since descent moves
against the gradient).

Why not ghost clipping
----------------------
Opacus' ghost clipping (``grad_sample_mode="ghost"``, ``DPOptimizerFastGradientClipping``)
never materialises ``p.grad_sample``: per-sample norms come from activations and
backpropagated gradients, and the clipped sum comes from a second backward pass of the
reweighted loss. There is no per-sample row to add a canary to, so
:func:`with_canaries` refuses those optimizers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np
import torch
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer_fast_gradient_clipping import DPOptimizerFastGradientClipping
from torch import nn

from audit.errors import InputError
from canaries import reserved_rows
from canaries.iterate_scores import all_iterates, likelihood_ratio

DEFAULT_NORM_FACTOR = 1000.0


class CanarySlots(nn.Module):
    """Dedicated canary coordinates: ``n_tensors`` parameters ``float[n_canaries]``, zero at start.

    Register it on the model (``model.canary_slots = CanarySlots(m)``) before wrapping the
    model with Opacus, so the slots are model parameters the optimizer updates. The
    model's ``forward`` must not call it: then no real per-sample gradient touches the slots.
    Opacus computes no per-sample gradient for the slots; the canary optimizer
    (:func:`with_canaries`) fills in their zero rows, while a plain ``DPOptimizer`` would
    raise "Per sample gradient is not initialized".
    """

    def __init__(self, n_canaries: int, n_tensors: int = 1, dtype: torch.dtype = torch.float32):
        super().__init__()
        for name, value, low in (("n_canaries", n_canaries, 1), ("n_tensors", n_tensors, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name}={value!r}: expected an integer >= {low}")
        self.n_canaries = n_canaries
        self.slots = nn.ParameterList([nn.Parameter(torch.zeros(n_canaries, dtype=dtype)) for _ in range(n_tensors)])
        for slot in self.slots:
            slot.canary_slot = True  # the optimizer fills its (all-zero) real per-sample gradients

    def forward(self, *args, **kwargs):
        raise RuntimeError("CanarySlots must not be called in forward: real gradients would touch canary coordinates")


@dataclasses.dataclass(frozen=True, eq=False)
class CanaryCoordinates:
    """The canaries' unit directions restricted to one parameter tensor.

    Entry j puts weight ``weight[j]`` on flat coordinate ``index[j]`` of ``param`` for
    canary ``canary[j]``.

    Attributes:
      param: the parameter tensor.
      canary: int64[entries].
      index: int64[entries].
      weight: float64[entries].
    """

    param: nn.Parameter
    canary: torch.Tensor
    index: torch.Tensor
    weight: torch.Tensor


def _check_members(members, n_canaries: int) -> np.ndarray:
    if members is None:
        return np.ones(n_canaries, dtype=bool)
    members = np.asarray(members)
    if members.shape != (n_canaries,) or members.dtype != bool:
        raise InputError(f"members with shape {members.shape} and dtype {members.dtype}: expected bool[{n_canaries}]")
    return members.copy()


def _check_rate(sample_rate) -> float:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)) or not 0.0 < sample_rate <= 1.0:
        raise InputError(f"sample_rate={sample_rate!r}: expected a probability in (0, 1]")
    return float(sample_rate)


def _check_factor(norm_factor) -> float:
    if isinstance(norm_factor, bool) or not isinstance(norm_factor, (int, float, np.integer, np.floating)) or not 0.0 < norm_factor < math.inf:
        raise InputError(f"norm_factor={norm_factor!r}: expected a finite number > 0")
    return float(norm_factor)


@dataclasses.dataclass(frozen=True, eq=False)
class GradientCanaries:
    """m gradient canaries: their directions, which are included, their rate and norm.

    Build with :meth:`dirac` or :meth:`split`.

    Attributes:
      coordinates: one :class:`CanaryCoordinates` per parameter tensor the canaries use;
        canaries have disjoint supports and unit-norm directions.
      members: bool[canaries]; which canaries are included (the design, e.g.
        ``canaries.designs.one_run(1, m, rng)[0]``). Non-members are observed, never inserted.
      sample_rate: q, the per-step presence probability of an included canary.
      norm_factor: the inserted per-sample gradient norm is ``norm_factor * C``.
      kind: "dirac" or "split".
    """

    coordinates: tuple[CanaryCoordinates, ...]
    members: np.ndarray
    sample_rate: float
    norm_factor: float
    kind: str

    @property
    def n_canaries(self) -> int:
        return int(self.members.shape[0])

    @classmethod
    def dirac(
        cls,
        param: nn.Parameter,
        *,
        sample_rate: float,
        members=None,
        indices: Sequence[int] | None = None,
        norm_factor: float = DEFAULT_NORM_FACTOR,
    ) -> "GradientCanaries":
        """Canary i is a Dirac gradient on flat coordinate ``indices[i]`` of ``param``.

        Args:
          param: a canary slot (``CanarySlots(m).slots[0]``) or a real parameter whose
            ``indices`` no real gradient touches.
          indices: int[canaries], distinct flat coordinates; default ``0..numel-1``
            (one canary per coordinate of a slot).
          members: bool[canaries]; default all included.
        """
        if not isinstance(param, torch.Tensor):
            raise InputError(f"param={type(param).__name__}: expected a torch nn.Parameter")
        if indices is None:
            idx = torch.arange(param.numel())
        else:
            idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        m = int(idx.numel())
        coords = CanaryCoordinates(param, torch.arange(m), idx.reshape(-1), torch.ones(m, dtype=torch.float64))
        return cls._build((coords,), m, members, sample_rate, norm_factor, "dirac")

    @classmethod
    def split(
        cls,
        params: Sequence[nn.Parameter],
        *,
        sample_rate: float,
        members=None,
        norm_factor: float = DEFAULT_NORM_FACTOR,
    ) -> "GradientCanaries":
        """Canary i spread equally over coordinate i of each of the k >= 2 tensors (weight 1/sqrt(k) each).

        Args:
          params: k >= 2 parameter tensors with the same number of elements m (e.g.
            ``CanarySlots(m, n_tensors=2).slots``); one canary per coordinate.
        """
        params = list(params)
        if len(params) < 2:
            raise InputError(f"{len(params)} parameter tensors: expected at least 2 to split a canary over")
        sizes = {p.numel() for p in params}
        if len(sizes) != 1:
            raise InputError(f"parameter sizes {sorted(sizes)}: expected tensors with the same number of elements")
        m = sizes.pop()
        w = torch.full((m,), 1.0 / math.sqrt(len(params)), dtype=torch.float64)
        coords = tuple(CanaryCoordinates(p, torch.arange(m), torch.arange(m), w) for p in params)
        return cls._build(coords, m, members, sample_rate, norm_factor, "split")

    @classmethod
    def _build(cls, coords, m, members, sample_rate, norm_factor, kind) -> "GradientCanaries":
        if m < 1:
            raise InputError("no canary coordinates: expected at least one canary")
        seen = {}
        norms = torch.zeros(m, dtype=torch.float64)
        for c in coords:
            if c.index.min() < 0 or c.index.max() >= c.param.numel():
                raise InputError(
                    f"canary indices in [{int(c.index.min())}, {int(c.index.max())}]: "
                    f"expected flat indices in [0, {c.param.numel() - 1}]"
                )
            used = seen.setdefault(id(c.param), set())
            for i in c.index.tolist():
                if i in used:
                    raise InputError(f"coordinate {i} used twice: expected disjoint canary coordinates")
                used.add(i)
            norms.index_add_(0, c.canary, c.weight**2)
        if not torch.allclose(norms, torch.ones_like(norms)):
            raise InputError("canary directions must have unit norm")
        return cls(coords, _check_members(members, m), _check_rate(sample_rate), _check_factor(norm_factor), kind)


@dataclasses.dataclass(frozen=True)
class GradientCanaryObservations:
    """What the auditor reads about each canary after training.

    Attributes:
      members: bool[canaries]; which canaries were included.
      presence: bool[steps, canaries]; whether each canary was in each step's batch.
      readings: float[steps, canaries]; ``<noisy summed gradient, u_i>`` at each step.
      all_iterates: float[canaries]; sum of readings (Nasr et al. 2023).
      likelihood_ratio: float[canaries]; LLR of the readings, "present at rate q" against
        "never present" (see :mod:`canaries.iterate_scores`).
      last_iterate: float[canaries]; ``<theta_0 - theta_T, u_i>``.
      sample_rate, noise_multiplier, max_grad_norm, norm_factor: the settings read under.
      reading_source: "iterates" (the released change of the parameters, inverted through
        plain SGD) or "gradient" (the gradient the inner optimizer receives).
    """

    members: np.ndarray
    presence: np.ndarray
    readings: np.ndarray
    all_iterates: np.ndarray
    likelihood_ratio: np.ndarray
    last_iterate: np.ndarray
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    norm_factor: float
    reading_source: str = "iterates"

    def named_statistics(self) -> dict[str, np.ndarray]:
        """float[canaries] per white-box statistic name (``audit.statistics``): those of
        :func:`canaries.iterate_scores.noise_level_statistics`, the all-iterates sum and the
        last iterate."""
        from canaries.iterate_scores import noise_level_statistics

        return {
            **noise_level_statistics(self.readings, sample_rate=self.sample_rate,
                                     noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm),
            "all-iterates": self.all_iterates,
            "last-iterate": self.last_iterate,
        }


def _latest(grad_sample):
    return grad_sample[-1] if isinstance(grad_sample, list) else grad_sample


def _set_latest(p: nn.Parameter, value: torch.Tensor) -> None:
    if isinstance(p.grad_sample, list):
        p.grad_sample[-1] = value
    else:
        p.grad_sample = value


def _gather(canaries: GradientCanaries, tensors: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    """The values of each coordinate set's coordinates (copies, on the tensors' device and in
    their dtype); ``tensors`` maps id(param) to a tensor shaped like it."""
    out = []
    for c in canaries.coordinates:
        t = tensors[id(c.param)].detach()
        out.append(t.reshape(-1)[c.index if t.device.type == "cpu" else c.index.to(t.device)])
    return out


def _combine(canaries: GradientCanaries, values: Sequence) -> np.ndarray:
    """``<., u_i>`` for each canary i from :func:`_gather`'s values (float64 arrays or tensors):
    summed over the canary's coordinate sets in their order (``np.bincount`` per set)."""
    out = np.zeros(canaries.n_canaries)
    for c, v in zip(canaries.coordinates, values):
        if isinstance(v, torch.Tensor):
            v = v.to(torch.float64).cpu().numpy()
        out += np.bincount(c.canary.numpy(), weights=v * c.weight.numpy(), minlength=out.size)
    return out


def _project(canaries: GradientCanaries, tensors: dict[int, torch.Tensor]) -> np.ndarray:
    """``<tensor, u_i>`` for each canary i, in float64; ``tensors`` maps id(param) to a tensor shaped like it."""
    return _combine(canaries, _gather(canaries, tensors))


class CanaryDPOptimizerMixin:
    """Adds gradient canaries to a :class:`opacus.optimizers.DPOptimizer` (or any subclass).

    Before the base ``pre_step`` (so before clipping), each present canary is one more row
    of ``p.grad_sample`` on every parameter (zero outside its coordinates); the user's own
    clipping must see the canary rows on every parameter. The reading is taken from the
    released step (see the module's "Observations"). Where Opacus' hooks computed the
    per-sample gradients, the rows were reserved when they were allocated
    (:mod:`canaries.reserved_rows`: the presence of the step's canaries is drawn just
    before its backward pass) and only the canary values are written. Otherwise ("ew"
    mode, accumulated per-sample gradients) the real rows are copied into buffers kept
    across steps (``_canary_buffers``, one per parameter, released by ``attach_audit``'s
    ``finish``), with the values ``torch.cat`` would give.
    With virtual steps (``signal_skip_step``), canaries are inserted once per logical step,
    in its last physical batch. Use :func:`with_canaries` to attach one.

    Readings assume a fixed clipping norm C (``max_grad_norm``); with adaptive clipping the
    likelihood-ratio statistic is computed at the final C.
    """

    _canaries: GradientCanaries
    _canary_generator: torch.Generator
    _canary_presence: list
    _canary_readings: list
    _canary_initial: np.ndarray
    _canary_pending: bool
    _canary_noised: bool
    _canary_release: dict | None
    _canary_sources: set
    _canary_buffers: dict
    _canary_plan: torch.Tensor | None
    _canary_plan_rows: int
    _canary_by_param: dict
    _canary_param_map: dict
    _canary_reserved: list

    def _canary_setup(self, canaries: GradientCanaries, generator: torch.Generator) -> None:
        self._canaries = canaries
        self._canary_generator = generator
        self._canary_presence = []
        self._canary_readings = []
        self._canary_pending = False
        self._canary_noised = False
        self._canary_release = None
        self._canary_sources = set()
        self._canary_buffers = {}
        self._canary_plan = None
        self._canary_plan_rows = 0
        self._canary_by_param = {}
        for c in canaries.coordinates:
            self._canary_by_param.setdefault(id(c.param), []).append(c)
        self._canary_param_map = {id(c.param): c.param for c in canaries.coordinates}
        self._canary_reserved = [p for p in self.params if not getattr(p, "canary_slot", False)]
        reserved_rows.reserve(self, self._canary_reserved)
        self._canary_initial = _project(canaries, {id(c.param): c.param.detach().clone() for c in canaries.coordinates})

    def _canary_draw(self) -> torch.Tensor:
        """bool[canaries]: which included canaries are present at this logical step."""
        canaries = self._canaries
        present = torch.rand(canaries.n_canaries, generator=self._canary_generator) < canaries.sample_rate
        return present & torch.as_tensor(canaries.members)

    def _canary_planned_rows(self) -> int:
        """Canary rows the coming backward pass should reserve: the number of canaries present
        at this logical step if its batch is the last physical one, else 0. Draws the
        presence once per logical step, in the order ``_insert_canaries`` would."""
        if self._canary_plan is not None:  # drawn on this step's last physical batch, not yet used
            return self._canary_plan_rows
        if self._check_skip_next_step(pop_next=False):
            return 0
        self._canary_plan = self._canary_draw()
        self._canary_plan_rows = int(self._canary_plan.sum())
        return self._canary_plan_rows

    def _canary_unreserve(self) -> None:
        """Stop reserving canary rows in Opacus' hooks (the canaries are being detached)."""
        reserved_rows.release(self, getattr(self, "_canary_reserved", ()))
        self._canary_reserved = []

    def _canary_params(self) -> dict[int, nn.Parameter]:
        return self._canary_param_map

    def _canary_scale(self) -> float:
        """The configured normalisation that ``scale_grad`` should apply, undone on reading."""
        if getattr(self, "loss_reduction", "mean") != "mean":
            return 1.0
        return float(self.expected_batch_size) * float(self.accumulated_iterations)

    def _sgd_groups(self) -> dict[int, dict] | None:
        """The inner optimizer's param group of each canary parameter when the inner optimizer
        is plain SGD (no momentum, not maximising), whose step can be inverted; else None."""
        inner = getattr(self, "original_optimizer", None)
        if type(inner) is not torch.optim.SGD:
            return None
        groups = {}
        for group in inner.param_groups:
            for p in group["params"]:
                groups[id(p)] = group
        params = self._canary_params()
        if any(k not in groups for k in params):
            return None
        if any(groups[k].get("momentum", 0) or groups[k].get("maximize", False) for k in params):
            return None
        return {k: groups[k] for k in params}

    def _record(self, reading: np.ndarray, source: str) -> None:
        self._canary_readings.append(reading)
        self._canary_sources.add(source)

    def _flush_release(self) -> None:
        """A step whose release was never seen (``pre_step`` without ``step``): keep its gradient reading."""
        if self._canary_release is not None:
            self._record(self._release_gradient(self._canary_release), "gradient")
            self._canary_release = None

    def _release_gradient(self, release: dict) -> np.ndarray:
        """The gradient reading of a noted release: ``<p.grad, u_i>`` at ``pre_step`` times the scale."""
        return _combine(self._canaries, release["gradient"]) * release["scale"]

    def _canary_buffer(self, p: nn.Parameter, rows: int, like: torch.Tensor) -> torch.Tensor:
        """``like``-typed ``[rows, *p.shape]``: the first rows of a buffer kept for ``p`` across steps.

        Why a buffer: a fresh tensor of batch x numel per parameter and step (what ``torch.cat``
        returns) is fresh memory the system has to map and zero at every step, which costs more
        than the copy itself; a kept buffer is written over in place. The view starts at the
        buffer's first element and is contiguous, so Opacus reduces it exactly as it would a
        fresh tensor of the same shape (same kernels, same values)."""
        buffers = self.__dict__.setdefault("_canary_buffers", {})
        buf = buffers.get(id(p))
        if buf is None or buf.shape[0] < rows or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty((rows + rows // 4 + 1,) + tuple(p.shape), dtype=like.dtype, device=like.device)
            buffers[id(p)] = buf
        return buf[:rows]

    def _insert_canaries(self) -> None:
        self._flush_release()
        if self._canary_pending:
            raise RuntimeError(
                f"{type(self).__name__} took a step without calling add_noise: canary readings are taken right "
                "after add_noise, so this optimizer cannot be audited with gradient canaries as it stands"
            )
        canaries = self._canaries
        by_param = self._canary_by_param
        filled, real = [], []  # filled: parameters whose all-zero per-sample gradients are written here, not by Opacus
        for p in self.params:
            if getattr(p, "grad_sample", None) is not None:
                real.append(p)
            elif getattr(p, "canary_slot", False) or id(p) in by_param:
                filled.append(p)
        first = next((p for p in real if not getattr(p, "canary_slot", False)), None)
        if first is not None:
            first = _latest(first.grad_sample)
            batch = first.shape[0] - reserved_rows.reserved_rows(first)
        else:
            batch = 0
        for p in real:
            for c in by_param.get(id(p), ()):
                g = _latest(p.grad_sample)[:batch].reshape(batch, p.numel())[:, c.index.to(p.device)]
                if g.numel() and bool((g != 0).any()):
                    raise InputError(
                        "real per-sample gradients touch canary coordinates: expected coordinates no real gradient "
                        "uses (a CanarySlots parameter, or weights of an always-zero input feature)"
                    )
        last = not self._check_skip_next_step(pop_next=False)  # the last physical batch of this logical step
        present = None
        if last:
            present = self._canary_plan if self._canary_plan is not None else self._canary_draw()
            self._canary_plan = None
            self._canary_presence.append(present.numpy().copy())
            self._canary_pending = True
        present_np = present.numpy() if present is not None else np.zeros(canaries.n_canaries, dtype=bool)
        ids = np.flatnonzero(present_np)  # ascending
        k = int(ids.size)
        for p in filled:  # all-zero rows, plus the canary rows when canaries are present
            p.grad_sample = self._canary_buffer(p, batch + k, p.detach()).zero_()
        for p in real:
            latest = _latest(p.grad_sample)
            extra = reserved_rows.reserved_rows(latest)
            if extra == k:
                continue  # its k canary rows are already there, all zero (or none are needed)
            if extra:  # rows reserved for another draw: keep only the real ones
                latest = latest[: latest.shape[0] - extra]
                _set_latest(p, latest)
            if k:  # the real rows, then k zero rows; values as torch.cat([latest, zeros]) gives them
                padded = self._canary_buffer(p, batch + k, latest)
                padded[:batch].copy_(latest)
                padded[batch:].zero_()
                _set_latest(p, padded)
        if not k:
            return
        # Present canary j takes row batch + (its rank among the present ones), as
        # torch.cat([real rows, canary rows in canary order]) would place it.
        norm = canaries.norm_factor * float(self.max_grad_norm)
        for p in (*filled, *real):
            coords = by_param.get(id(p))
            if not coords:
                continue
            padded = _latest(p.grad_sample)
            flat = padded.view(batch + k, p.numel())
            for c in coords:
                canary = c.canary.numpy()
                keep = present_np[canary]
                rows = torch.from_numpy(batch + np.searchsorted(ids, canary[keep])).to(padded.device)
                cols = torch.from_numpy(c.index.numpy()[keep]).to(padded.device)
                flat[rows, cols] = torch.from_numpy(norm * c.weight.numpy()[keep]).to(dtype=padded.dtype,
                                                                                       device=padded.device)

    def pre_step(self, closure=None):
        self._insert_canaries()
        taken = super().pre_step(closure)
        if self._canary_noised:  # noise added and scaled: note the gradient and the iterate before the step
            self._canary_noised = False
            scale = self._canary_scale()
            params = self._canary_params()
            # Only the canary coordinates are kept (gathered copies); the readings are
            # computed from them when needed (the gradient's, if the step is not seen).
            self._canary_release = {
                "scale": scale,
                "gradient": _gather(self._canaries, {k: p.grad for k, p in params.items()}),
                "before": _gather(self._canaries, params),
            }
        return taken

    def add_noise(self):
        super().add_noise()
        if self._canary_pending:
            self._canary_pending = False
            self._canary_noised = True

    def step(self, closure=None):
        result = super().step(closure)
        release, self._canary_release = self._canary_release, None
        if release is not None:
            groups = self._sgd_groups()
            if groups is None:
                self._record(self._release_gradient(release), "gradient")
            else:  # g = (theta_before - theta_after) / lr - weight_decay * theta_before, coordinate by coordinate
                after = _gather(self._canaries, self._canary_params())
                grads = []
                for c, b, a in zip(self._canaries.coordinates, release["before"], after):
                    group = groups[id(c.param)]
                    lr, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))
                    before = b.to(torch.float64).cpu().numpy()
                    grads.append((before - a.to(torch.float64).cpu().numpy()) / lr - wd * before)
                self._record(_combine(self._canaries, grads) * release["scale"], "iterates")
        return result

    def canary_observations(self) -> GradientCanaryObservations:
        """The canaries' statistics over all steps taken so far."""
        self._flush_release()
        canaries = self._canaries
        m = canaries.n_canaries
        steps = len(self._canary_readings)
        presence = np.array(self._canary_presence[:steps], dtype=bool).reshape(steps, m)
        readings = np.array(self._canary_readings, dtype=np.float64).reshape(steps, m)
        final = _project(canaries, {id(c.param): c.param.detach() for c in canaries.coordinates})
        c = float(self.max_grad_norm)
        return GradientCanaryObservations(
            members=canaries.members.copy(),
            presence=presence,
            readings=readings,
            all_iterates=all_iterates(readings),
            likelihood_ratio=likelihood_ratio(
                readings, sample_rate=canaries.sample_rate, noise_multiplier=float(self.noise_multiplier), max_grad_norm=c
            ),
            last_iterate=self._canary_initial - final,
            sample_rate=canaries.sample_rate,
            noise_multiplier=float(self.noise_multiplier),
            max_grad_norm=c,
            norm_factor=canaries.norm_factor,
            reading_source="gradient" if "gradient" in self._canary_sources else "iterates",
        )


@functools.cache
def canary_optimizer_class(base: type) -> type:
    """``Canary<Base>``: ``base`` (a DPOptimizer subclass) with :class:`CanaryDPOptimizerMixin` in front."""
    if not (isinstance(base, type) and issubclass(base, DPOptimizer)):
        raise InputError(f"base={base!r}: expected a subclass of opacus.optimizers.DPOptimizer")
    if issubclass(base, DPOptimizerFastGradientClipping):
        raise InputError(
            f"base={base.__name__}: ghost clipping never materialises per-sample gradients, so there is no "
            "row to add a gradient canary to; expected a DPOptimizer that clips p.grad_sample "
            '(grad_sample_mode="hooks" or "ew")'
        )
    if issubclass(base, CanaryDPOptimizerMixin):
        raise InputError(f"base={base.__name__}: already carries canaries")
    return type(f"Canary{base.__name__}", (CanaryDPOptimizerMixin, base), {})


def with_canaries(optimizer: DPOptimizer, canaries: GradientCanaries, *, generator: torch.Generator) -> DPOptimizer:
    """Make ``optimizer`` insert and observe ``canaries``; returns the same object.

    Works on the optimizer ``PrivacyEngine.make_private`` returns, on a user's
    ``DPOptimizer`` subclass (plugins) and on deliberately faulty variants: its class is
    swapped for ``canary_optimizer_class(type(optimizer))``, keeping all of its state.

    Args:
      optimizer: a DPOptimizer whose parameters include every canary parameter.
      canaries: the canaries to insert.
      generator: source of the canaries' per-step presence draws.
    """
    if not isinstance(optimizer, DPOptimizer):
        raise InputError(f"optimizer={type(optimizer).__name__}: expected an opacus DPOptimizer")
    if not isinstance(canaries, GradientCanaries):
        raise InputError(f"canaries={type(canaries).__name__}: expected GradientCanaries")
    if not isinstance(generator, torch.Generator):
        raise InputError(f"generator={generator!r}: expected a torch.Generator")
    own = {id(p) for p in optimizer.params}
    for c in canaries.coordinates:
        if id(c.param) not in own:
            raise InputError("a canary parameter is not among the optimizer's parameters: expected one of them")
    cls = canary_optimizer_class(type(optimizer))
    optimizer.__class__ = cls
    optimizer._canary_setup(canaries, generator)
    return optimizer
