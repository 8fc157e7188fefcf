"""DP-SGD for K MLPs at once: Poisson batches, exact per-example clipping via
per-sample norms of Linear layers (:mod:`trainers.fast.norms`), Gaussian noise, SGD.

The correct step (``StepSpec()``) is Opacus' ``DPOptimizer`` step with
``loss_reduction="mean"`` (Abadi et al. 2016, Algorithm 1):

    g_i   = grad of the cross-entropy of example i           (per example, unreduced)
    c_i   = min(1, C / (||g_i|| + 1e-6))                      (opacus/optimizers/optimizer.py)
    g~    = (sum_i c_i g_i + N(0, sigma^2 C^2 I)) / expected_batch_size
    theta = torch.optim.SGD step with gradient g~ (weight decay, momentum as torch)

Noise for model ``k`` is drawn from its own generator, parameter by parameter in
``W_1, b_1, W_2, ...`` order, exactly as Opacus draws it, so with the same batches and
a noise generator in the same state the fast step reproduces Opacus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from audit.errors import InputError
from trainers.fast.batch import RaggedBatch, Workspace
from trainers.fast.ensemble import MLPShape, StackedMLP
from trainers.fast.hooks import GradientRows, StepHooks
from trainers.fast.norms import per_sample_sq_norms, weighted_grad_sum
from trainers.fast.sampling import Subsets, draw_ragged, empty_uniforms
from trainers.fast.shares import ShareRunner, share_slices
from trainers.fast.spec import CORRECT, StepSpec

CLIP_EPS = 1e-6
"""Added to the per-sample norm in the clip factor, as in Opacus ``clip_and_accumulate``."""


@dataclass(frozen=True)
class DPSGDConfig:
    """Hyperparameters of (DP-)SGD; ``spec`` says which step (correct or faulty)."""

    lr: float
    max_grad_norm: float
    noise_multiplier: float
    expected_batch_size: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    spec: StepSpec = field(default=CORRECT)

    def __post_init__(self) -> None:
        checks = (
            ("lr", self.lr > 0, "a number > 0"),
            ("max_grad_norm", self.max_grad_norm > 0, "a number > 0"),
            ("noise_multiplier", self.noise_multiplier >= 0, "a number >= 0"),
            ("expected_batch_size", int(self.expected_batch_size) == self.expected_batch_size and self.expected_batch_size >= 1, "an integer >= 1"),
            ("momentum", 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise InputError(f"{name}={getattr(self, name)!r}: expected {expected}")
        if not isinstance(self.spec, StepSpec):
            raise InputError(f"spec={self.spec!r}: expected a StepSpec")

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to the summed gradient."""
        if not self.spec.add_noise:
            return 0.0
        scale = self.max_grad_norm if self.spec.noise_std == "sigma_c" else 1.0
        if self.spec.noise_over_batch:
            scale /= self.expected_batch_size
        return self.noise_multiplier * scale * self.spec.noise_factor


@dataclass(frozen=True)
class StepOutput:
    """What one step reports.

    Attributes:
        batch_sizes: ``long[K]``: examples per model, extra gradient rows included.
        losses: ``float[K]``: mean cross-entropy of the real examples (nan if none),
            before the update.
        watched: ``float[K, J]``: privatised gradient at ``hooks.watch``, or None.
    """

    batch_sizes: torch.Tensor
    losses: torch.Tensor
    watched: Optional[torch.Tensor]


@dataclass(frozen=True)
class _ModelViews:
    """Per-model views of a :class:`StackedMLP`'s parameters, made once: ``w[l][k]``,
    its transpose ``wt[l][k]`` and ``b[l][k]`` (updates are in place, so they stay valid;
    unbinding and transposing afresh at every step costs more than a small matmul)."""

    w: list[tuple[torch.Tensor, ...]]
    wt: list[list[torch.Tensor]]
    b: list[tuple[torch.Tensor, ...]]
    params: tuple[torch.Tensor, ...]  # the stacked tensors viewed

    @classmethod
    def of(cls, model: StackedMLP) -> "_ModelViews":
        w = [t.unbind(0) for t in model.weights]
        return cls(w=w, wt=[[wk.t() for wk in layer] for layer in w], b=[t.unbind(0) for t in model.biases],
                   params=tuple(model.weights + model.biases))

    def views_of(self, model: StackedMLP) -> bool:
        """Whether these are views of ``model``'s current parameter tensors."""
        return len(self.params) == 2 * len(model.weights) and all(
            a is b for a, b in zip(self.params, model.weights + model.biases))


