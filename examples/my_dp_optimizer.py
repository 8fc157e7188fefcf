"""Your own DP optimizer, audited white-box (``examples/whitebox_plugin.toml``).

A white-box plugin is a subclass of Opacus' ``DPOptimizer`` that keeps its contract: it
reads each parameter's per-sample gradients ``p.grad_sample``, clips them, sums them into
``p.summed_grad``, adds Gaussian noise of std ``noise_multiplier * max_grad_norm`` and
steps. dpaudit wraps the class so that Dirac gradient canaries enter the per-sample
gradients before your clipping, and reads them back after your noise.

``MyDPOptimizer`` is Opacus' own algorithm, standing in for yours. ``ForgetsToClip`` is a
planted bug (``make demo`` audits it): it sums the per-sample gradients without clipping
them, while its accountant still claims the clipped algorithm's epsilon.
"""

from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed


class MyDPOptimizer(DPOptimizer):
    """Correct DP-SGD: Opacus' clipping and noise, unchanged."""


class ForgetsToClip(DPOptimizer):
    """Planted bug: per-sample gradients are summed unclipped (sensitivity unbounded)."""

    def clip_and_accumulate(self) -> None:
        for p in self.params:
            _check_processed_flag(p.grad_sample)
            grad = p.grad_sample.sum(dim=0)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)
