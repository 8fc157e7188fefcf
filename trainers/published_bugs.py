"""Published DP-SGD bugs, reproduced beside the correct behaviour, for multi-run white-box audits.

Each bug is one DP-SGD step (or one epoch) on a dataset chosen by the auditor, simulated
for many independent runs at once: ``world 0`` is the dataset without the target record
(or with the target's replace-one twin), ``world 1`` with it. What a run releases is the
white-box view an auditor of the update gets (the noisy, normalised gradient sum), and each
:class:`Case` turns it into a few candidate scores (higher or lower in world 1; the audit
picks one on pilot runs). A case also says what the faulty code *claims* (its accountant's
epsilon for the noise multiplier it runs) and how to calibrate that noise multiplier to a
target epsilon, exactly as the faulty code would.

The bugs (each function's docstring cites its report):

* Opacus #571 / #819: the update is divided by ``int(len(dataset) * sample_rate)``
  (:func:`opacus_expected_batch_size`, Opacus 1.0-1.6 ``make_private``), a function of
  the private dataset size; #571 on a dataset of 2-3 records (the report's sizes; also
  audited on the installed Opacus itself, :func:`opacus_571_release`), #819 with Poisson
  subsampling and a high-dimensional update (the leak grows with the dimension).
* Opacus #813: a user's ``WeightedRandomSampler`` kept (``poisson_sampling=False``) while
  the accountant is handed ``1 / len(data_loader)``: a heavily weighted record is drawn
  many times per batch.
* TensorFlow Privacy #620 / #81: microbatching clips each microbatch's mean gradient, so
  one record moves a clipped microbatch from -C to +C (sensitivity 2C); the older
  ``compute_dp_sgd_privacy`` accounts for sensitivity C.
* dp_accounting (google/differential-privacy #378): under ``REPLACE_ONE`` the Gaussian
  event's noise multiplier (noise std / C) is used as if the sensitivity were C, not 2C
  (:func:`dp_accounting_replace_one_epsilon` calls the installed dp_accounting itself).
* Shuffled fixed-size batches accounted as Poisson subsampling (Chua et al., "How Private
  are DP-SGD Implementations?", ICML 2024; Annamalai et al., "To Shuffle or not to
  Shuffle", 2024; Lebeda et al. 2024): one epoch, the target in exactly one batch.

diffprivlib #106 (the label set read from the private data) is audited by
``experiments.third_party`` (replace-one label probe) and reused by ``experiments.real_bugs``.

Arrays: ``grads: float[records, d]`` are per-record gradients chosen by the auditor (a
linear model's gradient is any vector the auditor wants: x times the residual).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import numpy as np

DELTA = 1e-5

Scores = dict[str, np.ndarray]


# --- the pieces of the faulty code, each checked against its source in tests ----------------

def opacus_sample_rate(n_records: int, batch_size: int) -> float:
    """``1 / len(data_loader)`` (Opacus ``make_private``), a ``DataLoader`` without ``drop_last``."""
    return 1.0 / math.ceil(n_records / batch_size)


def opacus_expected_batch_size(n_records: int, batch_size: int) -> int:
    """The normaliser of Opacus 1.0-1.6: ``int(len(data_loader.dataset) * sample_rate)``.

    Opacus #571 (https://github.com/meta-pytorch/opacus/issues/571, "Privacy Leakage at
    low sample size"): it depends on ``len(dataset)``, which is private under add/remove
    neighbours. Opacus #819 (https://github.com/meta-pytorch/opacus/issues/819, "FEASGM"):
    the floor-based expected-averaged subsampled Gaussian mechanism is accounted as the SGM.
    """
    return int(n_records * opacus_sample_rate(n_records, batch_size))


def clip_rows(grads: np.ndarray, c: float) -> np.ndarray:
    """Opacus' per-example clipping ``g * min(1, C / (||g|| + 1e-6))`` of ``float[..., d]``."""
    norms = np.linalg.norm(grads, axis=-1, keepdims=True)
    return grads * np.minimum(1.0, c / (norms + 1e-6))