def _forward_backward(model: StackedMLP, batch: RaggedBatch, workspace: Optional[Workspace] = None,
                      views: Optional[_ModelViews] = None):
    """Layer inputs ``[float[N, in_l]]``, per-sample output gradients of the (unreduced)
    cross-entropy ``[float[N, out_l]]`` and per-example losses ``float[N]``, model ``k``
    on its own rows of the ragged ``batch`` (one ``mm`` per model and layer). The
    activations live in ``workspace`` (valid until its next use) when given; ``views``
    are ``model``'s (made here when not given)."""
    views = views if views is not None else _ModelViews.of(model)
    counts = list(batch.counts)
    n, layers = len(batch.x), len(model.weights)
    take = workspace.take if workspace is not None else (lambda name, rows, cols: batch.x.new_empty(rows, cols))
    inputs = [batch.x]
    z = None
    for l in range(layers):
        z = take(f"z{l}", n, model.weights[l].shape[1])
        for ak, zk, wt, bk in zip(inputs[-1].split(counts), z.split(counts), views.wt[l], views.b[l]):
            torch.addmm(bk, ak, wt, out=zk)
        if l + 1 < layers:
            inputs.append(torch.relu_(z))  # in place: the pre-activation is not needed again
    logp = torch.log_softmax(z, dim=-1)
    y = batch.y.unsqueeze(-1)
    losses = -logp.gather(-1, y).squeeze(-1)
    # d CE / d logits = softmax - onehot
    g = logp.exp_()
    g.scatter_add_(-1, y, torch.full_like(losses, -1.0).unsqueeze(-1))
    grads = [g]
    for l in range(layers - 1, 0, -1):
        back = take(f"g{l}", n, model.weights[l].shape[2])
        for gk, bk, wk in zip(g.split(counts), back.split(counts), views.w[l]):
            torch.mm(gk, wk, out=bk)
        # relu backward: zero where the relu output is 0 (written over the input gradient)
        g = torch.ops.aten.threshold_backward.grad_input(back, inputs[l], 0, grad_input=back)
        grads.append(g)
    grads.reverse()
    return inputs, grads, losses


def _mean_losses(batch: RaggedBatch, losses: torch.Tensor) -> torch.Tensor:
    """``float[K]``: each model's mean loss over its examples (nan if it has none)."""
    return batch.per_model_sum(losses) / batch.sizes.to(losses.dtype)


def _split_flat(shape: MLPShape, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    k = flat.shape[0]
    ws, bs = [], []
    for (o, i), (w0, b0) in zip(shape.layer_shapes, shape.flat_offsets()):
        ws.append(flat[:, w0:b0].reshape(k, o, i))
        bs.append(flat[:, b0 : b0 + o])
    return ws, bs


def _flat(ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor]) -> torch.Tensor:
    k = ws[0].shape[0]
    return torch.cat([t for w, b in zip(ws, bs) for t in (w.reshape(k, -1), b)], dim=1)


