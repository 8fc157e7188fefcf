"""attach_audit: an in-process audit of the user's own Opacus training loop.

Every training below is written as a user's script is: ``PrivacyEngine.make_private``, the
user's own loop, plus the lines that audit it. Bugs are planted in the user's code (their
own DPOptimizer subclass, a patched method), never in the harness. Designs (sklearn's
digits, 8x8 images, 10 classes; delta = 1e-5, Opacus' prv accountant):

- CORRECT: 512 records, expected batch 32 (q = 1/16), sigma = 1, 4 epochs (T = 64),
  1,000 canaries: claimed epsilon 3.64, power 4.92.
- HALF_NOISE: 512 records, expected batch 16 (q = 1/32), sigma = 1, 8 epochs (T = 256),
  4,000 canaries: claimed epsilon 3.28. Half the noise is seen only by the test of the
  claimed curve (the bound, 2.3, stays below the claim); 4,000 canaries give it room (p = 0.002 at a
  per-test level of 0.0125, against p = 0.003-0.03 with 2,000).
- TWICE: 32 records, expected batch 4 (q = 1/8), sigma = 2, 16 epochs (T = 128), 1,000
  canaries: claimed epsilon 3.41. Noise divided by the batch twice leaves sigma / 4 = 0.5;
  a large batch would leave sigma / B, near the effective-noise floor of 0.1 whose
  effective epsilon takes dp_accounting tens of seconds to compute.

The LoRA tests fine-tune a Hugging Face ``transformers`` Llama classifier built from a
config (random weights, nothing downloaded) with ``peft`` LoRA adapters on synthetic token
ids, in the CORRECT design; their readings must equal across per-sample modes and whether
or not the frozen parameters are handed to the optimizer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _generate_noise, _mark_as_processed
from opacus.utils.batch_memory_manager import BatchMemoryManager
from opacus.validators import ModuleValidator
from torch import nn

from audit import attach_audit
from audit.errors import InputError
from experiments.own_loop import (  # the user's models, data and planted bugs
    SmallCNN, accuracy, half_noise, lora_transformer, token_data)

DELTA = 1e-5
TEST = 1000  # digits[1000:] (797 images) is the test set; training uses the first n <= 1000
PASSING = {"NO VIOLATION DETECTED", "INCONCLUSIVE"}
CORRECT = dict(n=512, batch_size=32, sigma=1.0, epochs=4, canaries=1000)
HALF_NOISE = dict(n=512, batch_size=16, sigma=1.0, epochs=8, canaries=4000)
TWICE = dict(n=32, batch_size=4, sigma=2.0, epochs=16, canaries=1000)


pytestmark = [pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
              pytest.mark.filterwarnings("ignore:Full backward hook is firing")]


@pytest.fixture(scope="module", autouse=True)
def _single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)


# ---------------------------------------------------------------- the user's models


class SmallTransformer(nn.Module):
    """The 8 rows of a digit as 8 tokens through one encoder layer."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.encoder = nn.TransformerEncoderLayer(16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(self.encoder(self.embed(x.view(-1, 8, 8))).mean(dim=1))


MODELS = {
    "mlp": lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
    "cnn": SmallCNN,
    # nn.MultiheadAttention becomes Opacus' DPMultiheadAttention
    "transformer": lambda: ModuleValidator.fix(SmallTransformer()),
}


# ---------------------------------------------------------------- the user's scripts


def train_loop(model, optimizer, loader, epochs, physical_batch=None):
    """The user's training loop, unchanged by the audit."""
    model.train()
    for _ in range(epochs):
        if physical_batch is None:
            batches = loader
        else:
            manager = BatchMemoryManager(data_loader=loader, max_physical_batch_size=physical_batch, optimizer=optimizer)
            batches = manager.__enter__()
        for x, y in batches:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        if physical_batch is not None:
            manager.__exit__(None, None, None)


