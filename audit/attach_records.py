"""In-process audit with canary records that go through the user's data pipeline.

:func:`audit.attach.attach_audit` inserts Dirac gradient canaries at the optimizer, so the
user's ``Dataset``, ``DataLoader`` and sampler never see them. :class:`RecordAudit` inserts
canary *records* (:mod:`canaries.records`: one reserved input feature per canary) into the
training set itself, so they are sampled by the user's loader: a loader whose batches are
not Poisson, or whose per-record rate is not the accountant's q, treats the canaries as it
treats every record, and the audit reads what the released iterates show.

Usage, in an Opacus script (the model's input is d + m wide, nothing else changes)::

    audit = RecordAudit(n_features=d, n_classes=10, canaries=1000, seed=0)
    train = audit.wrap(train_dataset)            # real records padded, member canaries appended
    model = build_model(in_features=audit.width)
    loader = DataLoader(train, batch_size=64)
    model, optimizer, loader = privacy_engine.make_private(module=model, optimizer=optimizer,
        data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)
    audit.attach(model, optimizer)               # reads the reserved blocks around every step
    ...                                          # the user's unchanged loop
    result = audit.finish(accountant=privacy_engine.accountant, delta=1e-5)

The analysis is the one-run (epsilon, delta) lower bound (Steinke, Nasr & Jagielski 2023,
Theorem 5.2) and the one-run test of the claimed DP-SGD trade-off curve (Mahloujifar,
Melis & Chaudhuri 2024), for each statistic, with Bonferroni over every deciding test,
and the effective noise multiplier (never deciding). The verdict rule is the one of
``dpaudit run``: VIOLATION when a bound exceeds the claimed epsilon or the claimed curve is
rejected; INCONCLUSIVE when no outcome of the design could have shown a violation.

What the tests assume: only that training is DP (resp. meets the claimed curve) with
respect to adding or removing one canary record, each canary included with probability
1/2 independently (the design). Scores are post-processing of the released iterates and of
the canary records (public to the auditor), so they are valid whatever the model makes of
the canaries; the Gaussian reading model of :mod:`canaries.records` only decides power.
The sample rate the loader uses must not depend on which canaries are members beyond the
dataset size (Opacus' ``1 / len(loader)`` moves with the member count by at most one
batch; the claim is the accountant's, as recorded).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from audit.errors import InputError
from canaries import records as rec

PASS = "NO VIOLATION DETECTED"


class CanaryRecordDataset(torch.utils.data.Dataset):
    """The user's dataset of ``(x: float[d], y)`` items, padded to d + m features, followed by
    the member canaries. ``canary_index(i)`` is the canary of row i (-1 for a real record)."""

    def __init__(self, dataset, canaries: rec.RecordCanaries):
        self.dataset = dataset
        self.canaries = canaries
        self._n = len(dataset)
        self._members = np.flatnonzero(canaries.members)
        self._inputs = torch.as_tensor(canaries.inputs()[self._members])
        self._labels = torch.as_tensor(canaries.labels[self._members])
        self._pad = torch.zeros(canaries.n_canaries)

    def __len__(self) -> int:
        return self._n + self._members.size

    def canary_index(self, i: int) -> int:
        return -1 if i < self._n else int(self._members[i - self._n])

    def __getitem__(self, i):
        if i < self._n:
            x, y = self.dataset[i]
            x = torch.as_tensor(x, dtype=torch.float32)
            if x.shape != (self.canaries.n_features,):
                raise InputError(f"record {i} with shape {tuple(x.shape)}: expected float[{self.canaries.n_features}]")
            return torch.cat([x, self._pad]), y
        j = i - self._n
        return self._inputs[j], self._labels[j]


@dataclasses.dataclass(frozen=True, eq=False)
class RecordAuditResult:
    """The outcome of a record-canary audit.

    Attributes:
      verdict: "VIOLATION", "NO VIOLATION DETECTED" or "INCONCLUSIVE".
      epsilon_lower_bound: the best one-run (epsilon, delta) bound over the statistics.
      claimed_epsilon: the claim's epsilon at ``delta``.
      power: the largest bound the design could show (every guess right).
      claim_p_value: the smallest claimed-curve p-value, Bonferroni-adjusted over every
        deciding test (rejected iff <= 1 - confidence).
      claim_rejected: whether a test rejected the claimed curve.
      effective_epsilon, effective_noise_multiplier: within the DP-SGD family, never deciding
        (None when not computed).
      claim: (sigma, q, T) of the claimed DP-SGD.
      statistics: per statistic, its bound, claim test and AUC (a dict).
      flagged_by: which tests decided a VIOLATION.
    """

    verdict: str
    epsilon_lower_bound: float
    claimed_epsilon: float
    delta: float
    confidence: float
    power: float
    claim_p_value: float
    claim_rejected: bool
    effective_epsilon: float | None
    effective_noise_multiplier: float | None
    claim: tuple[float, float, int]
    statistics: dict[str, Any]
    flagged_by: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == PASS else 1


class RecordAudit:
    """Canary records for one training run (see the module docstring).

    Args:
      n_features: d, the real records' feature count.
      n_classes: the label count (canary labels are drawn uniformly unless ``label``).
      canaries: m, one reserved feature each.
      seed: every random choice of the audit (memberships, labels).
      value: the reserved feature's value in its canary.
      label: give every canary this label (None: uniform).
    """

    def __init__(self, *, n_features: int, n_classes: int, canaries: int = 1000, seed: int = 0, value: float = 16.0,
                 label: int | None = None):
        self.canaries = rec.RecordCanaries.make(n_features, canaries, n_classes=n_classes, seed=seed, value=value,
                                                label=label)
        self.seed = seed
        self._proj: list[np.ndarray] = []
        self._sig: list[np.ndarray] = []
        self._off: list[np.ndarray] = []
        self._handles: list[Any] = []
        self._pending = None
        self._result: RecordAuditResult | None = None

    @property
    def width(self) -> int:
        return self.canaries.width

    @property
    def members(self) -> np.ndarray:
        return self.canaries.members

    def wrap(self, dataset) -> CanaryRecordDataset:
        """The user's dataset with the member canaries appended (a torch ``Dataset``)."""
        return CanaryRecordDataset(dataset, self.canaries)

    def training_arrays(self, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Arrays instead of a Dataset: :meth:`canaries.records.RecordCanaries.training_set`."""
        return self.canaries.training_set(x, y)

    # ------------------------------------------------------------------ reading

    def attach(self, model: torch.nn.Module, optimizer, *, weight: torch.nn.Parameter | None = None,
               loss_fn=F.cross_entropy, max_grad_norm: float | None = None, scale: float | None = None) -> "RecordAudit":
        """Read the reserved blocks around every step the optimizer takes.

        Args:
          model: the model being trained (an Opacus ``GradSampleModule`` or a plain module).
          optimizer: an Opacus ``DPOptimizer`` (its inner optimizer is hooked, so steps that
            Opacus skips are not read) or the user's own optimizer that applies the update.
          weight: the first affine layer's weight ``[h, d + m]`` (found by shape if None).
          loss_fn: the per-record loss ``loss_fn(logits[1, ...], y[1])`` of the training.
          max_grad_norm: C (the DPOptimizer's by default).
          scale: what turns the released gradient into a noisy sum (the DPOptimizer's
            expected batch size under a mean loss, 1 under a sum loss, by default).
        """
        if self._handles:
            raise InputError("attach() called twice")
        inner = getattr(optimizer, "original_optimizer", optimizer)
        weight = rec.find_first_layer(rec._plain_module(model), self.width) if weight is None else weight
        group = next((g for g in inner.param_groups if any(p is weight for p in g["params"])), None)
        if group is None:
            raise InputError("optimizer: the first layer's weight is not among its parameters")
        if not isinstance(inner, torch.optim.SGD) or group.get("momentum", 0) or group.get("weight_decay", 0):
            raise InputError(f"optimizer {type(inner).__name__} (momentum={group.get('momentum')}, weight_decay="
                             f"{group.get('weight_decay')}): expected torch.optim.SGD without momentum or weight decay "
                             "(the released gradient is read back as (before - after) / lr)")
        c = float(max_grad_norm if max_grad_norm is not None else getattr(optimizer, "max_grad_norm", float("nan")))
        if not c > 0 or not math.isfinite(c):
            raise InputError(f"max_grad_norm={max_grad_norm!r}: expected a number > 0 (or a DPOptimizer that has one)")
        if scale is None:
            reduction = getattr(optimizer, "loss_reduction", "sum")
            scale = float(getattr(optimizer, "expected_batch_size", 1)) if reduction == "mean" else 1.0
        self._model, self._weight, self._loss_fn, self._c, self._scale, self._group = (
            model, weight, loss_fn, c, float(scale), group)
        self._shadow = rec.hook_free_copy(model)
        self._handles = [inner.register_step_pre_hook(self._before), inner.register_step_post_hook(self._after)]
        return self

    def _before(self, optimizer, args, kwargs) -> None:
        w = self._weight.detach()[:, self.canaries.reserved].clone()
        expected = rec.expected_contributions(self._model, self._weight, self.canaries, loss_fn=self._loss_fn,
                                              max_grad_norm=self._c, shadow=self._shadow)
        self._pending = (w, expected)

    def _after(self, optimizer, args, kwargs) -> None:
        before, expected = self._pending
        after = self._weight.detach()[:, self.canaries.reserved]
        x, s, off = rec.read_step(before, after, expected, lr=float(self._group["lr"]), scale=self._scale)
        self._proj.append(x)
        self._sig.append(s)
        self._off.append(off)
        self._pending = None

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def readings(self) -> rec.RecordReadings:
        if not self._proj:
            raise InputError("no step was read: expected attach(...) and at least one optimizer step")
        return rec.RecordReadings(projections=np.stack(self._proj), signals=np.stack(self._sig),
                                  off_direction=np.stack(self._off), members=self.canaries.members.copy(),
                                  max_grad_norm=self._c, block_size=int(self._weight.shape[0]))

    # ------------------------------------------------------------------ analysis

    def finish(self, *, accountant=None, claim: tuple[float, float, int] | None = None, delta: float = 1e-5,
               confidence: float = 0.95, steps_per_epoch: int | None = None,
               statistics: Sequence[str] | None = None, effective: bool = True) -> RecordAuditResult:
        """Score the canaries and test the claim (an Opacus ``accountant``, or ``claim =
        (sigma, q, T)`` of Poisson DP-SGD).

        ``statistics`` (default: likelihood-ratio alone) each add a one-run bound and a
        curve test to the Bonferroni split. ``"epoch-likelihood-ratio"`` (needs
        ``steps_per_epoch = len(loader)``) is the statistic built for a shuffled loader; it
        is not in the default because it did not see shuffling in one run even on the exact
        mechanism (``experiments/results/pipeline_canaries.md``) and it would halve the
        level of the others."""
        self.detach()
        if (accountant is None) == (claim is None):
            raise InputError("finish: expected exactly one of accountant= or claim=(sigma, q, T)")
        if accountant is not None:
            from audit.attach import claim_from_history

            claim = claim_from_history(accountant)
        sigma, q, steps = float(claim[0]), float(claim[1]), int(claim[2])
        readings = self.readings
        if statistics is None:
            statistics = ("likelihood-ratio",)
        result = analyse(readings, sigma=sigma, sample_rate=q, steps=steps, delta=delta, confidence=confidence,
                         steps_per_epoch=steps_per_epoch, statistics=tuple(statistics), effective=effective,
                         accountant=accountant)
        self._result = result
        return result

    @property
    def result(self) -> RecordAuditResult:
        if self._result is None:
            raise InputError("the audit is not finished: expected finish(...) first")
        return self._result


def _claimed_epsilon(sigma: float, q: float, steps: int, delta: float, accountant) -> float:
    if accountant is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return float(accountant.get_epsilon(delta=delta))
    from audit.stats import claimed_epsilon

    return float(claimed_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta).value)


def analyse(readings: rec.RecordReadings, *, sigma: float, sample_rate: float, steps: int, delta: float,
            confidence: float = 0.95, steps_per_epoch: int | None = None,
            statistics: tuple[str, ...] = ("likelihood-ratio",), effective: bool = True,
            accountant=None) -> RecordAuditResult:
    """The verdict from ``readings`` against the claim DP-SGD(``sigma``, ``sample_rate``, ``steps``).

    Each statistic gets a one-run bound and a claimed-curve test, each at level
    ``(1 - confidence) / (2 * len(statistics))`` (Bonferroni over all deciding tests)."""
    from audit.pipeline.verdict import dp_verdict
    from audit.stats import claim_test_one_run, dpsgd_curve, epsilon_one_run_from_scores
    from audit.stats.effective_noise import effective_noise_one_run
    from audit.stats.roc import auc

    if not statistics:
        raise InputError("statistics: expected at least one")
    members = readings.members
    alpha = 1.0 - confidence
    n_tests = 2 * len(statistics)
    each = 1.0 - alpha / n_tests
    claimed = _claimed_epsilon(sigma, sample_rate, steps, delta, accountant)
    curve = dpsgd_curve(sigma, sample_rate, steps)
    per: dict[str, Any] = {}
    flagged: list[str] = []
    bound_rows, test_rows = [], []
    best_bound, power, min_p = 0.0, 0.0, 1.0
    for name in statistics:
        sc = rec.scores(readings, name, sample_rate=sample_rate, noise_multiplier=sigma,
                        steps_per_epoch=steps_per_epoch)
        bound = epsilon_one_run_from_scores(sc, members, delta=delta, confidence=each)
        test = claim_test_one_run(sc, members, curve, confidence=each)
        per[name] = {"bound": bound.value, "power": bound.details["power"], "claim_p_value": test.p_value,
                     "claim_rejected": test.rejected, "testable": test.testable,
                     "auc": float(auc(sc, members))}
        bound_rows.append({"name": f"one-run/{name}", **bound.to_dict()})
        test_rows.append({"name": f"claim-test/{name}", **test.to_dict()})
        best_bound = max(best_bound, bound.value)
        power = max(power, bound.details["power"])
        min_p = min(min_p, test.p_value)
        if bound.value > claimed:
            flagged.append(f"{name}: bound {bound.value:.3g} > claimed {claimed:.3g}")
        if test.rejected:
            flagged.append(f"{name}: claimed curve rejected (p = {test.p_value:.3g})")
    eff_eps = eff_sigma = None
    if effective:
        lr = rec.scores(readings, "likelihood-ratio", sample_rate=sample_rate, noise_multiplier=sigma,
                        steps_per_epoch=None)
        eff = effective_noise_one_run(lr, members, noise_multiplier=sigma, sample_rate=sample_rate, steps=steps,
                                      delta=delta, confidence=confidence, readings=readings.projections,
                                      max_grad_norm=readings.max_grad_norm)
        eff_eps, eff_sigma = float(eff.epsilon), eff.noise_multiplier
    claim_rejected = any(t["rejected"] for t in test_rows)
    # the rules of dpaudit run: an infinite claim, or a design that could neither exceed the
    # claim nor reject its curve, is INCONCLUSIVE
    verdict = dp_verdict(bound_rows, claimed, confidence, claim_tests=test_rows)["decision"]
    return RecordAuditResult(
        verdict=verdict, epsilon_lower_bound=float(best_bound), claimed_epsilon=claimed, delta=float(delta),
        confidence=float(confidence), power=float(power), claim_p_value=float(min(1.0, min_p * n_tests)),
        claim_rejected=claim_rejected, effective_epsilon=eff_eps, effective_noise_multiplier=eff_sigma,
        claim=(sigma, float(sample_rate), int(steps)), statistics=per, flagged_by=tuple(flagged))