class FastDPSGD:
    """Steps K stacked MLPs with (DP-)SGD; holds the parameters and optimiser state.

    ``step`` is the unit to compare with Opacus: it takes the batches (and optionally
    the standard-normal noise) explicitly; :func:`train` draws them.
    """

    def __init__(
        self, model: StackedMLP, config: DPSGDConfig, hooks: StepHooks = StepHooks(), *, noise_threads: int = 1
    ):
        """``noise_threads``: Python threads drawing the models' noise (each model's
        values depend only on its generator, not on this). More than 1 pays off only
        when idle OpenMP workers yield their cores (``OMP_WAIT_POLICY=PASSIVE``)."""
        if int(noise_threads) != noise_threads or noise_threads < 1:
            raise InputError(f"noise_threads={noise_threads!r}: expected an integer >= 1")
        self.noise_threads = int(noise_threads)
        self.model = model
        self.config = config
        self.hooks = hooks
        self.steps_done = 0
        self._momentum: Optional[list[torch.Tensor]] = None
        self._fixed_noise: Optional[tuple[list[torch.Tensor], list[torch.Tensor]]] = None
        self._noise_buffer: Optional[tuple[list[torch.Tensor], list[torch.Tensor]]] = None
        self._noise_runner: Optional[ShareRunner] = None
        self._workspace: Optional[Workspace] = None  # the direct update's activations
        self._views: Optional[_ModelViews] = None  # per-model parameter views (_current_views)
        if hooks.watch is not None:
            watch = hooks.watch
            if watch.dim() != 1 or watch.dtype != torch.long or (watch.numel() and (watch.min() < 0 or watch.max() >= model.shape.n_params)):
                raise InputError(
                    f"hooks.watch={watch!r}: expected long[J] flat coordinates in [0, {model.shape.n_params})"
                )

    def draw_noise(
        self,
        generators: Sequence[torch.Generator],
        out: Optional[tuple[list[torch.Tensor], list[torch.Tensor]]] = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Standard-normal noise ``([float[K, out, in]], [float[K, out]])``; model ``k``
        from ``generators[k]``, parameter by parameter (``W_1, b_1, W_2, ...``), each
        drawn as ``torch.normal`` over that parameter's shape draws it (Opacus
        ``_generate_noise``)."""
        if len(generators) != self.model.n_models:
            raise InputError(f"got {len(generators)} noise generators: expected one per model ({self.model.n_models})")
        zw, zb = out if out is not None else ([torch.empty_like(w) for w in self.model.weights], [torch.empty_like(b) for b in self.model.biases])

        def draw(models: range) -> None:
            for k in models:
                for w, b in zip(zw, zb):
                    w[k].normal_(0.0, 1.0, generator=generators[k])
                    b[k].normal_(0.0, 1.0, generator=generators[k])

        n = min(self.noise_threads, len(generators))
        if n == 1:
            draw(range(len(generators)))
        else:
            # each generator draws serially; torch releases the GIL while drawing. The
            # calling thread draws one share itself; a pool kept across steps the rest.
            if self._noise_runner is None:
                self._noise_runner = ShareRunner(self.noise_threads, "fast-dpsgd-noise")
            self._noise_runner([lambda i=i: draw(range(i, len(generators), n)) for i in range(n)])
        return zw, zb

    def clipped_sum(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, rows: Optional[GradientRows] = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Summed (clipped, per ``spec.clipping``) gradients before noise.

        Args:
            x: ``float[K, B, d]``; y: ``long[K, B]``; mask: ``bool[K, B]``.
            rows: extra per-sample gradient rows (canaries), or None.
        Returns:
            ``(dW_l: float[K, out, in], db_l: float[K, out], batch_sizes: long[K],
            losses: float[K])``.
        """
        batch = self._ragged(x, y, mask)
        sizes = self._batch_sizes(batch, rows)
        gw, gb, losses = self._summed(batch, rows, scale=None)
        return gw, gb, sizes, losses

    def _ragged(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> RaggedBatch:
        k = self.model.n_models
        if x.dim() != 3 or x.shape[0] != k or y.shape != x.shape[:2] or mask.shape != x.shape[:2]:
            raise InputError(
                f"x {tuple(x.shape)}, y {tuple(y.shape)}, mask {tuple(mask.shape)}: "
                f"expected float[{k}, B, d], long[{k}, B], bool[{k}, B]"
            )
        return RaggedBatch.from_padded(x, y, mask)

    def _clip_weights(self, inputs, grads, x_sq: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """``float[N]``: ``min(1, C / (||g_i|| + 1e-6))`` under per-example clipping, else
        None (every weight 1). ``x_sq``: the inputs' squared row norms, when known."""
        if self.config.spec.clipping != "per_example":
            return None
        norms = per_sample_sq_norms(inputs, grads, x_sq).sqrt_()
        return (self.config.max_grad_norm / (norms + CLIP_EPS)).clamp_(max=1.0)

    def _batch_sizes(self, batch: RaggedBatch, rows: Optional[GradientRows]) -> torch.Tensor:
        sizes = batch.sizes
        if rows is not None and rows.model.numel():
            rows.validate(self.model.n_models, self.model.shape.n_params)
            sizes = sizes + torch.bincount(rows.model, minlength=self.model.n_models)
        return sizes

    def _current_views(self) -> _ModelViews:
        """Per-model views of the parameters, kept across steps (rebuilt when ``model``
        was replaced)."""
        if self._views is None or not self._views.views_of(self.model):
            self._views = _ModelViews.of(self.model)
        return self._views

    def _summed(self, batch: RaggedBatch, rows, scale: Optional[torch.Tensor]):
        """Clipped sum, times ``scale: float[K]`` per model when given (the
        normalisation folded into the clip weights: one pass fewer over the gradient).
        Per-batch clipping is applied here only when ``scale`` is None."""
        spec, c_max = self.config.spec, self.config.max_grad_norm
        dtype = batch.x.dtype
        inputs, grads, losses = _forward_backward(self.model, batch, views=self._current_views())
        weights = self._clip_weights(inputs, grads, batch.x_sq)
        if weights is None:
            weights = torch.ones(len(batch.x), dtype=dtype)
        if scale is not None:
            weights = weights * scale.repeat_interleave(batch.sizes)
        gw, gb = weighted_grad_sum(inputs, grads, weights, batch.counts)
        if rows is not None and rows.model.numel():
            values = rows.values.to(dtype)
            if spec.clipping == "per_example":
                values = values * (c_max / (values.norm(dim=1, keepdim=True) + CLIP_EPS)).clamp_(max=1.0)
            if scale is not None:
                values = values * scale[rows.model].unsqueeze(1)
            flat = _flat(gw, gb)
            flat.index_put_((rows.model.unsqueeze(1).expand_as(rows.coords), rows.coords), values, accumulate=True)
            gw, gb = _split_flat(self.model.shape, flat)
        if spec.clipping == "per_batch" and scale is None:
            total = sum(torch.linalg.vecdot(w.flatten(1), w.flatten(1)) for w in gw) + sum(torch.linalg.vecdot(b, b) for b in gb)
            factor = (c_max / (total.sqrt() + CLIP_EPS)).clamp_(max=1.0)
            gw = [w * factor.view(-1, 1, 1) for w in gw]
            gb = [b * factor.view(-1, 1) for b in gb]
        return gw, gb, _mean_losses(batch, losses)

    def step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        *,
        noise_generators: Optional[Sequence[torch.Generator]] = None,
        noise: Optional[tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]] = None,
    ) -> StepOutput:
        """One step on given batches; updates ``self.model`` in place.

        Args:
            x: ``float[K, B, d]``; y: ``long[K, B]``; mask: ``bool[K, B]`` (padding
                False; padded rows are ignored).
            noise_generators: one per model; used when noise is needed and not given.
            noise: standard-normal ``([float[K, out, in]], [float[K, out]])``, scaled
                here by the configured std; overrides the generators.
        """
        return self.step_batch(self._ragged(x, y, mask), noise_generators=noise_generators, noise=noise)

    def step_batch(
        self,
        batch: RaggedBatch,
        *,
        noise_generators: Optional[Sequence[torch.Generator]] = None,
        noise: Optional[tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]] = None,
    ) -> StepOutput:
        """:meth:`step` on a ragged batch (the K models' examples one model after another)."""
        cfg, spec = self.config, self.config.spec
        k = self.model.n_models
        if batch.n_models != k or batch.x.shape[1] != self.model.shape.widths[0]:
            raise InputError(
                f"batch of {batch.n_models} models with {batch.x.shape[1]} features: "
                f"expected {k} models with {self.model.shape.widths[0]}"
            )
        rows = self.hooks.extra_rows(self.steps_done) if self.hooks.extra_rows is not None else None
        sizes = self._batch_sizes(batch, rows)
        dtype = batch.x.dtype
        if spec.normalise == "expected":
            denom = torch.full((k,), float(cfg.expected_batch_size), dtype=dtype)
        else:
            denom = sizes.clamp(min=1).to(dtype)
        std = cfg.noise_std
        z = self._standard_noise(noise, noise_generators) if std > 0 else None

        has_rows = rows is not None and rows.model.numel() > 0
        if not (cfg.momentum or cfg.weight_decay or has_rows or self.hooks.watch is not None or spec.clipping == "per_batch"):
            losses = self._direct_update(batch, denom, z, std)
            self.steps_done += 1
            return StepOutput(batch_sizes=sizes, losses=losses, watched=None)

        if spec.clipping == "per_batch":
            # the batch clip needs the unnormalised sum
            gw, gb, losses = self._summed(batch, rows, scale=None)
            gw = [w.div_(denom.view(-1, 1, 1)) for w in gw]
            gb = [b.div_(denom.view(-1, 1)) for b in gb]
        else:
            gw, gb, losses = self._summed(batch, rows, scale=1.0 / denom)
        if z is not None:
            s_k = std / denom
            gw = [w.addcmul_(zz, s_k.view(-1, 1, 1)) for w, zz in zip(gw, z[0])]
            gb = [b.addcmul_(zz, s_k.view(-1, 1)) for b, zz in zip(gb, z[1])]
        watched = _flat(gw, gb)[:, self.hooks.watch] if self.hooks.watch is not None else None
        self._sgd_update(gw + gb)
        self.steps_done += 1
        return StepOutput(batch_sizes=sizes, losses=losses, watched=watched)

    def _standard_noise(self, noise, generators):
        """This step's standard-normal noise: explicit, reused, or freshly drawn."""
        if noise is not None:
            zw, zb = noise
            shapes = [tuple(t.shape) for t in self.model.weights], [tuple(t.shape) for t in self.model.biases]
            if ([tuple(t.shape) for t in zw], [tuple(t.shape) for t in zb]) != shapes:
                raise InputError(
                    f"noise shapes {[tuple(t.shape) for t in zw]}, {[tuple(t.shape) for t in zb]}: "
                    f"expected the parameters' shapes {shapes[0]}, {shapes[1]}"
                )
            z = (list(zw), list(zb))
        elif self.config.spec.reuse_noise and self._fixed_noise is not None:
            z = self._fixed_noise
        else:
            if generators is None:
                raise InputError("noise_generators=None: expected one generator per model (or explicit noise)")
            if self.config.spec.reuse_noise:
                z = self.draw_noise(generators)
            else:
                # drawn into one reused buffer: no fresh 4 * K * n_params bytes each step
                self._noise_buffer = self.draw_noise(generators, out=self._noise_buffer)
                z = self._noise_buffer
        if self.config.spec.reuse_noise and self._fixed_noise is None:
            self._fixed_noise = z
        return z

    def _direct_update(self, batch: RaggedBatch, denom, z, std) -> torch.Tensor:
        """Plain SGD without momentum, weight decay, hooks or per-batch clipping,
        written straight into the parameters: ``theta -= lr * std / denom * z`` and
        ``W_k -= lr / denom_k * (c * G_k)^T A_k`` as one in-place ``addmm_`` per model and
        layer (``lr / denom_k`` its scale), so the gradient is never materialised. Same
        arithmetic as the general path up to float rounding. Returns the mean losses
        ``float[K]``."""
        cfg = self.config
        if self._workspace is None or self._workspace.dtype != batch.x.dtype:
            self._workspace = Workspace(batch.x.dtype)
        views = self._current_views()
        inputs, grads, losses = _forward_backward(self.model, batch, self._workspace, views)
        clip = self._clip_weights(inputs, grads, batch.x_sq)
        if z is not None:
            s_k = (-cfg.lr * std) / denom
            for p, zz in zip(self.model.weights + self.model.biases, z[0] + z[1]):
                p.addcmul_(zz, s_k.view((-1,) + (1,) * (p.dim() - 1)))
        if clip is not None:
            rows = clip.unsqueeze(-1)
            for g in grads:
                g.mul_(rows)  # in place: the gradient is not needed again
        scales = (cfg.lr / denom).tolist()
        counts = list(batch.counts)
        for w, b, a, g in zip(views.w, views.b, inputs, grads):
            # the transposed gradients split along their columns: no t() per model
            for wk, bk, ak, gk, gkt, s_k in zip(w, b, a.split(counts), g.split(counts), g.t().split(counts, dim=1), scales):
                wk.addmm_(gkt, ak, alpha=-s_k)
                bk.sub_(gk.sum(0), alpha=s_k)
        return _mean_losses(batch, losses)

    def _sgd_update(self, grads: list[torch.Tensor]) -> None:
        """``torch.optim.SGD`` (dampening 0, no Nesterov) on weights then biases."""
        cfg = self.config
        params = self.model.weights + self.model.biases
        if cfg.weight_decay:
            grads = [g.add_(p, alpha=cfg.weight_decay) for g, p in zip(grads, params)]
        if cfg.momentum:
            if self._momentum is None:
                self._momentum = [g.clone() for g in grads]
            else:
                for buf, g in zip(self._momentum, grads):
                    buf.mul_(cfg.momentum).add_(g)
            grads = self._momentum
        for p, g in zip(params, grads):
            p.add_(g, alpha=-cfg.lr)