def microbatch_sum(grads: np.ndarray, num_microbatches: int, c: float) -> np.ndarray:
    """TF Privacy's microbatched sum: ``float[records, d]`` split by position into
    ``num_microbatches`` equal microbatches (``tf.reshape(loss, [num_microbatches, -1])``),
    each microbatch's *mean* gradient clipped to C, the clipped means summed.

    TensorFlow Privacy #620 (https://github.com/tensorflow/privacy/issues/620) and #81
    (https://github.com/tensorflow/privacy/issues/81): one record moves its microbatch's
    clipped mean anywhere in the C-ball, so the sum's sensitivity is 2C, not C.
    """
    n, d = grads.shape
    if n % num_microbatches:
        raise ValueError(f"{n} records cannot be split into {num_microbatches} microbatches (TF Privacy refuses it too)")
    means = grads.reshape(num_microbatches, n // num_microbatches, d).mean(axis=1)
    return clip_rows(means, c).sum(axis=0)


def class_balancing_weights(labels: np.ndarray) -> np.ndarray:
    """``1 / count(label)`` per record: the ``WeightedRandomSampler`` recipe of Opacus #600 / #813."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def weighted_draw_probability(weights: np.ndarray, index: int, draws: int) -> float:
    """P(record ``index`` is in a batch of ``draws`` i.i.d. draws with probability proportional to
    ``weights``), the inclusion rate a ``WeightedRandomSampler(replacement=True)`` really has."""
    p = weights[index] / weights.sum()
    return 1.0 - (1.0 - p) ** draws


def dp_accounting_replace_one_epsilon(noise_multiplier: float, delta: float = DELTA, *, fixed: bool = False) -> float:
    """Epsilon of one Gaussian release under ``REPLACE_ONE`` from the installed dp_accounting
    (``RdpAccountant(neighboring_relation=REPLACE_ONE)`` composing ``GaussianDpEvent``).

    google/differential-privacy #378 (https://github.com/google/differential-privacy/issues/378):
    the event's noise multiplier is noise std / C, but a replace-one neighbour moves a sum of
    C-clipped records by 2C, and the RDP accountant uses the multiplier as is (dp_accounting
    0.6.0: ``alpha / (2 sigma^2)``). ``fixed=True`` hands it ``noise_multiplier / 2``, the
    fix of pull request #464.
    """
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    acct = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    acct.compose(dp_accounting.GaussianDpEvent(noise_multiplier / 2 if fixed else noise_multiplier))
    return float(acct.get_epsilon(delta))


def tf_privacy_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float = DELTA, *,
                       microbatched: bool = False) -> float:
    """The epsilon TF Privacy states for DP-SGD: RDP of the Poisson-subsampled Gaussian
    (dp_accounting's ``RdpAccountant``, which TF Privacy's ``compute_dp_sgd_privacy_lib`` uses).

    The older ``compute_dp_sgd_privacy`` ignores microbatching (``microbatched=False``); the
    newer ``compute_dp_sgd_privacy_statement`` accounts for the doubled sensitivity by halving
    the noise multiplier (``microbatched=True``).
    """
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    sigma = noise_multiplier / 2 if microbatched else noise_multiplier
    event = dp_accounting.GaussianDpEvent(sigma)
    if sample_rate < 1.0:
        event = dp_accounting.PoissonSampledDpEvent(sample_rate, event)
    acct = RdpAccountant()
    acct.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return float(acct.get_epsilon(delta))


def opacus_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float = DELTA) -> float:
    """What Opacus' default (PRV) accountant claims for Poisson DP-SGD (``audit.stats.claimed_epsilon``)."""
    import warnings

    from audit.stats import claimed_epsilon

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        return claimed_epsilon(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps,
                               delta=delta).value


@functools.lru_cache(maxsize=None)
def opacus_noise_for(epsilon: float, sample_rate: float, steps: int, delta: float = DELTA) -> float:
    """sigma from Opacus' own search (``get_noise_multiplier``, as ``make_private_with_epsilon``), cached."""
    from audit.stats.accountant import noise_multiplier_for

    return noise_multiplier_for(target_epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps)


def calibrate(claim: Callable[[float], float], target: float, lo: float = 0.05, hi: float = 200.0) -> float:
    """The noise multiplier sigma at which ``claim(sigma) == target`` (claims fall with sigma), by bisection
    in log space, as ``make_private_with_epsilon`` searches for it."""
    from scipy.optimize import brentq

    return float(math.exp(brentq(lambda s: claim(math.exp(s)) - target, math.log(lo), math.log(hi), xtol=1e-6)))


# --- the worlds, simulated for many runs at once ---------------------------------------------

def _noise(rng: np.random.Generator, runs: int, d: int, std: float) -> np.ndarray:
    return rng.standard_normal((runs, d)) * std


def _probe_scale(release: np.ndarray) -> np.ndarray:
    """log of the root mean square over the probe coordinates (1:), which read pure noise / normaliser."""
    if release.shape[1] < 2:
        return np.zeros(len(release))
    return 0.5 * np.log(np.mean(release[:, 1:] ** 2, axis=1))


def normaliser_release(n_records: int, batch_size: int, target: bool, *, probes: int, sigma: float, c: float,
                       runs: int, rng: np.random.Generator, fixed: bool) -> np.ndarray:
    """Opacus DP-SGD, one step, ``float[runs, 1 + probes]``: Poisson sampling at ``1/len(loader)``,
    background records with zero gradient, the target's gradient ``C e_0`` (clipped exactly to C),
    the noisy sum divided by :func:`opacus_expected_batch_size` of the dataset (``fixed=False``,
    Opacus #571/#819) or by the public ``batch_size`` (``fixed=True``)."""
    n = n_records + int(target)
    q = opacus_sample_rate(n, batch_size)
    norm = float(batch_size) if fixed else float(opacus_expected_batch_size(n, batch_size))
    out = _noise(rng, runs, 1 + probes, sigma * c)
    if target:
        out[:, 0] += c * (rng.random(runs) < q)
    return out / norm


def weighted_sampler_release(n_background: int, batch_size: int, target: bool, *, sigma: float, c: float,
                             runs: int, rng: np.random.Generator, fixed: bool) -> np.ndarray:
    """Opacus #813 (https://github.com/meta-pytorch/opacus/issues/813), one step, ``float[runs, 1]``.

    The user's ``DataLoader(batch_size=B, sampler=WeightedRandomSampler(class_balancing_weights(y),
    num_samples=len(dataset), replacement=True))`` is kept (``poisson_sampling=False``, the way to
    keep one's weights, #600), and Opacus hands the accountant ``1 / len(data_loader)``. The
    background records are class 0 with zero gradient; the target is the only record of class 1
    (gradient ``C e_0``), so each of the B draws picks it with probability 1/2. ``fixed=True`` is
    what the accountant assumes: Poisson sampling at ``1 / len(data_loader)`` (Opacus' own
    ``DPDataLoader``), normalised by the public B.
    """
    n = n_background + int(target)
    q = opacus_sample_rate(n, batch_size)
    out = _noise(rng, runs, 1, sigma * c)
    if target:
        if fixed:
            out[:, 0] += c * (rng.random(runs) < q)
        else:
            labels = np.r_[np.zeros(n_background, dtype=int), 1]
            p = class_balancing_weights(labels)[-1] / class_balancing_weights(labels).sum()
            out[:, 0] += c * rng.binomial(batch_size, p, size=runs)  # multiplicity of the target in the batch
    return out / (float(batch_size) if fixed else float(opacus_expected_batch_size(n, batch_size)))


def microbatch_release(target: bool, *, sigma: float, c: float, runs: int, rng: np.random.Generator,
                       fixed: bool, far: float = 1000.0) -> np.ndarray:
    """TF Privacy DP-SGD with ``num_microbatches=1`` (#81: fewer microbatches than examples), one
    full-batch step, ``float[runs, 1]``: background record ``-far C e_0``; the target ``+3 far C e_0``
    turns the microbatch's clipped mean from ``-C e_0`` to ``+C e_0``. ``fixed=True``: one microbatch
    per example (``num_microbatches=None``, per-example clipping)."""
    background = np.array([[-far * c]])
    grads = np.vstack([background, [[3.0 * far * c]]]) if target else background
    total = clip_rows(grads, c).sum(axis=0) if fixed else microbatch_sum(grads, 1, c)
    return total + _noise(rng, runs, 1, sigma * c)  # TF then divides by num_microbatches, a public constant


def replace_one_release(target: bool, *, sigma: float, c: float, runs: int, rng: np.random.Generator) -> np.ndarray:
    """A clipped sum plus ``N(0, (sigma C)^2)``, ``float[runs, 1]``, on replace-one neighbours: the
    target is ``-far e_0`` (world 0) or ``+far e_0`` (world 1), both clipped to norm C."""
    g = np.array([[1000.0 * c if target else -1000.0 * c]])
    return clip_rows(g, c).sum(axis=0) + _noise(rng, runs, 1, sigma * c)


def epoch_release(batches: int, batch_size: int, target: bool, *, sigma: float, c: float, runs: int,
                  rng: np.random.Generator, shuffled: bool, background: float = -1.0) -> np.ndarray:
    """One epoch, ``float[runs, batches]``: each step's noisy clipped sum on the canary coordinate.

    The auditor's dataset: ``batches * batch_size - 1`` background records of gradient
    ``background * C e_0`` (``-1``: against the target, the construction of Chua et al. 2024;
    ``0``: orthogonal to it), plus (world 1) the target ``+C e_0``. ``shuffled=True`` (the bug): a
    ``DataLoader(shuffle=True, batch_size=batch_size)`` epoch, so in world 0 the last batch is one
    record short and in world 1 the target sits in a uniformly random batch. ``shuffled=False``
    (what the accountant assumes): Poisson sampling at ``1 / batches`` per step.
    """
    n_background = batches * batch_size - 1
    out = _noise(rng, runs, batches, sigma * c)
    if shuffled:
        out += background * c * batch_size
        if target:
            out[np.arange(runs), rng.integers(0, batches, size=runs)] += (1.0 - background) * c
        else:
            out[:, -1] -= background * c
    else:
        q = 1.0 / batches
        out += background * c * rng.binomial(n_background, q, size=(runs, batches))
        if target:
            out += c * (rng.random((runs, batches)) < q)
    return out


# --- the cases the audit runs -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One implementation (faulty or correct) the multi-run audit distinguishes world 0 from world 1 in.

    ``claim(sigma)``: the epsilon this code states; ``scores(world, sigma, runs, rng)``: candidate
    statistics ``{name: float[runs]}`` of the white-box release in ``world`` (0 or 1).
    """

    bug: str
    name: str
    correct: bool
    report: str
    source: str  # "installed release" / "re-implementation" and what it was checked against
    claim_source: str
    claim: Callable[[float], float]
    scores: Callable[[int, float, int, np.random.Generator], Scores]
    design: str
    noise_for: Callable[[float], float] | None = None  # sigma for a target epsilon; None: :func:`calibrate` on ``claim``

    def sigma_for(self, epsilon: float) -> float:
        return self.noise_for(epsilon) if self.noise_for is not None else calibrate(self.claim, epsilon)


def _reading_scores(release: np.ndarray, sigma: float) -> Scores:
    return {"reading": release[:, 0]}


def case_571(*, fixed: bool, records: int = 2, batch_size: int = 8, probes: int = 64) -> Case:
    q = opacus_sample_rate(records + 1, batch_size)

    def scores(world, sigma, runs, rng):
        r = normaliser_release(records, batch_size, bool(world), probes=probes, sigma=sigma, c=1.0, runs=runs,
                               rng=rng, fixed=fixed)
        return {"reading": r[:, 0], "probe-scale": _probe_scale(r)}

    return Case(
        "opacus-571", "correct: public normaliser" if fixed else "Opacus 1.6 normaliser int(|D| q)", fixed,
        "https://github.com/meta-pytorch/opacus/issues/571",
        "re-implementation of Opacus 1.6.0 make_private's normaliser (checked against the installed release)",
        "Opacus PRV accountant (q, sigma, T = 1)", lambda s: opacus_epsilon(s, q, 1), scores,
        f"|D| = {records} vs {records + 1} records (the report's 2-3), batch size {batch_size} so q = 1/len(loader) = {q:g}, "
        f"target gradient C e_0, {probes} probe coordinates, one step", noise_for=lambda e: opacus_noise_for(e, q, 1))


def case_819(*, fixed: bool, records: int = 7, batch_size: int = 4, probes: int = 1000) -> Case:
    q = opacus_sample_rate(records + 1, batch_size)
    if opacus_sample_rate(records, batch_size) != q:
        raise ValueError("the two worlds must share the sample rate")

    def scores(world, sigma, runs, rng):
        r = normaliser_release(records, batch_size, bool(world), probes=probes, sigma=sigma, c=1.0, runs=runs,
                               rng=rng, fixed=fixed)
        return {"reading": r[:, 0], "probe-scale": _probe_scale(r)}

    return Case(
        "opacus-819", "correct: public normaliser" if fixed else "FEASGM: floor(q |D|) normaliser", fixed,
        "https://github.com/meta-pytorch/opacus/issues/819",
        "re-implementation of Opacus 1.6.0 (normaliser and sample rate checked against the installed release)",
        "Opacus PRV accountant (q, sigma, T = 1)", lambda s: opacus_epsilon(s, q, 1), scores,
        f"|D| = {records} vs {records + 1}, batch size {batch_size}: q = {q:g} in both, normaliser "
        f"{opacus_expected_batch_size(records, batch_size)} vs {opacus_expected_batch_size(records + 1, batch_size)}; "
        f"update of dimension {1 + probes} (the target moves coordinate 0), Poisson sampling, one step",
        noise_for=lambda e: opacus_noise_for(e, q, 1))


def case_813(*, fixed: bool, background: int = 99, batch_size: int = 10) -> Case:
    q = opacus_sample_rate(background + 1, batch_size)

    def scores(world, sigma, runs, rng):
        r = weighted_sampler_release(background, batch_size, bool(world), sigma=sigma, c=1.0, runs=runs, rng=rng,
                                     fixed=fixed)
        return _reading_scores(r, sigma)

    labels = np.r_[np.zeros(background, dtype=int), 1]
    real = weighted_draw_probability(class_balancing_weights(labels), background, batch_size)
    return Case(
        "opacus-813", "correct: Poisson at the accounted rate" if fixed else "WeightedRandomSampler kept, q = 1/len(loader)",
        fixed, "https://github.com/meta-pytorch/opacus/issues/813",
        "re-implementation (sampling as torch's WeightedRandomSampler; rate checked against the installed Opacus)",
        "Opacus PRV accountant (q = 1/len(loader), sigma, T = 1)", lambda s: opacus_epsilon(s, q, 1), scores,
        f"{background} records of class 0 + the target, the only record of class 1; class-balancing weights; "
        f"batch {batch_size}: accounted q = {q:g}, the target's real inclusion rate {real:.4f} with "
        f"{batch_size}/2 copies on average; one step", noise_for=lambda e: opacus_noise_for(e, q, 1))


def case_620(*, fixed: bool) -> Case:
    def scores(world, sigma, runs, rng):
        return _reading_scores(microbatch_release(bool(world), sigma=sigma, c=1.0, runs=runs, rng=rng, fixed=fixed), sigma)

    return Case(
        "tf-privacy-620", "correct: per-example clipping" if fixed else "num_microbatches = 1, old accounting", fixed,
        "https://github.com/tensorflow/privacy/issues/620 (and #81)",
        "re-implementation of TF Privacy's microbatched DP-SGD step (tensorflow-privacy is not installed here)",
        "TF Privacy's formula: dp_accounting RDP of the Gaussian (sensitivity C)",
        lambda s: tf_privacy_epsilon(s, 1.0, 1), scores,
        "full batch, one step: background record -1000 C e_0; the target +3000 C e_0 shares its microbatch")


def case_620_accounted() -> Case:
    """The same microbatched step, stated by ``compute_dp_sgd_privacy_statement`` (sensitivity 2C)."""
    c = case_620(fixed=False)
    return dataclasses.replace(c, name="correct: microbatching accounted (statement, sigma/2)", correct=True,
                               claim_source="dp_accounting RDP with sigma/2 (compute_dp_sgd_privacy_statement)",
                               claim=lambda s: tf_privacy_epsilon(s, 1.0, 1, microbatched=True))


def case_378(*, fixed: bool) -> Case:
    def scores(world, sigma, runs, rng):
        return _reading_scores(replace_one_release(bool(world), sigma=sigma, c=1.0, runs=runs, rng=rng), sigma)

    return Case(
        "dp-accounting-378", "correct: GaussianDpEvent(sigma/2) (PR #464)" if fixed else
        "REPLACE_ONE with GaussianDpEvent(sigma)", fixed,
        "https://github.com/google/differential-privacy/issues/378",
        "installed release: the claim comes from dp_accounting 0.6.0 itself; the mechanism is a clipped sum + noise",
        "dp_accounting 0.6.0 RdpAccountant(REPLACE_ONE)",
        lambda s: dp_accounting_replace_one_epsilon(s, fixed=fixed), scores,
        "replace-one: the target -C e_0 vs +C e_0 (after clipping), one Gaussian release")


def case_shuffle(*, fixed: bool, batches: int = 10, batch_size: int = 10, background: float = -1.0) -> Case:
    q = 1.0 / batches
    lift, short = 1.0 - background, -background  # world 1: the target's batch; world 0: the short last batch

    def scores(world, sigma, runs, rng):
        r = epoch_release(batches, batch_size, bool(world), sigma=sigma, c=1.0, runs=runs, rng=rng, shuffled=not fixed,
                          background=background)
        y = (r - background * batch_size) / sigma  # full background batches read N(0, 1) in these units
        mu = 1.0 / sigma
        # log-likelihood ratio of the shuffled worlds: +lift mu at a random batch vs +short mu at the last one
        llr = (np.logaddexp.reduce(lift * mu * y - (lift * mu) ** 2 / 2, axis=1) - np.log(batches)
               - (short * mu * y[:, -1] - (short * mu) ** 2 / 2))
        return {"llr-shuffle": llr, "max-but-last": y[:, :-1].max(axis=1), "last": y[:, -1], "sum": y.sum(axis=1)}

    against = background < 0
    name = ("correct: Poisson sampling" if fixed else "shuffled fixed-size batches") + (
        "" if against else ", background orthogonal to the target")
    return Case(
        "shuffle-as-poisson", name, fixed,
        "Chua et al., How Private are DP-SGD Implementations?, ICML 2024; Annamalai et al., To Shuffle or not to "
        "Shuffle, 2024 (the NDSS 2026 study)",
        "re-implementation (the zoo's shuffled_batches_as_poisson sampling: DataLoader(shuffle=True), one epoch)",
        f"Opacus PRV accountant (q = 1/{batches}, sigma, T = {batches})",
        lambda s: opacus_epsilon(s, q, batches), scores,
        f"one epoch of {batches} batches of {batch_size}; {batches * batch_size - 1} background records of gradient "
        f"{background:g} C e_0, the target +C e_0 (add/remove)", noise_for=lambda e: opacus_noise_for(e, q, batches))


def cases() -> list[Case]:
    """Every faulty case followed by its correct twin(s), in table order."""
    return [case_571(fixed=False), case_571(fixed=True), case_819(fixed=False), case_819(fixed=True),
            case_813(fixed=False), case_813(fixed=True), case_620(fixed=False), case_620(fixed=True),
            case_620_accounted(), case_378(fixed=False), case_378(fixed=True),
            case_shuffle(fixed=False), case_shuffle(fixed=True), case_shuffle(fixed=False, background=0.0)]


# --- Opacus #571 on the installed Opacus itself ---------------------------------------------

def opacus_571_release(world: int, *, sigma: float, runs: int, seed: int, records: int = 2, batch_size: int = 8,
                       probes: int = 64, fixed: bool = False) -> np.ndarray:
    """``float[runs, 1 + probes]``: ``p.grad`` after one step of the installed Opacus
    (``PrivacyEngine.make_private``, Poisson sampling) training ``Linear(1 + probes, 1, bias=False)``
    with MSE on ``records`` zero-input records, plus (world 1) the target ``x = e_0, y = -1000``
    whose clipped gradient is ``C e_0`` (C = 1). ``fixed=True`` overrides the optimizer's
    ``expected_batch_size`` with the public ``batch_size`` (a normaliser independent of ``|D|``)."""
    import logging
    import warnings

    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    logging.getLogger("opacus").setLevel(logging.ERROR)
    d = 1 + probes
    x = torch.zeros(records + world, d)
    y = torch.zeros(records + world, 1)
    if world:
        x[-1, 0], y[-1, 0] = 1.0, -1000.0
    out = np.empty((runs, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(runs):
            torch.manual_seed(seed + k)
            model = torch.nn.Linear(d, 1, bias=False)
            torch.nn.init.zeros_(model.weight)
            opt = torch.optim.SGD(model.parameters(), lr=0.0)
            loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
            engine = PrivacyEngine(accountant="prv")
            model, opt, loader = engine.make_private(module=model, optimizer=opt, data_loader=loader,
                                                    noise_multiplier=sigma, max_grad_norm=1.0,
                                                    noise_generator=torch.Generator().manual_seed(seed + k))
            if fixed:
                opt.expected_batch_size = batch_size
            for xb, yb in loader:
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(xb), yb).backward()
                opt.step()
                break
            out[k] = model._module.weight.grad.detach().double().numpy()[0]
    return out
