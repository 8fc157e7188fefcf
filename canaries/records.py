"""Canary *records* that travel through the user's data pipeline (reserved input features).

The Dirac gradient canaries of :mod:`canaries.gradient` enter at the optimizer: they are
sampled by the harness at the accountant's rate, so they test the optimizer and the
accountant but never the user's ``Dataset``, ``DataLoader`` or sampler. A canary *record*
is an ordinary training record, inserted into the training set, so it is batched by the
user's own loader and sampler like any record. Steinke, Nasr & Jagielski 2023 ("Privacy
auditing with one (1) training run") audit with input-space canaries (records in the
data) and with white-box gradient canaries (coordinates of their own); a reserved input
feature per canary gives a record whose gradient lands on coordinates of its own, so the
white-box reading of Nasr et al. 2023 ("Tight auditing of differentially private machine
learning") applies to a record that went through the pipeline. Whatever the pipeline does
to records (shuffled fixed-size batches, a weighted sampler, a record used twice) it does
to the canaries.

Construction (:class:`RecordCanaries`)
--------------------------------------
The user's tabular records have d features. The model's input gets m more features, one
*reserved* feature per canary, always 0 in real records. Canary i is the record whose
real features are ``base`` (0 by default), whose reserved feature i is ``value`` and whose
other reserved features are 0, with label ``labels[i]``. The model is the user's, with
input width d + m (nothing else changes); its first layer is affine,
``h = W x + b`` with ``W: [h, d + m]``.

Reserved coordinates
--------------------
Column d + i of W, ``W[:, d + i]`` (h coordinates), is canary i's *reserved block*: its
per-sample gradient is ``dL/dh * x[d + i]``, zero for every real record (their reserved
features are 0) and for every other canary; only canary i writes there. (Weight decay
would write there too; it is refused by the readers.) Under correct DP-SGD, at step t

    r_t[:, i] = b_t * c_t,i + N(0, sigma^2 C^2 I_h)

where r_t is the step's released change of the block turned back into a noisy gradient
sum (``(W_t - W_{t+1}) / lr`` times the expected batch size), ``b_t`` the number of times
canary i is in the batch (Bernoulli(q) under Poisson sampling, 0 when not included) and
``c_t,i`` its *clipped* gradient restricted to the block. Unlike a Dirac canary, c_t,i is
not ``C e_i``: it depends on the model's prediction on the canary at the iterate W_t (the
direction of ``dL/dh``) and on the share of the canary's gradient that falls in the block
(the rest is on the bias and, for an MLP, deeper layers).

Readings
--------
The auditor knows the canary record and sees the iterate W_t, so it can compute c_t,i
exactly as a correct DP-SGD would (the canary's per-sample gradient at the iterate,
clipped to C over all parameters) *before* the step's noise is drawn
(:func:`expected_contributions`). The reading is the projection of the released block on
that direction, and the expected signal its norm:

    x_t,i = <r_t[:, i], u_t,i>,  u_t,i = c_t,i / |c_t,i|,   s_t,i = |c_t,i| <= C,

so that under correct DP-SGD ``x_t,i = b_t s_t,i + N(0, sigma^2 C^2)`` exactly (u_t,i is
fixed before the noise, so the projected noise is one Gaussian coordinate). This is the
Dirac canary's model with a per-step signal s_t,i <= C instead of C.

Scores, and what the tests assume
---------------------------------
Each score is a function of the released iterates and of the canary records (public to
the auditor): post-processing of the mechanism's output. The one-run bound (Steinke et al.
2023, Theorem 5.2) and the test of the claimed curve (Mahloujifar, Melis & Chaudhuri
2024) therefore hold for *any* of them, under one assumption only: the training is
DP (resp. satisfies the claimed trade-off curve) with respect to adding or removing one
canary record, each canary included independently with probability 1/2 (:func:`draw`).
The model of the readings above (Poisson b_t, the noise scale) is *not* assumed by the
tests; it only decides which score has power:

* :func:`likelihood_ratio`: the Neyman-Pearson log-likelihood ratio of "Poisson at rate q"
  against "absent" given the known signals,
  ``sum_t log(1 - q + q exp((2 x_t s_t - s_t^2) / (2 sigma^2 C^2)))``; most powerful when
  the loader is Poisson and the implementation correct (the claim's own mechanism).
* :func:`epoch_likelihood_ratio`: the same for "exactly once per epoch of k steps" (a
  shuffled loader with fixed-size batches), ``sum_epochs log mean_{t in epoch}
  exp((2 x_t s_t - s_t^2) / (2 sigma^2 C^2))``; it is the statistic that uses what
  shuffling changes (Annamalai, Balle, Hayes & De Cristofaro 2024, "To shuffle or not to
  shuffle: auditing DP-SGD with shuffling"; Chua et al. 2024, "How private are DP-SGD
  implementations?"). Measured: in one run of 2,000 canaries at claimed epsilon 4 and 8 it
  does not tell shuffled from Poisson batches even on the exact mechanism (the gap those
  papers find lies in the tails, seen with many training runs), so it is opt-in.
* :func:`projection_sum`: ``sum_t x_t`` (Nasr et al. 2023's all-iterates statistic on the
  known direction), the model-light baseline.

Scores are "higher means more likely a member".
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from audit.errors import InputError

# Opacus' clipping stabiliser: factor = C / (norm + 1e-6), capped at 1.
CLIP_EPS = 1e-6


def draw(n_canaries: int, *, n_classes: int, seed: int, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(members: bool[m], labels: int64[m]) of a one-run design: each canary included
    independently with probability 1/2, labels uniform over the classes (or all ``label``);
    every choice from ``seed``."""
    rng = np.random.default_rng([seed, 0x5EC0_2D])
    members = rng.random(n_canaries) < 0.5
    if label is None:
        labels = rng.integers(0, n_classes, size=n_canaries)
    else:
        labels = np.full(n_canaries, int(label))
    return members, labels.astype(np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class RecordCanaries:
    """m canary records with one reserved input feature each (see the module docstring).

    Attributes:
      n_features: d, the real records' feature count.
      value: the reserved feature's value in its canary (the block gradient is value * dL/dh).
        Large enough that the canary's gradient is clipped (norm >= C) even when the model
        predicts its label well, and that the block holds nearly all of it; each unit of
        ``value`` also makes the canary's logit more sensitive to the noise on its block.
        16 gave signals of 0.96-0.99 C in ``experiments/pipeline_canaries.py``.
      labels: int64[m], each canary's label.
      members: bool[m], which canaries are inserted into the training set.
      base: float32[d], the canaries' real features (zeros by default).
    """

    n_features: int
    value: float
    labels: np.ndarray
    members: np.ndarray
    base: np.ndarray

    @classmethod
    def make(cls, n_features: int, n_canaries: int, *, n_classes: int, seed: int, value: float = 16.0,
             label: int | None = None, base=None) -> "RecordCanaries":
        """A one-run design of ``n_canaries`` canary records (:func:`draw`)."""
        if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
            raise InputError(f"n_features={n_features!r}: expected an integer >= 1")
        if isinstance(n_canaries, bool) or not isinstance(n_canaries, int) or n_canaries < 2:
            raise InputError(f"canaries={n_canaries!r}: expected an integer >= 2")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise InputError(f"n_classes={n_classes!r}: expected an integer >= 2")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or value == 0:
            raise InputError(f"value={value!r}: expected a finite non-zero number")
        if label is not None and not (isinstance(label, int) and 0 <= label < n_classes):
            raise InputError(f"label={label!r}: expected None or a class in 0..{n_classes - 1}")
        base = np.zeros(n_features, np.float32) if base is None else np.asarray(base, np.float32)
        if base.shape != (n_features,) or not np.isfinite(base).all():
            raise InputError(f"base with shape {base.shape}: expected finite float[{n_features}]")
        members, labels = draw(n_canaries, n_classes=n_classes, seed=seed, label=label)
        return cls(n_features=n_features, value=float(value), labels=labels, members=members, base=base)

    @property
    def n_canaries(self) -> int:
        return int(self.members.size)

    @property
    def width(self) -> int:
        """The model's input width: d real features + m reserved ones."""
        return self.n_features + self.n_canaries

    @property
    def reserved(self) -> slice:
        """The reserved columns of the first layer's weight (and of the input)."""
        return slice(self.n_features, self.width)

    def inputs(self) -> np.ndarray:
        """float32[m, d + m]: every canary record (members and non-members)."""
        x = np.zeros((self.n_canaries, self.width), np.float32)
        x[:, : self.n_features] = self.base
        x[np.arange(self.n_canaries), self.n_features + np.arange(self.n_canaries)] = self.value
        return x

    def pad(self, x) -> np.ndarray:
        """float32[n, d + m]: real records ``x: float[n, d]`` with reserved features 0."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise InputError(f"records with shape {x.shape}: expected float[n, {self.n_features}]")
        return np.concatenate([x, np.zeros((x.shape[0], self.n_canaries), np.float32)], axis=1)

    def training_set(self, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x: float32[n + k, d + m], y: int64[n + k], canary: int64[n + k]) the real records
        padded, followed by the k member canaries; ``canary`` is the canary index of each
        row (-1 for real records)."""
        xp = self.pad(x)
        y = np.asarray(y, np.int64)
        idx = np.flatnonzero(self.members)
        xs = np.concatenate([xp, self.inputs()[idx]], axis=0)
        ys = np.concatenate([y, self.labels[idx]])
        which = np.concatenate([np.full(len(y), -1, np.int64), idx.astype(np.int64)])
        return xs, ys, which


def find_first_layer(model: nn.Module, width: int) -> nn.Parameter:
    """The one 2-d parameter of ``model`` with ``width`` columns (the first affine layer's
    weight); ``InputError`` if there is none or several."""
    found = [p for p in model.parameters() if p.ndim == 2 and p.shape[1] == width]
    if len(found) != 1:
        raise InputError(f"model: {len(found)} parameters of shape [h, {width}]; expected exactly one (the first "
                         "affine layer's weight, input width d + m); pass weight= explicitly")
    return found[0]


def _plain_module(model: nn.Module) -> nn.Module:
    return getattr(model, "_module", model)


def hook_free_copy(model: nn.Module) -> nn.Module:
    """A copy of the model's plain module (an Opacus ``GradSampleModule`` unwrapped) without
    any module hooks, so ``torch.func`` can run it: Opacus' per-sample hooks are not
    functorch-compatible and must not see the audit's forward passes. Its parameters are
    never used (:func:`expected_contributions` passes the live ones)."""
    import copy

    clone = copy.deepcopy(_plain_module(model))
    for sub in clone.modules():
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
            hooks = getattr(sub, name, None)
            if hooks is not None:
                hooks.clear()
        sub.__dict__.pop("activations", None)
    for p in clone.parameters():
        p.__dict__.pop("grad_sample", None)
        p.__dict__.pop("summed_grad", None)
    return clone


def expected_contributions(model: nn.Module, weight: nn.Parameter, canaries: RecordCanaries, *,
                           loss_fn, max_grad_norm: float, shadow: nn.Module | None = None,
                           chunk: int = 256) -> torch.Tensor:
    """float[m, h]: each canary's per-sample gradient at the current parameters, clipped to
    ``max_grad_norm`` over all parameters as Opacus clips (factor ``C / (norm + 1e-6)``,
    at most 1), restricted to its reserved block ``weight[:, d + i]``.

    Computed with ``torch.func`` on a hook-free copy of the model (``shadow``, made by
    :func:`hook_free_copy` if None) called with the model's live parameters: ``.grad`` and
    Opacus' per-sample gradients are never touched."""
    from torch.func import functional_call, grad, vmap

    module = _plain_module(model)
    names = {id(p): n for n, p in module.named_parameters()}
    if id(weight) not in names:
        raise InputError("weight: not a parameter of model")
    shadow = hook_free_copy(model) if shadow is None else shadow
    wname = names[id(weight)]
    bias = _first_bias(module, weight)
    x_all = torch.as_tensor(canaries.inputs(), dtype=weight.dtype, device=weight.device)
    y_all = torch.as_tensor(canaries.labels, device=weight.device)
    cols = torch.arange(canaries.n_canaries, device=weight.device) + canaries.n_features
    out = []
    rest = _after_first_layer(shadow, module, weight) if bias is not None else None
    with torch.enable_grad():
        if rest is not None:
            return _sequential_contributions(module, weight, bias, rest, canaries, x_all, y_all, loss_fn=loss_fn,
                                             max_grad_norm=max_grad_norm, chunk=chunk)
        if bias is None:
            params = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}

            def loss_one(p, x, y):
                return loss_fn(functional_call(shadow, p, (x[None],)), y[None])

            per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
            for start in range(0, canaries.n_canaries, chunk):
                sl = slice(start, start + chunk)
                g = per_sample(params, x_all[sl], y_all[sl])
                sq = sum(v.reshape(v.shape[0], -1).pow(2).sum(1) for v in g.values())
                factor = (max_grad_norm / (sq.sqrt() + CLIP_EPS)).clamp(max=1.0)
                block = g[wname][torch.arange(g[wname].shape[0]), :, cols[sl]]  # [chunk, h]
                out.append((block * factor[:, None]).detach())
        else:
            # h = W x + b: a record's gradient on W is (dL/dh) x^T and on b is dL/dh, so the
            # W part follows from the bias part: |g_W| = |g_b| |x| and g_W[:, j] = g_b x_j.
            # Differentiating every parameter but W avoids an [m, h, d + m] tensor.
            bname = names[id(bias)]
            frozen = {wname: weight.detach()}
            params = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad and n != wname}

            def loss_rest(p, x, y):
                return loss_fn(functional_call(shadow, {**frozen, **p}, (x[None],)), y[None])

            per_sample = vmap(grad(loss_rest), in_dims=(None, 0, 0))
            x_norm = x_all.norm(dim=1)
            own = torch.as_tensor(np.full(canaries.n_canaries, canaries.value), dtype=weight.dtype,
                                  device=weight.device)
            for start in range(0, canaries.n_canaries, chunk):
                sl = slice(start, start + chunk)
                g = per_sample(params, x_all[sl], y_all[sl])
                delta = g[bname]  # [chunk, h]
                sq = sum(v.reshape(v.shape[0], -1).pow(2).sum(1) for v in g.values())
                sq = sq + delta.pow(2).sum(1) * x_norm[sl].pow(2)
                factor = (max_grad_norm / (sq.sqrt() + CLIP_EPS)).clamp(max=1.0)
                out.append((delta * (own[sl] * factor)[:, None]).detach())
    return torch.cat(out, 0)