@dataclass(frozen=True)
class TrainResult:
    """A finished run.

    Attributes:
        model: the K trained models.
        batch_sizes: ``long[steps, K]``.
        losses: ``float[steps, K]`` mean batch loss before each step.
        watched: ``float[steps, K, J]`` privatised gradients at ``hooks.watch``, or None.
    """

    model: StackedMLP
    batch_sizes: torch.Tensor
    losses: torch.Tensor
    watched: Optional[torch.Tensor]


def spawn_generators(generator: torch.Generator, n_models: int) -> list[torch.Generator]:
    """One independent generator per model, seeded from the run's ``generator``."""
    seeds = torch.randint(0, 2**62, (n_models,), generator=generator).tolist()
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def steps_for_epochs(epochs: float, expected_batch_size: int, subset_size: int) -> int:
    """Steps of ``epochs`` passes at rate ``q = expected_batch_size / subset_size``
    (``epochs / q``, rounded up), as Opacus runs ``len(data_loader)`` steps an epoch."""
    if epochs <= 0:
        raise InputError(f"epochs={epochs!r}: expected a number > 0")
    return math.ceil(epochs * subset_size / expected_batch_size)


def train(
    x: torch.Tensor,
    y: torch.Tensor,
    keep: torch.Tensor,
    shape: MLPShape,
    config: DPSGDConfig,
    *,
    steps: int,
    generator: torch.Generator | Sequence[torch.Generator],
    hooks: StepHooks = StepHooks(),
    noise_threads: int = 1,
    workers: int = 1,
) -> TrainResult:
    """Train K models, model ``k`` on records ``keep[k]``, for ``steps`` steps.

    Args:
        x: ``float[n, d]`` features (the dtype of the models).
        y: ``long[n]`` labels in ``[0, c)``.
        keep: ``bool[K, n]``.
        shape: widths ``(d, ..., c)``.
        config: hyperparameters and step spec.
        steps: number of steps (see :func:`steps_for_epochs`).
        generator: the run's generator (one per model is spawned from it), or K
            generators. Model ``k`` uses only generator ``k`` (initialisation, then per
            step its Poisson draw and its noise), so it equals model 0 of a K = 1 run
            given that generator.
        hooks: canary hooks (they see all K models: with hooks the models step as one
            share, whatever ``workers`` says).
        noise_threads: see :class:`FastDPSGD`; the result does not depend on it.
        workers: Python threads, each training a contiguous share of the models from
            start to end (its own Poisson draws, gather, steps and noise; torch releases
            the GIL in each operation). A model's arithmetic reads only its own rows of
            each batch (:class:`~trainers.fast.batch.RaggedBatch`), so the result does
            not depend on ``workers``, nor model ``k``'s on the other models (bit-identical
            at one torch thread, tested). Pays off with torch on one thread per worker
            (``torch.set_num_threads(1)``), one worker per core.
    """
    if x.dim() != 2 or x.shape[1] != shape.widths[0] or not x.is_floating_point():
        raise InputError(f"x has shape {tuple(x.shape)} and dtype {x.dtype}: expected float[n, {shape.widths[0]}]")
    n = x.shape[0]
    if y.shape != (n,) or y.dtype != torch.long or (n and (y.min() < 0 or y.max() >= shape.widths[-1])):
        raise InputError(f"y has shape {tuple(y.shape)} and dtype {y.dtype}: expected long[{n}] in [0, {shape.widths[-1]})")
    if keep.dim() != 2 or keep.shape[1] != n:
        raise InputError(f"keep has shape {tuple(keep.shape)}: expected bool[models, {n}]")
    if int(steps) != steps or steps < 0:
        raise InputError(f"steps={steps!r}: expected an integer >= 0")
    if int(workers) != workers or workers < 1:
        raise InputError(f"workers={workers!r}: expected an integer >= 1")
    n_models = keep.shape[0]
    gens = spawn_generators(generator, n_models) if isinstance(generator, torch.Generator) else list(generator)
    if len(gens) != n_models:
        raise InputError(f"got {len(gens)} generators: expected one per model ({n_models})")
    if hooks.extra_rows is not None or hooks.watch is not None:
        workers = 1
    # the records' squared norms, for per-example clipping: once, not once per step or share
    x_sq = torch.linalg.vector_norm(x, dim=-1).square_() if config.spec.clipping == "per_example" else None
    shares = [_Share(x, y, x_sq, keep[p], shape, config, gens[p], hooks, noise_threads)
              for p in share_slices(n_models, workers)]
    # no step waits for another share: each runs all its steps on its own
    with ShareRunner(len(shares), "fast-train") as run:
        runs = run([lambda share=share: share.train(int(steps)) for share in shares])
    models = [share.trainer.model for share in shares]
    model = models[0] if len(models) == 1 else StackedMLP(
        shape, [torch.cat(ws) for ws in zip(*(m.weights for m in models))],
        [torch.cat(bs) for bs in zip(*(m.biases for m in models))])
    if steps == 0:
        empty_k = torch.zeros(0, n_models)
        return TrainResult(model=model, batch_sizes=empty_k.long(), losses=empty_k, watched=None)
    watched = runs[0][2]  # hooks: one share
    return TrainResult(
        model=model,
        batch_sizes=torch.cat([r[0] for r in runs], dim=1),
        losses=torch.cat([r[1] for r in runs], dim=1),
        watched=torch.stack(watched) if watched else None,
    )