def user_script(data, *, model="mlp", seed=0, n=512, batch_size=32, sigma=1.0, epochs=4, canaries=1000, mode="hooks",
                physical_batch=None, audit=True, patch=None, finish=True):
    """A user's Opacus script; ``audit`` adds the audit's lines, ``patch`` plants a bug in the
    user's optimizer. Returns (audit, result, model, optimizer, privacy_engine)."""
    x, y = data
    torch.manual_seed(seed)
    net = MODELS[model]()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:n], y[:n]), batch_size=batch_size,
                                         generator=torch.Generator().manual_seed(seed))
    privacy_engine = PrivacyEngine(accountant="prv")
    net, optimizer, loader = privacy_engine.make_private(
        module=net, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma, max_grad_norm=1.0,
        grad_sample_mode=mode, noise_generator=torch.Generator().manual_seed(seed + 1000))
    if patch is not None:
        patch(optimizer)
    run = attach_audit(optimizer, canaries=canaries, seed=seed) if audit else None
    train_loop(net, optimizer, loader, epochs, physical_batch)
    optimizer.zero_grad()  # before evaluating: expanded weights ("ew") refuse a forward over a stale grad_sample
    result = None
    if audit and finish:
        result = run.finish(accountant=privacy_engine.accountant, delta=DELTA,
                            train_accuracy=accuracy(net, x[:n], y[:n]), test_accuracy=accuracy(net, x[TEST:], y[TEST:]))
    return run, result, net, optimizer, privacy_engine


@pytest.fixture(scope="module")
def finished(digits):
    """One correct run, audited and finished (MLP, CORRECT design, seed 0)."""
    return user_script(digits, **CORRECT)


# ---------------------------------------------------------------- correct DP-SGD


def _assert_correct(run, result, engine):
    assert result.verdict in PASSING and result.exit_code in (0, 1)
    assert result.claimed_epsilon == pytest.approx(engine.get_epsilon(DELTA))
    assert result.claim == (1.0, 1 / 16, 64) and run.steps == 64
    assert result.epsilon_lower_bound <= result.claimed_epsilon and not result.claim_rejected
    # 1,000 canaries, delta 1e-5, three statistics: six deciding tests, each at 1 - 0.05 / 6
    assert result.power == pytest.approx(4.85, abs=0.01)
    # The noise read on the never-inserted canaries pins the optimizer's noise: a wrong
    # scale anywhere between slot, clipping and reading would move sigma_eff off 1.
    assert 0.95 < result.effective_noise_multiplier < 1.05
    assert run.observations.reading_source == "iterates"


def test_correct_mlp_run(finished):
    run, result, _, _, engine = finished
    _assert_correct(run, result, engine)
    assert result.verdict == "NO VIOLATION DETECTED" and result.exit_code == 0


@pytest.mark.parametrize("model, seed", [("mlp", 1), ("cnn", 0), ("cnn", 1), ("transformer", 0), ("transformer", 1)])
def test_correct_dpsgd_is_never_flagged(digits, model, seed):
    run, result, *_, engine = user_script(digits, model=model, seed=seed, **CORRECT)
    _assert_correct(run, result, engine)


def test_per_sample_modes_read_the_same_canaries(digits, finished):
    """hooks, functorch and ew compute the same per-sample gradients: with the same seeds the
    canaries read the same numbers and the audits agree."""
    hooks = finished[0].observations.readings
    for mode in ("functorch", "ew"):
        run, result, *_, engine = user_script(digits, mode=mode, **CORRECT)
        np.testing.assert_allclose(run.observations.readings, hooks, rtol=1e-4, atol=1e-4)
        _assert_correct(run, result, engine)
        assert result.verdict == finished[1].verdict


def test_batch_memory_manager_with_a_smaller_physical_batch(digits, finished):
    """Physical batches of 8 within logical batches of 32 (expected): canaries are inserted
    once per logical step, and the run reads as the one without the memory manager."""
    run, result, *_, engine = user_script(digits, physical_batch=8, **CORRECT)
    _assert_correct(run, result, engine)
    np.testing.assert_allclose(run.observations.readings, finished[0].observations.readings, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- a Hugging Face transformer fine-tuned with LoRA


def lora_script(tokens, *, seed=0, mode="hooks", dtype=None, base_dtype=torch.float32, n=512, batch_size=32,
                sigma=1.0, epochs=4, canaries=1000, all_params=False):
    """A user's LoRA fine-tune: the optimizer gets the trainable parameters (or, ``all_params``,
    every parameter, the frozen ones included, as some scripts do)."""
    x, y = tokens
    torch.manual_seed(seed)
    net = lora_transformer(hidden=32, base_dtype=base_dtype)
    if dtype is not None:
        net = net.to(dtype)
    params = list(net.parameters()) if all_params else [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:n], y[:n]), batch_size=batch_size,
                                         generator=torch.Generator().manual_seed(seed))
    engine = PrivacyEngine(accountant="prv")
    net, optimizer, loader = engine.make_private(
        module=net, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma, max_grad_norm=1.0,
        grad_sample_mode=mode, noise_generator=torch.Generator().manual_seed(seed + 1000))
    run = attach_audit(optimizer, canaries=canaries, seed=seed)
    train_loop(net, optimizer, loader, epochs)
    optimizer.zero_grad()
    acc = accuracy(net, x[TEST:], y[TEST:])
    return run, run.finish(accountant=engine.accountant, delta=DELTA, test_accuracy=acc), net, optimizer, engine