def _after_first_layer(shadow: nn.Module, module: nn.Module, weight: nn.Parameter) -> nn.Module | None:
    """The (hook-free) rest of the model after its first layer when the model is that
    ``nn.Linear`` alone or an ``nn.Sequential`` that starts with it; None otherwise."""
    if isinstance(module, nn.Linear) and module.weight is weight:
        return nn.Identity()
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], nn.Linear) \
            and module[0].weight is weight:
        return shadow[1:]
    return None


def _sequential_contributions(module, weight, bias, rest, canaries, x_all, y_all, *, loss_fn, max_grad_norm,
                              chunk):
    """The fast path of :func:`expected_contributions` for a model that starts with the
    ``nn.Linear`` (W, b): the first layer's output on canary i is computed directly,
    ``W[:, :d] base + value W[:, d + i] + b`` (a canary's input is sparse), and only the rest
    of the model is differentiated per canary; ``dL/dh`` is the bias gradient, and the
    W part of the norm is ``|dL/dh| |x|``. Same result as the generic path (tested)."""
    from torch.func import functional_call, grad, vmap

    d = canaries.n_features
    w = weight.detach()
    base = torch.as_tensor(canaries.base, dtype=w.dtype, device=w.device)
    h1 = (w[:, :d] @ base + bias.detach())[None, :] + canaries.value * w[:, d:].T  # [m, h]
    live = {} if isinstance(module, nn.Linear) else dict(module[1:].named_parameters())  # names as in rest
    rest_params = {n: p.detach() for n, p in live.items() if p.requires_grad}

    def loss_h(h, p, y):
        return loss_fn(functional_call(rest, p, (h[None],)), y[None])

    per_sample = vmap(grad(loss_h, argnums=(0, 1)), in_dims=(0, None, 0))
    x_norm = x_all.norm(dim=1)
    out = []
    for start in range(0, canaries.n_canaries, chunk):
        sl = slice(start, start + chunk)
        delta, g = per_sample(h1[sl], rest_params, y_all[sl])
        sq = sum((v.reshape(v.shape[0], -1).pow(2).sum(1) for v in g.values()), torch.zeros_like(x_norm[sl]))
        sq = sq + delta.pow(2).sum(1) * (1.0 + x_norm[sl].pow(2))
        factor = (max_grad_norm / (sq.sqrt() + CLIP_EPS)).clamp(max=1.0)
        out.append((delta * (canaries.value * factor)[:, None]).detach())
    return torch.cat(out, 0)