class _Share:
    """The models a worker of :func:`train` steps: their subsets, generators and trainer."""

    def __init__(self, x, y, x_sq, keep, shape, config, generators, hooks, noise_threads):
        self.x, self.y, self.x_sq, self.generators = x, y, x_sq, generators
        self.subsets = Subsets.from_keep(keep)
        self.rates = self.subsets.sample_rates(config.expected_batch_size)
        self.trainer = FastDPSGD(StackedMLP.init(shape, generators, dtype=x.dtype), config, hooks,
                                 noise_threads=noise_threads)
        self.buffer = torch.empty(0, x.shape[1], dtype=x.dtype)  # the gathered batch, kept across steps
        self.uniforms = empty_uniforms(self.subsets)  # the Poisson draws' uniforms, likewise

    def step(self) -> StepOutput:
        """One step on fresh Poisson batches of the share's models."""
        index, counts = draw_ragged(self.subsets, self.rates, self.generators, self.uniforms)
        if len(index) > len(self.buffer):  # gathered into a kept buffer: no fresh N x d allocation each step
            self.buffer = torch.empty(int(len(index) * 1.25), self.x.shape[1], dtype=self.x.dtype)
        batch = RaggedBatch.gather(self.x, self.y, index, counts, self.buffer, self.x_sq)
        return self.trainer.step_batch(batch, noise_generators=self.generators)

    def train(self, steps: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``steps`` steps: batch sizes and losses ``[steps, models]``, watched gradients."""
        outs = [self.step() for _ in range(steps)]
        if not outs:
            return torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0), []
        watched = [o.watched for o in outs] if outs[0].watched is not None else []
        return torch.stack([o.batch_sizes for o in outs]), torch.stack([o.losses for o in outs]), watched