@pytest.fixture(scope="module")
def tokens():
    return token_data(n=1512)


@pytest.fixture(scope="module")
def lora_finished(tokens):
    return lora_script(tokens, **CORRECT)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_lora_transformer_is_audited_in_place(lora_finished):
    run, result, model, optimizer, engine = lora_finished
    _assert_correct(run, result, engine)
    assert result.verdict == "NO VIOLATION DETECTED" and result.report["utility"]["test_accuracy"] > 0.7
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert frozen and all(p.grad is None and getattr(p, "grad_sample", None) is None for p in frozen)
    assert trainable and all("lora_" in name or "score" in name for name in trainable)
    slot = run.canaries.coordinates[0].param
    assert slot.requires_grad and slot.dtype == torch.float32 and slot.device == next(iter(optimizer.params)).device
    assert not any("canary" in k for k in model.state_dict()) and len(optimizer.param_groups) == 1


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
@pytest.mark.parametrize("mode", ["functorch", "ew"])
def test_lora_per_sample_modes_read_the_same_canaries(tokens, lora_finished, mode):
    run, result, *_, engine = lora_script(tokens, mode=mode, **CORRECT)
    np.testing.assert_allclose(run.observations.readings, lora_finished[0].observations.readings, rtol=1e-4, atol=1e-4)
    _assert_correct(run, result, engine)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_lora_with_frozen_parameters_in_the_optimizer_and_float64(tokens, lora_finished):
    """Frozen parameters handed to the optimizer get no per-sample gradient and no canary
    row; the slot follows the adapters' dtype (float64 here)."""
    run, result, *_, engine = lora_script(tokens, all_params=True, **CORRECT)
    np.testing.assert_allclose(run.observations.readings, lora_finished[0].observations.readings, rtol=1e-4, atol=1e-4)
    run, result, *_, engine = lora_script(tokens, dtype=torch.float64, **dict(CORRECT, epochs=1, canaries=200))
    assert run.canaries.coordinates[0].param.dtype == torch.float64 and run.steps == 16
    assert 0.8 < result.effective_noise_multiplier < 1.2


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_lora_over_a_bfloat16_base_model(tokens):
    """A bfloat16 base with float32 adapters and a bfloat16 head (mixed trainable dtypes): the
    slot takes the optimizer's first trainable parameter's dtype (an adapter's, float32)."""
    run, result, model, *_ = lora_script(tokens, base_dtype=torch.bfloat16, **dict(CORRECT, epochs=2))
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    assert dtypes == {torch.float32, torch.bfloat16} and run.canaries.coordinates[0].param.dtype == torch.float32
    assert result.verdict == "NO VIOLATION DETECTED" and 0.95 < result.effective_noise_multiplier < 1.05


# ---------------------------------------------------------------- bugs in the user's code


class ForgetsToClipDPOptimizer(DPOptimizer):
    """The user's own DP-SGD optimizer: sums per-sample gradients without clipping."""

    def clip_and_accumulate(self):
        for p in self.params:
            summed = self._get_flat_grad_sample(p).sum(dim=0)
            p.summed_grad = summed if p.summed_grad is None else p.summed_grad + summed
            _mark_as_processed(p.grad_sample)


