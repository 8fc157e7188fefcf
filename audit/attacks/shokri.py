"""Shadow-model attack with a learned meta-classifier: Shokri et al. (2017),
"Membership inference attacks against machine learning models" (shadow training and per-class attack models).

One attack classifier per class: features are the model's prediction vector sorted in
decreasing order (so the classifier sees confidence shape, not class identity), here
as log-probabilities averaged over queries; training examples are every shadow's
outputs on records of that class, labelled with the shadow's keep bit. The score of a
target record is the classifier's predicted probability of IN for that record's class
(scikit-learn, seeded by ``seed``). The paper's attack models are neural networks;
``classifier="mlp"`` gives that, ``"logistic"`` (default) is faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.attacks._common import check_target, log_probs, require_in_out, require_logits
from audit.attacks.registry import register
from audit.errors import InputError
from audit.observations import Observations

_CLASSIFIERS = ("logistic", "mlp", "gbdt")


def sorted_prediction_features(logits: np.ndarray) -> np.ndarray:
    """float[..., records, queries, classes] -> float64[..., records, classes].

    Mean over queries of the softmax probabilities, sorted decreasing, in log space
    (clipped at log 1e-300).
    """
    p = np.exp(log_probs(logits)).mean(axis=-2)
    return np.log(np.clip(-np.sort(-p, axis=-1), 1e-300, None))


def _make_classifier(kind: str, seed: int):
    from sklearn.preprocessing import StandardScaler
    from sklearn.pipeline import make_pipeline

    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000, random_state=seed)
    elif kind == "mlp":
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=seed)
    else:
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    return make_pipeline(StandardScaler(), model)


@register("shokri")
@dataclass(frozen=True)
class ShokriAttack:
    """Per-class meta-classifier on sorted prediction vectors of IN/OUT shadow outputs."""

    seed: int = 0
    classifier: str = "logistic"
    name: str = "shokri"

    def __post_init__(self) -> None:
        if self.classifier not in _CLASSIFIERS:
            raise InputError(f"shokri: classifier {self.classifier!r}; expected one of {_CLASSIFIERS}")

    def score(self, observations: Observations, target: int) -> np.ndarray:
        shadows = check_target(observations, target, method=self.name)
        logits = require_logits(observations, self.name)
        keep = require_in_out(observations, shadows, method=self.name, need_in=False, need_out=False)
        features = sorted_prediction_features(logits)  # [models, records, classes]
        labels = observations.labels
        scores = np.empty(observations.n_records, dtype=np.float64)
        for c in np.unique(labels):
            records = labels == c
            x = features[shadows][:, records].reshape(-1, features.shape[-1])
            y = keep[:, records].reshape(-1)
            if y.all() or not y.any():
                raise InputError(
                    f"{self.name}: class {int(c)} has only {'IN' if y.all() else 'OUT'} shadow "
                    f"examples ({int(records.sum())} records); needs both to train"
                )
            model = _make_classifier(self.classifier, self.seed).fit(x, y)
            scores[records] = model.predict_proba(features[target, records])[:, 1]
        return scores
