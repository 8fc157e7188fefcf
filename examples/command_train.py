"""A training script audited as a command (``examples/command_target.toml``).

dpaudit runs it once per model as

    python3 command_train.py TRAIN.npz QUERY.npz OUT.npy SEED

in a fresh temporary working directory. ``TRAIN.npz`` holds ``x`` (float32[records,
features]) and ``y`` (int64[records], class indices): the model's training set.
``QUERY.npz`` holds ``x`` (float32[queries, features]): the points to predict, which must
never be trained on. The script writes ``OUT.npy``: the predicted probabilities
float[queries, classes], one row per query, each summing to 1. ``SEED`` (also
``$DPAUDIT_SEED``) should drive every random choice of the training.

Nothing here is specific to Python: any program that reads the two ``.npz`` files and
writes the ``.npy`` (or CSV text: one row per query, comma-separated) can be audited the
same way. This one trains scikit-learn's multi-layer perceptron without DP, as
``examples/my_trainer.py`` does through the plugin interface.
"""

import sys
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier


def main(train_path: str, query_path: str, out_path: str, seed: str) -> None:
    with np.load(train_path) as train, np.load(query_path) as query:
        x, y, q = train["x"], train["y"], query["x"]
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=int(seed))
    with warnings.catch_warnings():  # 200 epochs on purpose: the stopping point is part of the setting
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x.reshape(len(x), -1), y)
    # One column per class of y; every model here sees every class.
    np.save(out_path, model.predict_proba(q.reshape(len(q), -1)))


if __name__ == "__main__":
    main(*sys.argv[1:])