def own_optimizer_script(data, *, seed=0, n=512, batch_size=32, sigma=1.0, epochs=4, canaries=1000):
    """Opacus' path for a custom DPOptimizer: the pieces make_private assembles, by hand."""
    x, y = data
    torch.manual_seed(seed)
    model = GradSampleModule(MODELS["mlp"]())
    loader = DPDataLoader.from_data_loader(
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:n], y[:n]), batch_size=batch_size),
        generator=torch.Generator().manual_seed(seed))
    privacy_engine = PrivacyEngine(accountant="prv")
    optimizer = ForgetsToClipDPOptimizer(torch.optim.SGD(model.parameters(), lr=0.5), noise_multiplier=sigma,
                                         max_grad_norm=1.0, expected_batch_size=batch_size,
                                         generator=torch.Generator().manual_seed(seed + 1000))
    optimizer.attach_step_hook(privacy_engine.accountant.get_optimizer_hook_fn(sample_rate=loader.sample_rate))
    run = attach_audit(optimizer, canaries=canaries, seed=seed)
    train_loop(model, optimizer, loader, epochs)
    return run, run.finish(accountant=privacy_engine.accountant, delta=DELTA)


class NoiseDividedByBatchTwice(DPOptimizer):
    def add_noise(self):
        for p in self.params:
            std = self.noise_multiplier * self.max_grad_norm / self.expected_batch_size
            p.grad = (p.summed_grad + _generate_noise(std=std, reference=p.summed_grad, generator=self.generator)).view_as(p)
            _mark_as_processed(p.summed_grad)


def divide_noise_twice(optimizer):
    optimizer.__class__ = NoiseDividedByBatchTwice  # the user's subclass swapped in after make_private


def test_missing_clipping_in_the_users_optimizer_is_a_violation(digits):
    run, result = own_optimizer_script(digits, **CORRECT)
    assert result.verdict == "VIOLATION" and result.exit_code == 1
    assert result.claim_rejected and result.claim_p_value < 1e-3
    assert type(run.optimizer) is ForgetsToClipDPOptimizer  # restored after finish


@pytest.mark.parametrize("patch, design, sigma_eff", [(half_noise, HALF_NOISE, 0.5),
                                                      (divide_noise_twice, TWICE, 0.5)])
def test_noise_bugs_in_the_users_optimizer_are_violations(digits, patch, design, sigma_eff):
    run, result, _, optimizer, engine = user_script(digits, patch=patch, **design)
    assert result.verdict == "VIOLATION" and result.exit_code == 1
    assert result.claim_rejected  # the (epsilon, delta) bound alone stays below the claim here
    assert result.claimed_epsilon == pytest.approx(engine.get_epsilon(DELTA))
    assert result.effective_noise_multiplier == pytest.approx(sigma_eff, rel=0.05)
    assert "add_noise" in vars(optimizer) or type(optimizer) is NoiseDividedByBatchTwice  # the user's bug stays


def test_halving_the_optimizers_noise_multiplier_halves_the_claim_too(digits):
    """Not a bug the audit can flag: Opacus' accountant hook reads optimizer.noise_multiplier
    at every step, so the claim follows the noise actually added."""
    def halve(optimizer):
        optimizer.noise_multiplier /= 2

    run, _, _, _, engine = user_script(digits, patch=halve, finish=False, **CORRECT)
    assert engine.accountant.history == [(0.5, 1 / 16, 64)] and run.steps == 64


# ---------------------------------------------------------------- utility and the optimizer afterwards


def test_canaries_do_not_change_the_models_utility(digits):
    """Canary rows are zero on the model's parameters, so they change neither clipping nor the
    sum; only the noise generator's stream shifts (the slot's noise is drawn after the
    model's). Without noise the trained weights are bit-identical. With noise, test accuracy
    over 6 seeds (1,000 training records, 797 test) agrees with and without the audit within
    3 standard errors of the difference of the two means, the errors measured from the
    seed-to-seed spread of each arm (about 0.035 per run here): a tolerance that follows the
    noise of DP training itself rather than a fixed number."""
    common = dict(n=1000, batch_size=32, epochs=4, canaries=1000, finish=False)
    plain = user_script(digits, sigma=0.0, audit=False, **common)[2]
    audited = user_script(digits, sigma=0.0, **common)[2]
    for a, b in zip(plain.parameters(), audited.parameters()):
        assert torch.equal(a, b)
    with_audit, without = [], []
    x, y = digits
    for seed in range(6):
        without.append(accuracy(user_script(digits, seed=seed, audit=False, **common)[2], x[TEST:], y[TEST:]))
        with_audit.append(accuracy(user_script(digits, seed=seed, **common)[2], x[TEST:], y[TEST:]))
    se = np.sqrt(np.var(with_audit, ddof=1) / 6 + np.var(without, ddof=1) / 6)
    assert abs(np.mean(with_audit) - np.mean(without)) <= 3 * se
    assert np.mean(with_audit) > 0.6  # it learned


