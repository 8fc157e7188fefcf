"""IBM's diffprivlib models as dpaudit black-box plugins (diffprivlib 0.6.6).

Each plugin is a ``train(x, y, *, seed)`` (the contract of :mod:`trainers.plugins`) that fits
one diffprivlib classifier and returns a model whose ``predict_proba`` has one column per
class of the public label set. The factories below build them for a claimed ``epsilon``
and a :class:`PublicDomain`, what is known about the data without looking at it (label
set, row-norm bound, feature bounds):

- ``logreg_correct``, ``gnb_correct``: configured as the library's documentation says;
- ``logreg_no_data_norm``, ``gnb_no_bounds``, ``gnb_no_classes``: one documented
  misconfiguration each, the ways the library lets a user get it wrong.

The claim. diffprivlib's models are pure epsilon-DP: ``epsilon`` is the privacy parameter of
the whole fit, and each fit spends ``(epsilon, 0)`` of its ``BudgetAccountant``
(diffprivlib docs, https://diffprivlib.readthedocs.io/en/latest/modules/models.html, and
the ``fit`` methods of ``diffprivlib/models/logistic_regression.py`` and
``naive_bayes.py``). So every plugin claims ``(epsilon, 0)``: ``CLAIMED_DELTA = 0``. dpaudit
accepts delta = 0 and audits it at the config's ``dp.delta`` (default 1e-5; an
``(epsilon, 0)`` guarantee implies ``(epsilon, delta)``, so that test is sound). The
library's mechanisms take the number of records n as known (``LogisticRegression`` follows
Chaudhuri, Monteleoni & Sarwate 2011, whose neighbouring datasets differ in one entry;
``GaussianNB`` forces its noisy class counts to sum to n): its neighbours are
replace-one. dpaudit's one-run design adds or removes canaries; what that can show
through n alone is how many canaries a model holds, not which.

One module per claim. A plugin module states one claim (``CLAIMED_EPSILON``) and a plugin
cannot see the config, so the plugins for each claimed epsilon live in their own small
module, ``trainers.thirdparty.diffprivlib_eps1`` (``_eps2``, ``_eps4``), which calls the
factories here with its own ``CLAIMED_EPSILON``: the epsilon diffprivlib is given and the
epsilon the audit tests are one constant, and a config whose ``dp.claimed_epsilon`` says
otherwise is refused (``audit.pipeline.preflight``). Their domain is :data:`FAIR`, the
shipped ``fair`` dataset's.

Requires scikit-learn < 1.8: diffprivlib 0.6.6 passes ``multi_class`` to scikit-learn's
``LogisticRegression`` (removed in 1.8) and imports ``sklearn.tree._tree.DOUBLE``
(removed in 1.9); the ``thirdparty`` and ``test`` extras pin it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from audit.errors import InputError

try:
    from diffprivlib.accountant import BudgetAccountant
    from diffprivlib.models import GaussianNB, LogisticRegression
except ImportError as exc:  # also scikit-learn >= 1.9, where diffprivlib 0.6.6 cannot import
    raise ImportError(f"trainers.thirdparty.diffprivlib_plugins needs diffprivlib 0.6.6 with scikit-learn < 1.8 "
                      f"(pip install 'dpaudit[thirdparty]'): {exc}") from exc


@dataclass(frozen=True)
class PublicDomain:
    """What the data owner knows about the data without looking at it.

    ``classes``: the label set (int labels, at least two); ``data_norm``: a bound on each
    record's L2 norm (``LogisticRegression``'s ``data_norm``); ``lower`` / ``upper``: a
    bound on every feature (``GaussianNB``'s ``bounds``). Records outside the bounds are
    clipped to them, so the guarantee never depends on the bounds being true, only the
    utility does."""

    classes: tuple[int, ...]
    data_norm: float
    lower: float
    upper: float

    def __post_init__(self) -> None:
        classes = tuple(int(c) for c in self.classes)
        if len(classes) < 2 or len(set(classes)) != len(classes) or min(classes) < 0:
            raise InputError(f"classes={self.classes!r}: expected at least two distinct labels >= 0")
        if not (math.isfinite(self.data_norm) and self.data_norm > 0):
            raise InputError(f"data_norm={self.data_norm!r}: expected a finite number > 0")
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and self.lower < self.upper):
            raise InputError(f"bounds ({self.lower!r}, {self.upper!r}): expected finite lower < upper")
        object.__setattr__(self, "classes", tuple(sorted(classes)))


def standardised_domain(n_features: int, classes: tuple[int, ...]) -> PublicDomain:
    """The domain of ``n_features`` standardised features (dpaudit's shipped tabular data,
    ``trainers.data.standardise``): each feature within 3 standard deviations, and each
    row's norm at most sqrt(2 n_features), twice the mean squared norm (n_features) of a
    standardised row. Both follow from the standardisation, not from the records."""
    if not isinstance(n_features, int) or n_features < 1:
        raise InputError(f"n_features={n_features!r}: expected an int >= 1")
    return PublicDomain(classes=classes, data_norm=math.sqrt(2 * n_features), lower=-3.0, upper=3.0)


# The shipped ``fair`` dataset: 8 standardised features, labels {0, 1}.
FAIR = standardised_domain(8, (0, 1))


def _flat(x: np.ndarray) -> np.ndarray:
    """``x: float[n, ...]`` as float64[n, features]."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def clip_rows(x: np.ndarray, norm: float) -> np.ndarray:
    """``x: float[n, ...]`` flattened, each row scaled down to L2 norm at most ``norm``."""
    x = _flat(x)
    lengths = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, norm / np.maximum(lengths, np.finfo(np.float64).tiny))