def _first_bias(module: nn.Module, weight: nn.Parameter) -> nn.Parameter | None:
    """The bias of the ``nn.Linear`` whose weight is ``weight`` (None if it has none, or if
    ``weight`` is not an ``nn.Linear``'s: then the generic path differentiates W too)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear) and sub.weight is weight:
            return sub.bias if sub.bias is not None and sub.bias.requires_grad else None
    return None


@dataclasses.dataclass(frozen=True, eq=False)
class RecordReadings:
    """What the audit read from the released iterates, step by step.

    Attributes:
      projections: float64[steps, m], x_t,i (unnormalised scale: a noisy gradient sum).
      signals: float64[steps, m], s_t,i = |c_t,i|, the clipped block norm a correct step
        would add for one presence of canary i.
      off_direction: float64[steps, m], |r_t[:, i] - x_t,i u_t,i|^2, the block's energy
        orthogonal to the expected direction (h - 1 noise coordinates under correct
        DP-SGD; a canary whose gradient is not the expected one shows there).
      members: bool[m].
      max_grad_norm: C.
      block_size: h.
    """

    projections: np.ndarray
    signals: np.ndarray
    off_direction: np.ndarray
    members: np.ndarray
    max_grad_norm: float
    block_size: int

    @property
    def steps(self) -> int:
        return int(self.projections.shape[0])


def read_step(before: torch.Tensor, after: torch.Tensor, expected: torch.Tensor, *, lr: float,
              scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x: float[m], s: float[m], off: float[m]) of one step from the reserved blocks
    ``before, after: [h, m]`` (the iterates around the step) and ``expected: [m, h]``
    (:func:`expected_contributions` at ``before``). The released gradient is inverted for
    plain SGD, ``g = (before - after) / lr``, and brought to the unnormalised scale by
    ``scale`` (the expected batch size under a mean loss)."""
    r = ((before - after).double() / lr * scale).T  # [m, h]
    c = expected.double()
    s = c.norm(dim=1)
    u = torch.where(s[:, None] > 0, c / s.clamp(min=1e-300)[:, None], torch.zeros_like(c))
    x = (r * u).sum(1)
    off = (r - x[:, None] * u).pow(2).sum(1)
    return x.cpu().numpy(), s.cpu().numpy(), off.cpu().numpy()


