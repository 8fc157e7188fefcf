"""Audit your own Opacus training loop, in process: ``attach_audit`` and ``AttachedAudit``.

A user keeps the model, optimizer and data loader that ``PrivacyEngine.make_private``
returned and their own training loop; four lines audit that very run::

    model, optimizer, loader = privacy_engine.make_private(module=model, optimizer=optimizer,
                                                           data_loader=loader, noise_multiplier=1.0,
                                                           max_grad_norm=1.0)
    audit = attach_audit(optimizer, canaries=1000, seed=0)
    ...  # the unchanged training loop (BatchMemoryManager included)
    result = audit.finish(accountant=privacy_engine.accountant, delta=1e-5)
    audit.log_to_mlflow()
    audit.write_report("runs/my-audit")

What it does. :func:`attach_audit` adds m Dirac gradient canaries
(:mod:`canaries.gradient`; Steinke, Nasr & Jagielski 2023, Section 7) to the optimizer: a
zero-initialised canary slot of m coordinates (one per canary) is added to the
optimizer as one more parameter group (trainable, on the device and in the dtype of the
optimizer's first trainable parameter: with a LoRA fine-tune, the adapters'; never part of
the model, so the model, its ``state_dict`` and its forward pass are unchanged), each canary is included with probability 1/2, and an included canary is
inserted as one more per-sample gradient row (norm 1000 C, before clipping) at each
logical step with the Poisson rate q of the real records. Every step's release (the change
of the slot between iterates) is read back. :meth:`AttachedAudit.finish` reads the claim
off the accountant (its epsilon at ``delta``, and the claimed DP-SGD (sigma, q, T) from
its history), scores the canaries and decides exactly as ``dpaudit run`` decides a
white-box audit: :func:`audit.pipeline.analysis.bounds_and_estimates` (one-run bound,
test of the claimed privacy curve, effective noise from the scores and the readings)
then :func:`audit.pipeline.verdict.dp_verdict`, ``INCONCLUSIVE`` rules included. The
canary slot is then removed from the optimizer, which trains on as before.

What it sees and what it does not. The canaries enter at the optimizer, after the user's
data pipeline and the per-sample gradient computation: they test the optimizer's clipping,
noise, scaling, what its step does with the noisy gradient, and the accounting of the
rate and noise it is given. They do not travel through the user's DataLoader, so
data-pipeline bugs (a sampler that is not Poisson, a record used twice per step, a sample
rate other than the accountant's unless ``sample_rate=`` states the loader's own rate) and
bugs in the model's per-sample gradients are not seen.

Randomness: every choice the audit makes (which canaries are included, when each is
present) derives from ``seed``; the noise is the user's optimizer's own.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from audit.errors import InputError

DEFAULT_STATISTICS = ("likelihood-ratio", "likelihood-ratio-half-sigma", "spread")
_SOURCE = "opacus-{} accountant of the audited training loop (attach_audit)"


def _refuse_optimizer(optimizer) -> None:
    """One-line InputError for an optimizer the canaries cannot be attached to."""
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer_fast_gradient_clipping import DPOptimizerFastGradientClipping

    name = type(optimizer).__name__
    if isinstance(optimizer, DPOptimizerFastGradientClipping):
        raise InputError(
            f"optimizer={name}: ghost clipping (grad_sample_mode='ghost') never materialises per-sample gradients, "
            "so there is no per-sample row to add a gradient canary to; expected make_private(..., "
            "grad_sample_mode='hooks', 'functorch' or 'ew')")
    if not isinstance(optimizer, DPOptimizer):
        raise InputError(f"optimizer={name}: expected the opacus DPOptimizer that PrivacyEngine.make_private returns")
    from canaries.gradient import CanaryDPOptimizerMixin

    if isinstance(optimizer, CanaryDPOptimizerMixin):
        raise InputError(f"optimizer={name}: already carries canaries; expected one attach_audit per optimizer")
    # Opacus' other optimizers: one clipping norm per layer (the slot would need its own),
    # a clipping norm that moves (the readings assume one C), several processes (each rank
    # would insert the canaries).
    for cls in type(optimizer).__mro__:
        what = {"DPPerLayerOptimizer": "per-layer clipping (clipping='per_layer')",
                "AdaClipDPOptimizer": "adaptive clipping (clipping='adaptive')"}.get(cls.__name__)
        if what is None and cls.__name__.startswith("Distributed"):
            what = "distributed training"
        if what is not None:
            raise InputError(f"optimizer={name}: {what} is not supported yet; expected flat clipping in one "
                             "process (make_private's default clipping='flat')")


def _hooked_sample_rate(optimizer) -> float | None:
    """The sample rate ``make_private`` gave the accountant's step hook
    (``IAccountant.get_optimizer_hook_fn(sample_rate)`` keeps it in its closure), or None."""
    hook = getattr(optimizer, "step_hook", None)
    code, closure = getattr(hook, "__code__", None), getattr(hook, "__closure__", None)
    if code is None or not closure:
        return None
    cells = dict(zip(code.co_freevars, closure))
    if "sample_rate" not in cells:
        return None
    try:
        value = cells["sample_rate"].cell_contents
    except ValueError:  # an empty cell
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        return None
    return float(value)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name}={value!r}: expected an integer >= {low}")
    return int(value)


def attach_audit(optimizer, *, canaries: int = 1000, seed: int = 0, sample_rate: float | None = None,
                 name: str = "own-loop") -> "AttachedAudit":
    """Insert ``canaries`` Dirac gradient canaries into ``optimizer`` and return the audit.

    Call it after ``PrivacyEngine.make_private`` and before the first step; then train as
    usual and call :meth:`AttachedAudit.finish`.

    Args:
      optimizer: the ``DPOptimizer`` that ``make_private`` returned (flat clipping,
        ``grad_sample_mode`` "hooks", "functorch" or "ew"; not ghost clipping, which has no
        per-sample gradient rows), for any model Opacus supports, a Hugging Face
        ``transformers`` model with ``peft`` LoRA adapters included (frozen parameters,
        handed to the optimizer or not, take no part). Its class is swapped for a canary-carrying subclass
        (:func:`canaries.gradient.with_canaries`), keeping its state; a user's own
        ``DPOptimizer`` subclass is audited as it is.
      canaries: m >= 2; each is included with probability 1/2 (the one-run design), the
        others are observed only.
      seed: every random choice of the audit derives from it.
      sample_rate: the Poisson rate q at which included canaries are present per step; pass
        the data loader's own rate (``loader.sample_rate``) to test the accountant's rate
        against it. Default: the rate ``make_private`` gave the accountant's step hook.
      name: the audit's name in reports and MLflow.
    """
    import torch

    from canaries.gradient import CanarySlots, GradientCanaries, with_canaries

    _refuse_optimizer(optimizer)
    m = _check_int("canaries", canaries, 2)
    seed = _check_int("seed", seed, 0)
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"name={name!r}: expected a non-empty string")
    if sample_rate is None:
        q = _hooked_sample_rate(optimizer)
        if q is None:
            raise InputError("sample_rate=None: the optimizer has no accountant step hook from make_private to read the "
                             "rate from; expected attach_audit(..., sample_rate=loader.sample_rate)")
    elif isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not 0.0 < sample_rate <= 1.0:
        raise InputError(f"sample_rate={sample_rate!r}: expected a probability in (0, 1]")
    else:
        q = float(sample_rate)
    params = list(optimizer.params)
    if not params:
        raise InputError("optimizer has no trainable parameters: expected the optimizer of the model to audit")
    seeds = np.random.SeedSequence([seed, 15]).generate_state(2)
    members = np.random.default_rng(int(seeds[0])).random(m) < 0.5
    if members.all() or not members.any():  # only likely for a handful of canaries
        raise InputError(f"canaries={m}: with seed={seed} the one-run design includes {'every' if members.all() else 'no'} "
                         "canary, leaving nothing to compare; expected more canaries (hundreds for a useful audit)")
    # DPOptimizer.params holds the trainable parameters only: frozen ones (a LoRA fine-tune's
    # base model) get no per-sample gradient and no canary row, and never set the slot's dtype.
    ref = params[0]
    slot = CanarySlots(m, dtype=ref.dtype).to(ref.device).slots[0]
    slot.canary_slot = True  # kept even where Module.to makes new Parameter objects
    # The slot joins the optimizer as a group of its own with the first group's settings
    # (learning rate, weight decay, scheduler keys); it is never part of the model.
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    original_class = type(optimizer)
    patches = _fold_patches(optimizer)
    optimizer.original_optimizer.add_param_group({**group, "params": [slot]})
    inserted = GradientCanaries.dirac(slot, sample_rate=q, members=members)
    try:
        with_canaries(optimizer, inserted, generator=torch.Generator().manual_seed(int(seeds[1])))
    except Exception:
        optimizer.original_optimizer.param_groups.pop()
        optimizer.__class__ = original_class
        vars(optimizer).update(patches)
        raise
    return AttachedAudit(optimizer, inserted, original_class, patches, seed, name, sample_rate is not None)


# The DPOptimizer methods the canary optimizer overrides (canaries.gradient.CanaryDPOptimizerMixin).
_HOOKED = ("pre_step", "add_noise", "step")


def _fold_patches(optimizer) -> dict[str, Any]:
    """Move instance-level replacements of the hooked methods (``optimizer.add_noise = ...`` in
    the user's code) into a subclass, so that the canaries wrap them as they wrap a
    subclass's methods; returns them, to be put back when the canaries are detached."""
    patches = {name: vars(optimizer)[name] for name in _HOOKED if name in vars(optimizer)}
    if not patches:
        return {}

    def forward(name):
        def method(self, *args, **kwargs):
            return patches[name](*args, **kwargs)
        method.__name__ = name
        return method

    base = type(optimizer)
    optimizer.__class__ = type(base.__name__, (base,), {name: forward(name) for name in patches})
    for name in patches:
        del vars(optimizer)[name]
    return patches


@dataclasses.dataclass(frozen=True, eq=False)
class AuditResult:
    """The outcome of an in-process audit: the same verdict, bounds and tests as ``dpaudit run``.

    Attributes:
      verdict: "VIOLATION", "NO VIOLATION DETECTED" or "INCONCLUSIVE".
      exit_code: what ``dpaudit run`` would exit with (0 pass, 1 violation or inconclusive).
      message: the verdict in one paragraph.
      epsilon_lower_bound: the best guaranteed one-run (epsilon, delta) lower bound.
      claimed_epsilon: the accountant's epsilon at ``delta``.
      delta, confidence: of the claim and of the bounds (shared over the deciding tests).
      power: the largest epsilon this design could have shown (every guess right).
      claim_p_value: the smallest p-value of the claimed-curve tests (None without a curve).
      claim_rejected: whether a test rejected the claimed DP-SGD privacy curve.
      effective_epsilon: epsilon of DP-SGD at the effective noise multiplier (a lower bound
        within the DP-SGD family; never decides).
      effective_noise_multiplier: sigma_eff, or None.
      claim: the claimed DP-SGD (sigma, q, T) whose curve was tested, or None.
      report: the report dict (``report.json``'s content).
    """

    verdict: str
    exit_code: int
    message: str
    epsilon_lower_bound: float
    claimed_epsilon: float
    delta: float
    confidence: float
    power: float
    claim_p_value: float | None
    claim_rejected: bool
    effective_epsilon: float | None
    effective_noise_multiplier: float | None
    claim: tuple[float, float, int] | None
    report: dict


def claim_from_history(accountant) -> tuple[float, float, int]:
    """The (sigma, q, T) of an accountant whose history holds one (sigma, q)."""
    history = list(getattr(accountant, "history", None) or [])
    pairs = {(float(s), float(q)) for s, q, _ in history}
    if not history:
        raise InputError("accountant: its history is empty; expected the accountant of the PrivacyEngine whose "
                         "make_private built this optimizer, after at least one step")
    if len(pairs) > 1:
        shown = ", ".join(f"(sigma={s:g}, q={q:g})" for s, q in sorted(pairs))
        raise InputError(f"accountant history with {len(pairs)} different (noise multiplier, sample rate) pairs "
                         f"{shown}: not supported yet; expected one (sigma, q) over the whole run")
    (sigma, q), = pairs
    return sigma, q, int(sum(int(t) for _, _, t in history))


def _check_accounting(accountant, sigma: float, q: float, steps: int, delta: float) -> None:
    """Refuse what ``dpaudit run`` refuses before accounting (no noise, limits of the accountants)."""
    from audit.stats.accountant import check_accounting

    where = f"accountant history (sigma={sigma:g}, q={q:g}, T={steps})"
    if not sigma > 0:
        raise InputError(f"{where}: noise multiplier {sigma:g}; expected > 0 (without noise the claimed epsilon is "
                         "infinite and no audit can contradict it)")
    mechanism = accountant.mechanism()
    try:
        check_accounting(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta,
                         accountant=mechanism if mechanism in ("prv", "rdp", "gdp") else "rdp")
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


class AttachedAudit:
    """Gradient canaries attached to a user's DPOptimizer; made by :func:`attach_audit`.

    ``finish`` ends the audit and returns an :class:`AuditResult`; ``write_report`` and
    ``log_to_mlflow`` then write what ``dpaudit run`` writes.
    """

    def __init__(self, optimizer, canaries, original_class, patches, seed, name, rate_given):
        self.optimizer = optimizer
        self.canaries = canaries
        self.seed = seed
        self.name = name
        self._slot = canaries.coordinates[0].param
        self._patches = patches
        self._original_class = original_class
        self._rate_given = rate_given
        self._started = time.perf_counter()
        self._result: AuditResult | None = None
        self._observations = None
        self._dir: Path | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def n_canaries(self) -> int:
        return self.canaries.n_canaries

    @property
    def sample_rate(self) -> float:
        """q, the per-step presence rate of an included canary."""
        return self.canaries.sample_rate

    @property
    def observations(self):
        """The canaries' :class:`canaries.gradient.GradientCanaryObservations` (after ``finish``)."""
        self.result  # noqa: B018 (refuses an unfinished audit)
        return self._observations

    @property
    def steps(self) -> int:
        """Logical steps the canaries have been read at so far."""
        if self._observations is not None:
            return int(self._observations.readings.shape[0])
        opt = self.optimizer
        return len(opt._canary_readings) + (opt._canary_release is not None)

    @property
    def result(self) -> AuditResult:
        if self._result is None:
            raise InputError("the audit is not finished: expected finish(accountant=..., delta=...) first")
        return self._result

    # ------------------------------------------------------------------ finish

    def finish(self, *, accountant, delta: float = 1e-5, confidence: float = 0.95, on_inconclusive: str = "fail",
               statistics: Sequence[str] = DEFAULT_STATISTICS, train_accuracy: float | None = None,
               test_accuracy: float | None = None) -> AuditResult:
        """Score the canaries, test the accountant's claim, and detach the canaries.

        Args:
          accountant: the Opacus accountant that recorded this training
            (``privacy_engine.accountant``); its epsilon at ``delta`` is the claim and its
            history's (sigma, q, T) the claimed DP-SGD curve.
          delta: the claim's delta.
          confidence: probability that the reported bounds hold (Bonferroni-shared over
            every deciding test, as in ``dpaudit run``).
          on_inconclusive: "fail" (exit code 1, as ``gate.on_inconclusive``) or "pass".
          statistics: canary statistics that bound and test the claim.
          train_accuracy, test_accuracy: the model's utility, shown in the report if given.
        """
        if self._result is not None:
            raise InputError("finish() called twice: the audit is already finished (its result is audit.result)")
        from opacus.accountants import IAccountant

        if not isinstance(accountant, IAccountant):
            raise InputError(f"accountant={type(accountant).__name__}: expected an opacus accountant "
                             "(privacy_engine.accountant)")
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 < delta < 1.0:
            raise InputError(f"delta={delta!r}: expected a number in (0, 1)")
        if on_inconclusive not in ("fail", "pass"):
            raise InputError(f"on_inconclusive={on_inconclusive!r}: expected 'fail' or 'pass'")
        for label, value in (("train_accuracy", train_accuracy), ("test_accuracy", test_accuracy)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= value <= 1.0):
                raise InputError(f"{label}={value!r}: expected a fraction in [0, 1] or None")
        steps_seen = self.steps
        if steps_seen == 0:
            raise InputError("finish() before any optimizer step: expected at least one optimizer.step() after "
                             "attach_audit")
        sigma, q_acc, steps = claim_from_history(accountant)
        _check_accounting(accountant, sigma, q_acc, steps, delta)
        if steps < steps_seen:
            raise InputError(f"accountant: its history holds {steps} steps but the optimizer took {steps_seen} since "
                             "attach_audit; expected the accountant of the PrivacyEngine that made this optimizer")
        config = self._config(accountant, delta, confidence, on_inconclusive, statistics, sigma)
        self._detach()
        t0 = time.perf_counter()
        report = self._analyse(config, accountant, delta, (sigma, q_acc, steps), train_accuracy, test_accuracy,
                               train_s=t0 - self._started)
        report["timings"]["stats_s"] = time.perf_counter() - t0 - report["timings"]["attacks_s"]
        v = report["verdict"]
        self._result = AuditResult(
            verdict=v["decision"], exit_code=int(v["exit_code"]), message=v["message"],
            epsilon_lower_bound=float(v["epsilon_lower_bound"]), claimed_epsilon=float(v["claimed_epsilon"]),
            delta=float(delta), confidence=float(confidence), power=float(v["power"]),
            claim_p_value=v.get("claim_p_value"), claim_rejected=bool(v.get("claim_rejected", False)),
            effective_epsilon=v.get("effective_epsilon"), effective_noise_multiplier=v.get("effective_noise_multiplier"),
            claim=report["claimed"]["dpsgd"], report=report,
        )
        return self._result

    def _config(self, accountant, delta, confidence, on_inconclusive, statistics, sigma):
        """The run's settings as an ``AuditConfig`` (the analysis reads confidence, FPRs and statistics)."""
        from audit.config import AuditConfig
        from pydantic import ValidationError

        mechanism = accountant.mechanism()
        try:
            return AuditConfig.model_validate({
                "name": self.name, "seed": self.seed, "confidence": confidence, "output_dir": "",
                "trainer": {"kind": "dp"},
                "dp": {"noise_multiplier": sigma, "max_grad_norm": float(self.optimizer.max_grad_norm),
                       "delta": delta, "accountant": mechanism if mechanism in ("prv", "rdp", "gdp") else "prv"},
                "audit": {"canaries": self.n_canaries, "canary_kind": "gradient", "statistics": list(statistics)},
                "gate": {"on_inconclusive": on_inconclusive},
            })
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputError(f"{where}={first.get('input')!r}: {first['msg'].removeprefix('Value error, ')}") from None

    def _detach(self) -> None:
        """Read the canaries, then remove the slot and restore the optimizer's own class (once)."""
        if self._observations is not None:
            return
        opt = self.optimizer
        self._observations = opt.canary_observations()
        groups = opt.original_optimizer.param_groups
        groups[:] = [g for g in groups if not any(p is self._slot for p in g["params"])]
        opt.original_optimizer.state.pop(self._slot, None)
        vars(opt).pop("_canary_buffers", None)  # the padded per-sample gradients kept across steps
        opt._canary_unreserve()  # Opacus' hooks allocate per-sample gradients as before
        opt.__class__ = self._original_class
        vars(opt).update(self._patches)

    def _analyse(self, config, accountant, delta, claim, train_accuracy, test_accuracy, *, train_s) -> dict:
        import audit
        from audit.pipeline import analysis, report_document, verdict

        obs = self._observations
        sigma, q_acc, steps = claim
        with warnings.catch_warnings():  # RDP's "optimal order is the largest alpha"
            warnings.simplefilter("ignore", UserWarning)
            claimed_eps = float(accountant.get_epsilon(delta=delta)) if sigma > 0 else math.inf
        curve = claim if sigma > 0 and math.isfinite(claimed_eps) and 0 < q_acc <= 1 else None
        all_scores = obs.named_statistics()
        members = obs.members
        t0 = time.perf_counter()
        attacks = analysis.canary_table(config, all_scores, members)
        attacks_s = time.perf_counter() - t0
        scores = {n: all_scores[n] for n in config.audit.statistics}
        bounds, estimates, claim_tests = analysis.bounds_and_estimates(
            config, scores, members, delta, claim=curve, readings=(obs.readings, obs.max_grad_norm))
        decision = verdict.dp_verdict(bounds, claimed_eps, config.confidence,
                                      on_inconclusive=config.gate.on_inconclusive, claim_tests=claim_tests)
        opt = self.optimizer
        model = {
            "index": 0, "train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
            "epsilon": claimed_eps, "delta": delta, "steps": steps, "audited_steps": int(obs.readings.shape[0]),
            "sample_rate": self.sample_rate, "accounting_sample_rate": q_acc, "noise_multiplier": sigma,
            "max_grad_norm": obs.max_grad_norm, "reading_source": obs.reading_source,
        }
        mechanism = accountant.mechanism()
        trainer = {"kind": "in-process", "dp_optimizer": self._original_class.__name__,
                   "optimizer": type(opt.original_optimizer).__name__,
                   "batch_size": getattr(opt, "expected_batch_size", None),
                   "lr": opt.param_groups[0].get("lr") if opt.param_groups else None}
        dumped = config.model_dump(mode="json")
        report_config = {key: dumped[key] for key in ("name", "seed", "confidence", "dp", "audit", "gate")}
        report_config["dp"]["accountant"] = mechanism
        report_config["trainer"] = trainer
        report_config["audit"]["canary_sample_rate_from"] = "sample_rate argument" if self._rate_given \
            else "the accountant's step hook"
        return report_document(
            name=self.name, run_dir=None, config=report_config, mode="dp",
            claimed={"epsilon": claimed_eps, "delta": delta, "source": _SOURCE.format(mechanism), "dpsgd": curve},
            plugin=None, utility={"train_accuracy": train_accuracy, "test_accuracy": test_accuracy, "models": [model]},
            attacks=attacks, bounds=bounds, claim_tests=claim_tests, estimates=estimates, verdict=decision,
            timings={"train_s": train_s, "attacks_s": attacks_s})

    # ------------------------------------------------------------------ outputs

    def write_report(self, out_dir, *, overwrite: bool = False) -> list[Path]:
        """Write what ``dpaudit run`` leaves in a run directory: ``report.json``, ``report.md``,
        ``report.html``, figures, ``config.json``, ``utility.json``, ``observations.npz`` and
        ``readings.npz`` (so ``dpaudit report`` and ``dpaudit evaluate --observations`` read it).

        A directory holding another audit's ``report.json`` is refused unless ``overwrite``
        (then that audit's files, and its MLflow run record, are replaced). Returns the paths written.
        """
        from audit.observations import from_named_statistics, save_observations
        from audit.pipeline import rundir
        from audit.report import render_report

        result = self.result
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError(f"out_dir={str(out)!r}: exists and is not a directory")
        mine = self._dir is not None and out.resolve() == self._dir.resolve()
        if (out / "report.json").exists() and not mine:
            if not overwrite:
                raise InputError(f"out_dir={str(out)!r}: already holds a report.json; expected an empty or new "
                                 "directory (or overwrite=True)")
            (out / "mlflow_run.json").unlink(missing_ok=True)  # another audit's MLflow run is not this one's
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"out_dir={str(out)!r}: cannot write there ({err.strerror})") from None
        report = dict(result.report, run_dir=str(out))
        obs = self._observations
        stats = obs.named_statistics()
        observations = from_named_statistics(
            obs.members[None, :], {k: np.asarray(v, dtype=np.float64)[None, :] for k, v in stats.items()},
            metadata={"trainer": "in-process", "seed": self.seed, "claimed_epsilon": result.claimed_epsilon,
                      "reading_source": obs.reading_source, "canary_tensors": 1})
        rundir.write_json(out / "config.json", report["config"])
        rundir.save_utility(out, {0: report["utility"]["models"][0]})
        rundir.save_readings(out, obs.readings, obs.max_grad_norm)
        save_observations(observations, out / "observations.npz")
        rundir.write_json(out / "report.json", report)
        if self._dir is not None and not mine and (self._dir / "mlflow_run.json").exists():
            shutil.copy2(self._dir / "mlflow_run.json", out / "mlflow_run.json")  # one audit, one MLflow run
        self._dir = out
        self._files = [out / "report.json", *render_report(report, out)]
        return list(self._files)

    def log_to_mlflow(self, *, tracking_uri: str | None = None, experiment: str = "dpaudit"):
        """Log the audit as one MLflow run, as ``dpaudit run`` logs one (params, metrics, tags,
        the report and its figures as artifacts); :class:`audit.tracking.LogResult`.

        ``tracking_uri=None``: ``$MLFLOW_TRACKING_URI`` when set, else the SQLite store
        ``./mlflow.db`` the CLI uses. Logging again logs into the same run. A store that
        fails returns ``ok=False`` with a warning instead of raising.
        """
        from audit.tracking import log_audit

        self.result  # noqa: B018 (refuses an unfinished audit)
        if self._dir is None:  # the report files to upload, in a directory that lives as long as this audit
            self._tmp = tempfile.TemporaryDirectory(prefix="dpaudit-")
            self.write_report(Path(self._tmp.name) / self.name.replace("/", "_"))
        report = dict(self.result.report, run_dir=str(self._dir))
        return log_audit(report, self._dir, tracking_uri=tracking_uri, experiment=experiment,
                         artifacts=list(self._files))