def clip_features(x: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """``x: float[n, ...]`` flattened, every feature clipped to ``[lower, upper]``."""
    return np.clip(_flat(x), lower, upper)


@dataclass(frozen=True)
class PublicLabelModel:
    """A fitted diffprivlib classifier as dpaudit queries it: inputs go through the same
    public preprocessing as the training records, and ``predict_proba`` has one column per
    class of the public label set (0 for a class the fitted model does not know)."""

    model: Any
    columns: tuple[int, ...]  # column in the public label set of each of model.classes_
    n_classes: int
    preprocess: Callable[[np.ndarray], np.ndarray]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``x: float[m, ...]`` -> float64[m, classes of the public label set]."""
        with np.errstate(divide="ignore"):  # GaussianNB: log of a zero prior, an absent class
            probs = self.model.predict_proba(self.preprocess(x))
        out = np.zeros((len(probs), self.n_classes))
        out[:, list(self.columns)] = probs
        return out


def _public_model(model: Any, domain: PublicDomain, preprocess: Callable) -> PublicLabelModel:
    columns = tuple(domain.classes.index(int(c)) for c in model.classes_)
    return PublicLabelModel(model=model, columns=columns, n_classes=len(domain.classes), preprocess=preprocess)


def _check_labels(y: np.ndarray, domain: PublicDomain) -> np.ndarray:
    y = np.asarray(y).astype(np.int64).ravel()
    outside = np.setdiff1d(np.unique(y), domain.classes)
    if outside.size:
        raise InputError(f"labels {outside.tolist()} are outside the public label set {list(domain.classes)}")
    return y


def _check_epsilon(epsilon: float) -> float:
    numeric = isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool)
    if not (numeric and math.isfinite(epsilon) and epsilon > 0):
        raise InputError(f"epsilon={epsilon!r}: expected a finite number > 0")
    return float(epsilon)


@dataclass(frozen=True)
class LogisticRegressionTrainer:
    """``diffprivlib.models.LogisticRegression`` (objective perturbation, Chaudhuri et al.
    2011, one-vs-rest with ``epsilon / classes`` per class), fitted on ``(x, y)``.

    ``data_norm_given``: rows are clipped to ``domain.data_norm`` and that public bound is
    passed as ``data_norm``; without it neither happens, and diffprivlib takes the largest
    row norm of the private data (a ``PrivacyLeakWarning``). The label set cannot be given:
    diffprivlib 0.6.6's ``LogisticRegression`` has no ``classes`` argument (one passed is
    ignored with a warning) and always reads it from ``y``
    (https://github.com/IBM/differential-privacy-library/issues/106, open)."""

    variant: str
    epsilon: float
    domain: PublicDomain
    data_norm_given: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _check_epsilon(self.epsilon))

    def __call__(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> PublicLabelModel:
        y = _check_labels(y, self.domain)
        if self.data_norm_given:
            preprocess = functools.partial(clip_rows, norm=self.domain.data_norm)
            data_norm = self.domain.data_norm
        else:
            preprocess, data_norm = _flat, None
        model = LogisticRegression(epsilon=self.epsilon, data_norm=data_norm, random_state=int(seed),
                                   accountant=BudgetAccountant())
        model.fit(preprocess(x), y)
        return _public_model(model, self.domain, preprocess)


@dataclass(frozen=True)
class GaussianNBTrainer:
    """``diffprivlib.models.GaussianNB`` (noisy class counts, means and variances, a third
    of ``epsilon`` each), fitted on ``(x, y)``.

    ``bounds_given``: features are clipped to ``[domain.lower, domain.upper]`` and those
    public bounds are passed as ``bounds``; without them diffprivlib takes each feature's
    min and max over the private data (a ``PrivacyLeakWarning``). ``classes_given``: the
    public label set is passed to ``partial_fit(x, y, classes=...)``; without it ``fit``
    reads the label set from ``y`` (no warning; the GaussianNB side of
    https://github.com/IBM/differential-privacy-library/issues/106)."""

    variant: str
    epsilon: float
    domain: PublicDomain
    bounds_given: bool = True
    classes_given: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _check_epsilon(self.epsilon))

    def __call__(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> PublicLabelModel:
        y = _check_labels(y, self.domain)
        d = self.domain
        if self.bounds_given:
            preprocess = functools.partial(clip_features, lower=d.lower, upper=d.upper)
            bounds = (d.lower, d.upper)
        else:
            preprocess, bounds = _flat, None
        model = GaussianNB(epsilon=self.epsilon, bounds=bounds, random_state=int(seed), accountant=BudgetAccountant())
        if self.classes_given:
            model.partial_fit(preprocess(x), y, classes=np.asarray(d.classes))
        else:
            model.fit(preprocess(x), y)
        return _public_model(model, d, preprocess)


DiffprivlibTrainer = Union[LogisticRegressionTrainer, GaussianNBTrainer]


# --- the plugins --------------------------------------------------------------------------


def logreg_correct(epsilon: float, domain: PublicDomain = FAIR) -> LogisticRegressionTrainer:
    """``LogisticRegression(epsilon=epsilon, data_norm=domain.data_norm)`` on rows clipped
    to that norm, as its docstring asks: "To preserve differential privacy fully,
    `data_norm` should be selected independently of the data, i.e. with domain knowledge."

    Claim: ``(epsilon, 0)``-DP for the whole fit. Not configurable away: the label set
    comes from ``y`` (issue #106), so a class present in one dataset and absent from its
    neighbour changes the model (one-vs-rest classifiers and the split of epsilon)."""
    return LogisticRegressionTrainer("logreg_correct", epsilon, domain)


def logreg_no_data_norm(epsilon: float, domain: PublicDomain = FAIR) -> LogisticRegressionTrainer:
    """Misconfigured: ``LogisticRegression(epsilon=epsilon)`` without ``data_norm`` and on
    unclipped rows. diffprivlib's docstring: "If not specified, the max norm is taken from
    the data when ``.fit()`` is first called, but will result in a PrivacyLeakWarning, as
    it reveals information about the data." The noise scale and the added regularisation
    then follow the largest record.

    Claim (what the user believes): ``(epsilon, 0)``-DP, the ``epsilon`` passed."""
    return LogisticRegressionTrainer("logreg_no_data_norm", epsilon, domain, data_norm_given=False)


def gnb_correct(epsilon: float, domain: PublicDomain = FAIR) -> GaussianNBTrainer:
    """``GaussianNB(epsilon=epsilon, bounds=(domain.lower, domain.upper))`` on features
    clipped to those bounds, with the public label set given to ``partial_fit(classes=)``.

    Claim: ``(epsilon, 0)``-DP for the whole fit. Not configurable away: diffprivlib
    draws noisy counts, means and variances only for the labels present in ``y``; a class
    of the given label set with no record keeps a count of exactly 0 (prior 0), one with a
    record gets a noisy count of at least 1."""
    return GaussianNBTrainer("gnb_correct", epsilon, domain)


def gnb_no_bounds(epsilon: float, domain: PublicDomain = FAIR) -> GaussianNBTrainer:
    """Misconfigured: ``GaussianNB(epsilon=epsilon)`` without ``bounds``, on unclipped
    features (label set given). diffprivlib's docstring: "If not provided, the bounds are
    computed on the data when ``.fit()`` is first called, resulting in a
    PrivacyLeakWarning." Each feature's noise then scales with its range in the private
    data.

    Claim (what the user believes): ``(epsilon, 0)``-DP, the ``epsilon`` passed."""
    return GaussianNBTrainer("gnb_no_bounds", epsilon, domain, bounds_given=False)


def gnb_no_classes(epsilon: float, domain: PublicDomain = FAIR) -> GaussianNBTrainer:
    """Misconfigured: ``GaussianNB(epsilon=epsilon, bounds=...).fit(x, y)``, which reads
    the label set from the private labels (bounds given), silently: the model's classes
    are those present in the data
    (https://github.com/IBM/differential-privacy-library/issues/106, reported for
    ``LogisticRegression``; ``GaussianNB.fit`` does the same).

    Claim (what the user believes): ``(epsilon, 0)``-DP, the ``epsilon`` passed."""
    return GaussianNBTrainer("gnb_no_classes", epsilon, domain, classes_given=False)


# Name -> factory; the modules ``diffprivlib_eps*`` bind each of these to their claim.
PLUGINS: dict[str, Callable[[float, PublicDomain], DiffprivlibTrainer]] = {
    f.__name__: f for f in (logreg_correct, logreg_no_data_norm, gnb_correct, gnb_no_bounds, gnb_no_classes)
}