def _check(readings: RecordReadings, noise_multiplier: float) -> tuple[np.ndarray, np.ndarray, float]:
    sigma = float(noise_multiplier)
    if not sigma > 0 or not np.isfinite(sigma):
        raise InputError(f"noise_multiplier={noise_multiplier!r}: expected a finite number > 0")
    return readings.projections, readings.signals, sigma * readings.max_grad_norm


def _log_ratio(x: np.ndarray, s: np.ndarray, noise_std: float) -> np.ndarray:
    """Per-step log density ratio of "present once" against "absent": (2 x s - s^2) / (2 n^2)."""
    return (2.0 * x * s - s * s) / (2.0 * noise_std * noise_std)


def likelihood_ratio(readings: RecordReadings, *, sample_rate: float, noise_multiplier: float) -> np.ndarray:
    """float[m]: ``sum_t log(1 - q + q exp((2 x_t s_t - s_t^2) / (2 sigma^2 C^2)))``, the
    log-likelihood ratio of "Poisson-sampled at rate q" against "never present" given the
    known per-step signals (:mod:`canaries.iterate_scores` for the Dirac case, s_t = C)."""
    x, s, n = _check(readings, noise_multiplier)
    q = float(sample_rate)
    if not 0.0 < q <= 1.0:
        raise InputError(f"sample_rate={sample_rate!r}: expected a probability in (0, 1]")
    log_absent = np.log1p(-q) if q < 1.0 else -np.inf
    return np.logaddexp(log_absent, np.log(q) + _log_ratio(x, s, n)).sum(axis=0)