def test_finish_detaches_the_canaries(finished, digits):
    run, _, model, optimizer, engine = finished
    assert type(optimizer) is DPOptimizer and len(optimizer.param_groups) == 1
    assert all(p is not run.canaries.coordinates[0].param for p in optimizer.params)
    assert not any("canary" in k for k in model.state_dict())
    steps = engine.accountant.history[-1][2]
    x, y = digits
    model.train()
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x[:8]), y[:8]).backward()
    optimizer.step()  # the user's training goes on without canaries
    assert engine.accountant.history[-1][2] == steps + 1


def test_canary_slot_follows_the_models_dtype(digits):
    x, y = digits
    model = MODELS["mlp"]().double()
    engine = PrivacyEngine()
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
        data_loader=torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:64].double(), y[:64]), batch_size=16))
    run = attach_audit(optimizer, canaries=100, seed=0)
    slot = run.canaries.coordinates[0].param
    assert slot.dtype == torch.float64 and slot.device == next(model.parameters()).device
    assert run.sample_rate == loader.sample_rate == 0.25
    train_loop(model, optimizer, loader, 1)
    assert run.steps == 4


# ---------------------------------------------------------------- verdict rules and refusals


def test_inconclusive_rules_are_those_of_dpaudit_run(digits):
    run, result, *_ = user_script(digits, **dict(CORRECT, canaries=10))
    assert result.verdict == "INCONCLUSIVE" and result.exit_code == 1 and result.power < result.claimed_epsilon
    assert "could not have detected a violation" in result.message


def _make_private(digits, **kwargs):
    x, y = digits
    model = MODELS["mlp"]()
    engine = PrivacyEngine()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:64], y[:64]), batch_size=16)
    kwargs = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, **kwargs}
    out = engine.make_private(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), data_loader=loader,
                              **kwargs)
    return engine, out


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_refuses_ghost_clipping(digits):
    _, (model, optimizer, criterion, loader) = _make_private(digits, grad_sample_mode="ghost")
    with pytest.raises(InputError) as err:
        attach_audit(optimizer)
    assert "ghost clipping" in _one_line(err) and "no per-sample row" in str(err.value)


