"""Example user plugins for tests of trainers.plugins (both contracts) and deliberate misfits."""

import numpy as np
import torch
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _generate_noise, _mark_as_processed

CLAIMED_EPSILON = 8.0
CLAIMED_DELTA = 1e-5


class ScaledNoiseOptimizer(DPOptimizer):
    """White-box plugin: DP-SGD whose noise std is ``noise_scale * sigma * C``."""

    def __init__(self, *args, noise_scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.noise_scale = noise_scale
        self.steps_seen = 0

    def add_noise(self):
        self.steps_seen += 1
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            noise = _generate_noise(std=self.noise_scale * self.noise_multiplier * self.max_grad_norm,
                                    reference=p.summed_grad, generator=self.generator)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)


def train(x, y, *, seed):
    """Black-box plugin: softmax regression by 50 steps of full-batch gradient descent."""
    rng = np.random.default_rng(seed)
    x = x.reshape(len(x), -1).astype(np.float64)
    k = int(y.max()) + 1
    w = rng.normal(scale=0.01, size=(x.shape[1], k))
    onehot = np.eye(k)[y]

    def predict_proba(q):
        z = q.reshape(len(q), -1) @ w
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    for _ in range(50):
        w -= 0.5 * x.T @ (predict_proba(x) - onehot) / len(x)
    return predict_proba


class _SklearnStyle:
    def __init__(self, k):
        self.k = k

    def predict_proba(self, x):
        return np.full((len(x), self.k), 1.0 / self.k)


def train_uniform(x, y, *, seed):
    """Black-box plugin returning an object with ``predict_proba`` (uniform predictions)."""
    return _SklearnStyle(int(y.max()) + 1)


def train_bad_output(x, y, *, seed):
    """Misfit: returns scores that are not probabilities."""
    return lambda q: np.ones((len(q), 2))


def train_no_seed(x, y):
    """Misfit: no ``seed`` keyword."""
    return None


NotAnOptimizer = torch.optim.SGD


class RigidOptimizer(DPOptimizer):
    """Misfit: a DPOptimizer subclass whose constructor drops Opacus' arguments."""

    def __init__(self, optimizer):
        super().__init__(optimizer, noise_multiplier=0.0, max_grad_norm=1.0, expected_batch_size=1)