def epoch_likelihood_ratio(readings: RecordReadings, *, steps_per_epoch: int, noise_multiplier: float) -> np.ndarray:
    """float[m]: ``sum_e log mean_{t in epoch e} exp((2 x_t s_t - s_t^2) / (2 sigma^2 C^2))``,
    the log-likelihood ratio of "exactly once per epoch of ``steps_per_epoch`` steps, at a
    uniformly random step" (a shuffled loader) against "never present". A last partial
    epoch is averaged over its own steps."""
    x, s, n = _check(readings, noise_multiplier)
    k = int(steps_per_epoch)
    if k < 1:
        raise InputError(f"steps_per_epoch={steps_per_epoch!r}: expected an integer >= 1")
    lr = _log_ratio(x, s, n)
    total = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], k):
        block = lr[start:start + k]
        total += np.logaddexp.reduce(block, axis=0) - np.log(block.shape[0])
    return total


def projection_sum(readings: RecordReadings) -> np.ndarray:
    """float[m]: ``sum_t x_t``, the all-iterates statistic on the expected direction."""
    return readings.projections.sum(axis=0)


STATISTICS = ("likelihood-ratio", "epoch-likelihood-ratio", "projection-sum")


def scores(readings: RecordReadings, name: str, *, sample_rate: float, noise_multiplier: float,
           steps_per_epoch: int | None) -> np.ndarray:
    """The named statistic (:data:`STATISTICS`) of every canary."""
    if name == "likelihood-ratio":
        return likelihood_ratio(readings, sample_rate=sample_rate, noise_multiplier=noise_multiplier)
    if name == "epoch-likelihood-ratio":
        if steps_per_epoch is None:
            raise InputError("epoch-likelihood-ratio: steps_per_epoch is unknown; pass steps_per_epoch=len(loader)")
        return epoch_likelihood_ratio(readings, steps_per_epoch=steps_per_epoch, noise_multiplier=noise_multiplier)
    if name == "projection-sum":
        return projection_sum(readings)
    raise InputError(f"statistic {name!r}: expected one of {', '.join(STATISTICS)}")