def test_refuses_what_is_not_a_dp_optimizer():
    with pytest.raises(InputError) as err:
        attach_audit(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    assert _one_line(err).startswith("optimizer=SGD: expected the opacus DPOptimizer")


def test_refuses_per_layer_clipping(digits):
    _, (_, optimizer, _) = _make_private(digits, clipping="per_layer", max_grad_norm=[1.0] * 4)
    with pytest.raises(InputError) as err:
        attach_audit(optimizer)
    assert "per-layer clipping" in _one_line(err) and "not supported yet" in str(err.value)


@pytest.mark.parametrize("canaries", [1, 0, 2.5, True])
def test_refuses_fewer_than_two_canaries(digits, canaries):
    _, (_, optimizer, _) = _make_private(digits)
    with pytest.raises(InputError) as err:
        attach_audit(optimizer, canaries=canaries)
    assert _one_line(err).startswith(f"canaries={canaries!r}: expected an integer >= 2")
    assert type(optimizer) is DPOptimizer and len(optimizer.param_groups) == 1  # left as it was


def test_refuses_attaching_twice_and_finishing_before_a_step(digits):
    engine, (_, optimizer, _) = _make_private(digits)
    run = attach_audit(optimizer, canaries=100)
    with pytest.raises(InputError) as err:
        attach_audit(optimizer)
    assert "already carries canaries" in _one_line(err)
    with pytest.raises(InputError) as err:
        run.finish(accountant=engine.accountant, delta=DELTA)
    assert _one_line(err).startswith("finish() before any optimizer step")
    with pytest.raises(InputError) as err:
        run.finish(accountant="prv", delta=DELTA)
    assert "expected an opacus accountant" in _one_line(err)


def test_refuses_a_history_of_several_noise_levels(digits):
    engine, (model, optimizer, loader) = _make_private(digits)
    run = attach_audit(optimizer, canaries=100)
    train_loop(model, optimizer, loader, 1)
    optimizer.noise_multiplier = 2.0  # the user's noise schedule
    train_loop(model, optimizer, loader, 1)
    with pytest.raises(InputError) as err:
        run.finish(accountant=engine.accountant, delta=DELTA)
    assert "2 different (noise multiplier, sample rate) pairs" in _one_line(err) and "not supported yet" in str(err.value)


def test_refuses_finishing_twice(finished):
    run, _, _, _, engine = finished
    with pytest.raises(InputError) as err:
        run.finish(accountant=engine.accountant, delta=DELTA)
    assert _one_line(err).startswith("finish() called twice")


# ---------------------------------------------------------------- report and MLflow

# What `dpaudit run` logs for a white-box audit (checked against a CLI run's report with
# audit.tracking.metrics_from_report / tags_from_report); timings.data_s does not apply in process.
CLI_METRICS = {"claimed_epsilon", "claimed_delta", "epsilon_lower_bound", "power", "claim_p_value",
               "effective_epsilon", "effective_noise_multiplier", "epsilon_lower_bound.one-run/likelihood-ratio",
               "epsilon_lower_bound.one-run/spread", "train_accuracy", "test_accuracy", "timings.train_s",
               "timings.attacks_s", "timings.stats_s"} | {
    f"{s}.{k}" for s in ("likelihood-ratio", "spread", "all-iterates", "last-iterate")
    for k in ("auc", "tpr_at_fpr_0.1", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "tpr_at_fpr_0.0001")}
CLI_TAGS = {"dp_audit.verdict", "dp_audit.exit_code", "dp_audit.claimed_epsilon", "dp_audit.epsilon_lower_bound",
            "dp_audit.power", "dp_audit.claim_rejected", "dp_audit.mode", "dp_audit.schema", "mlflow.note.content"}
CLI_PARAMS = {"name", "seed", "confidence", "trainer.kind", "trainer.lr", "trainer.batch_size", "trainer.optimizer",
              "dp.noise_multiplier", "dp.max_grad_norm", "dp.delta", "dp.accountant", "audit.canaries",
              "audit.canary_kind", "audit.statistics", "audit.fprs", "gate.on_inconclusive"}


def test_log_to_mlflow_writes_one_run_as_the_cli_does(finished, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    run, result, *_ = finished
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # honoured as by the CLI
    monkeypatch.chdir(tmp_path)
    logged = run.log_to_mlflow()
    assert logged.ok and logged.tracking_uri == uri
    assert run.log_to_mlflow().run_id == logged.run_id  # logging again: one audit, one run
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([logged.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "own-loop"
    data = runs[0].data
    assert CLI_METRICS <= set(data.metrics) and CLI_TAGS <= set(data.tags) and CLI_PARAMS <= set(data.params)
    assert data.tags["dp_audit.verdict"] == result.verdict
    assert data.metrics["claimed_epsilon"] == pytest.approx(result.claimed_epsilon)
    assert data.metrics["test_accuracy"] == pytest.approx(result.report["utility"]["test_accuracy"])
    assert data.metrics["test_accuracy"] > 0.5
    assert data.params["trainer.kind"] == "in-process" and data.params["dp.accountant"] == "prv"
    artifacts = {a.path for a in client.list_artifacts(logged.run_id)}
    assert {"report.json", "report.html", "report.md", "epsilon.png"} <= artifacts
    assert not (tmp_path / "mlflow.db").exists()  # the environment's store, not the default one


def test_write_report_as_dpaudit_run_writes_it(finished, tmp_path, capsys):
    from audit.cli import main
    from audit.report import load_report

    run, result, *_ = finished
    out = tmp_path / "my-audit"
    written = run.write_report(out)
    assert {p.name for p in written} >= {"report.json", "report.md", "report.html", "epsilon.png", "roc.png"}
    report = load_report(out)
    assert report["verdict"]["decision"] == result.verdict and report["run_dir"] == str(out)
    assert report["claimed"]["epsilon"] == pytest.approx(result.claimed_epsilon)
    assert main(["report", str(out)]) == 0
    assert main(["evaluate", "--observations", str(out)]) == 0
    assert "likelihood-ratio" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text("{}")
    with pytest.raises(InputError) as err:
        run.write_report(tmp_path / "other")
    assert "already holds a report.json" in _one_line(err)
    assert (tmp_path / "other" / "report.json").read_text() == "{}"  # left as it was
    run.write_report(tmp_path / "other", overwrite=True)
    assert load_report(tmp_path / "other")["verdict"]["decision"] == result.verdict
