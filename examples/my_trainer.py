"""Your own training function, audited black-box (``examples/blackbox_plugin.toml``).

A black-box plugin is a function ``train(x, y, *, seed)``: ``x`` float32[records, ...],
``y`` int64[records] (class indices), ``seed`` an int that must drive every random choice
of the training. It returns the trained model as a ``predict_proba`` callable, or an
object with a ``predict_proba(x) -> float[records, classes]`` method (scikit-learn's
convention). dpaudit calls it once per model (K models, each on its own half of the
canaries) and attacks the probabilities it returns.

A DP trainer states its claim as module constants, which the audit then tests::

    CLAIMED_EPSILON = 2.0
    CLAIMED_DELTA = 1e-5

A trainer without DP says so with an infinite claim, as this one (scikit-learn's
multi-layer perceptron) does: the audit then reports what the attacks learn (a non-DP
audit). A module that states no claim at all is refused, so a claim is never dropped.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

CLAIMED_EPSILON = float("inf")  # no DP
CLAIMED_DELTA = 0.0


def train(x: np.ndarray, y: np.ndarray, *, seed: int):
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=seed)
    with warnings.catch_warnings():  # 200 epochs on purpose: the stopping point is part of the setting
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x.reshape(len(x), -1), y)
