"""Canary records through the user's data pipeline (canaries/records.py, audit/attach_records.py).

- Reserved coordinates: a real record's per-sample gradient is exactly 0 on the reserved
  columns, canary i's only on column d + i; with noise off, every reading is the canary's
  presence count times its expected clipped contribution, and nothing lies off it.
- The expected contributions match a per-record autograd loop with Opacus' clipping, on
  the fast path (first layer with bias) and the generic path (without).
- Scores against independent references (the Dirac likelihood ratio at s = C; the epoch
  statistic by hand).
- Soundness: simulated correct Poisson DP-SGD readings (signals below C, varying) never
  give a bound above the claim; the correct Opacus Poisson loader is not flagged, the
  oversampling WeightedRandomSampler (Opacus #813's sample rate) is, in the experiment's
  quick design.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from torch import nn

from audit.attach_records import RecordAudit, analyse
from audit.errors import InputError
from canaries import iterate_scores
from canaries import records as rec


def _reference_contributions(model, canaries, c, weight=None):
    weight = model[0].weight if weight is None else weight
    rows = []
    for i in range(canaries.n_canaries):
        model.zero_grad()
        x = torch.as_tensor(canaries.inputs()[i:i + 1])
        y = torch.as_tensor(canaries.labels[i:i + 1])
        nn.functional.cross_entropy(model(x), y).backward()
        norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
        rows.append(weight.grad[:, canaries.n_features + i] * min(1.0, c / (norm + 1e-6)))
    return torch.stack(rows)


@pytest.mark.parametrize("bias", [True, False])
def test_expected_contributions_match_autograd(bias):
    canaries = rec.RecordCanaries.make(5, 9, n_classes=3, seed=1, value=3.0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(canaries.width, 4, bias=bias), nn.Tanh(), nn.Linear(4, 3))
    for c in (0.05, 100.0):  # clipped and not clipped
        got = rec.expected_contributions(model, model[0].weight, canaries, loss_fn=nn.functional.cross_entropy,
                                         max_grad_norm=c)
        want = _reference_contributions(model, canaries, c)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert float(got.norm(dim=1).max()) <= 100.0


def test_real_records_never_touch_reserved_columns():
    canaries = rec.RecordCanaries.make(6, 8, n_classes=4, seed=3, value=2.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    y = rng.integers(0, 4, size=20)
    xs, ys, which = canaries.training_set(x, y)
    assert xs.shape == (20 + canaries.members.sum(), canaries.width)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(canaries.width, 5), nn.ReLU(), nn.Linear(5, 4))
    for row in range(len(ys)):
        model.zero_grad()
        nn.functional.cross_entropy(model(torch.as_tensor(xs[row:row + 1])), torch.as_tensor(ys[row:row + 1])).backward()
        reserved = model[0].weight.grad[:, canaries.reserved]
        touched = set(torch.nonzero(reserved.abs().sum(0)).flatten().tolist())
        assert touched == (set() if which[row] < 0 else {int(which[row])})


def _train(variant_loader, *, sigma, steps, canaries=40, seed=0, lr=0.5, batch=16):
    """A user's Opacus loop on random tabular data; returns (audit, presence counts [T, m], accountant)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=120)
    audit = RecordAudit(n_features=5, n_classes=3, canaries=canaries, seed=seed, value=8.0)
    dataset = audit.wrap(torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y)))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(audit.width, 6), nn.Tanh(), nn.Linear(6, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    engine = PrivacyEngine(accountant="prv")
    loader = variant_loader(dataset, batch)
    model, optimizer, loader = engine.make_private(module=model, optimizer=optimizer, data_loader=loader,
                                                   noise_multiplier=sigma, max_grad_norm=0.7,
                                                   poisson_sampling=True)
    audit.attach(model, optimizer)
    counts = []
    t = 0
    while t < steps:
        for xb, yb in loader:
            c = np.zeros(canaries)
            hits = (xb[:, audit.canaries.reserved] != 0).nonzero()
            for row, col in hits.tolist():
                c[col] += 1
            counts.append(c)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            t += 1
            if t == steps:
                break
    return audit, np.stack(counts), engine.accountant


def test_readings_are_presence_times_expected_contribution_without_noise():
    audit, counts, _ = _train(lambda ds, b: torch.utils.data.DataLoader(ds, batch_size=b), sigma=0.0, steps=25)
    r = audit.readings
    assert r.steps == 25
    assert counts[:, ~audit.members].sum() == 0  # non-members never in a batch
    assert counts.sum() > 10
    np.testing.assert_allclose(r.projections, counts * r.signals, atol=2e-5)
    assert np.abs(r.off_direction).max() < 1e-8  # nothing off the expected direction
    assert (r.signals <= 0.7 + 1e-6).all() and r.signals.mean() > 0.5


def test_scores_against_references():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5))
    r = rec.RecordReadings(projections=x, signals=np.full((12, 5), 2.0), off_direction=np.zeros((12, 5)),
                           members=np.array([1, 0, 1, 0, 1], bool), max_grad_norm=2.0, block_size=3)
    np.testing.assert_allclose(rec.likelihood_ratio(r, sample_rate=0.1, noise_multiplier=1.3),
                               iterate_scores.likelihood_ratio(x, sample_rate=0.1, noise_multiplier=1.3,
                                                               max_grad_norm=2.0))
    s = np.full((12, 5), 2.0)
    z = (2 * x * s - s * s) / (2 * (1.3 * 2.0) ** 2)
    want = sum(np.log(np.exp(z[e:e + 5]).mean(axis=0)) for e in (0, 5, 10))  # epochs of 5, 5 and 2 steps
    np.testing.assert_allclose(rec.epoch_likelihood_ratio(r, steps_per_epoch=5, noise_multiplier=1.3), want)
    np.testing.assert_allclose(rec.projection_sum(r), x.sum(0))


def _simulate_correct(rng, m, steps, q, sigma, c=1.0):
    members = rng.random(m) < 0.5
    signals = c * rng.uniform(0.3, 1.0, size=(steps, m))  # a record canary's clipped block: below C
    present = (rng.random((steps, m)) < q) & members
    x = present * signals + rng.normal(0, sigma * c, size=(steps, m))
    return rec.RecordReadings(projections=x, signals=signals, off_direction=np.zeros((steps, m)), members=members,
                              max_grad_norm=c, block_size=1)


def test_soundness_simulated_correct_poisson_never_exceeds_claim():
    """Correct Poisson DP-SGD at claimed epsilon 2 (sigma 0.9, q 0.05, T 100): ten audits,
    none flagged; the same design with a 4x sampling rate is flagged (the test can fail)."""
    from audit.stats import claimed_epsilon

    q, steps, sigma = 0.05, 100, 0.9
    claim = claimed_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5).value
    rng = np.random.default_rng(7)
    for _ in range(10):
        res = analyse(_simulate_correct(rng, 1000, steps, q, sigma), sigma=sigma, sample_rate=q, steps=steps,
                      delta=1e-5, steps_per_epoch=20, statistics=("likelihood-ratio", "epoch-likelihood-ratio"),
                      effective=False)
        assert res.verdict != "VIOLATION", res.flagged_by
        assert res.epsilon_lower_bound <= claim
    bug = analyse(_simulate_correct(rng, 1000, steps, 4 * q, sigma), sigma=sigma, sample_rate=q, steps=steps,
                  delta=1e-5, statistics=("likelihood-ratio",), effective=False)
    assert bug.verdict == "VIOLATION" and bug.claim_rejected


def test_an_infinite_claim_is_inconclusive_not_a_pass():
    """The rules of dpaudit run: an accountant that states epsilon = inf cannot be contradicted,
    even where the design could reject the curve of its (sigma, q, T)."""
    q, steps, sigma = 0.05, 100, 0.9
    readings = _simulate_correct(np.random.default_rng(7), 1000, steps, q, sigma)

    class InfiniteClaim:
        history = [(sigma, q, steps)]

        def get_epsilon(self, delta):
            return float("inf")

    res = analyse(readings, sigma=sigma, sample_rate=q, steps=steps, delta=1e-5, effective=False,
                  accountant=InfiniteClaim())
    assert res.verdict == "INCONCLUSIVE" and res.exit_code == 1
    finite = analyse(readings, sigma=sigma, sample_rate=q, steps=steps, delta=1e-5, effective=False)
    assert finite.verdict == "NO VIOLATION DETECTED"  # the same readings against the finite claim pass


def test_refusals():
    audit = RecordAudit(n_features=3, n_classes=2, canaries=4, seed=0)
    model = nn.Linear(audit.width, 2)
    with pytest.raises(InputError, match="SGD without momentum"):
        audit.attach(model, torch.optim.Adam(model.parameters()), max_grad_norm=1.0)
    with pytest.raises(InputError, match="SGD without momentum"):
        audit.attach(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), max_grad_norm=1.0)
    with pytest.raises(InputError, match="exactly one"):
        rec.find_first_layer(nn.Sequential(nn.Linear(audit.width, 3), nn.Linear(3, audit.width),
                                           nn.Linear(audit.width, 2)), audit.width)
    with pytest.raises(InputError, match="exactly one of"):
        audit.finish(delta=1e-5)
    with pytest.raises(InputError, match="canaries"):
        RecordAudit(n_features=3, n_classes=2, canaries=1)
    with pytest.raises(InputError, match="expected float"):
        audit.canaries.pad(np.zeros((2, 4)))


def test_design_is_deterministic_from_seed():
    a = rec.RecordCanaries.make(4, 200, n_classes=5, seed=11)
    b = rec.RecordCanaries.make(4, 200, n_classes=5, seed=11)
    c = rec.RecordCanaries.make(4, 200, n_classes=5, seed=12)
    assert (a.members == b.members).all() and (a.labels == b.labels).all()
    assert (a.members != c.members).any()
    assert 60 < a.members.sum() < 140


def test_quick_experiment_flags_the_rate_bug_not_the_poisson_loader():
    from experiments.pipeline_canaries import QUICK, run_one

    torch.set_num_threads(1)
    correct = run_one("poisson", QUICK.epsilons[0], QUICK.seeds[0], QUICK)
    assert correct["verdict"] != "VIOLATION", correct["flagged_by"]
    assert correct["bound"] <= correct["accountant_epsilon"]
    bug = run_one("weighted", QUICK.epsilons[0], QUICK.seeds[0], QUICK)
    assert bug["verdict"] == "VIOLATION", (bug["claim_p_value"], bug["statistics"])


class _TwoLayer(nn.Module):
    """Not an nn.Sequential: the generic path (every parameter differentiated per canary)."""

    def __init__(self, width):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_generic_path_with_bias_matches_autograd():
    canaries = rec.RecordCanaries.make(5, 9, n_classes=3, seed=4, value=3.0)
    torch.manual_seed(5)
    model = _TwoLayer(canaries.width)
    for c in (0.05, 100.0):
        got = rec.expected_contributions(model, model.fc1.weight, canaries, loss_fn=nn.functional.cross_entropy,
                                         max_grad_norm=c)
        torch.testing.assert_close(got, _reference_contributions(model, canaries, c, model.fc1.weight),
                                   atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layers", ["linear", "sequential"])
def test_fast_path_matches_autograd(layers):
    """The fast path (a model that starts with the nn.Linear) against the per-record loop."""
    canaries = rec.RecordCanaries.make(5, 9, n_classes=3, seed=2, value=5.0, base=np.linspace(-1, 1, 5))
    torch.manual_seed(3)
    if layers == "linear":
        model = nn.Sequential(nn.Linear(canaries.width, 3))
        plain = model[0]
    else:
        model = plain = nn.Sequential(nn.Linear(canaries.width, 4), nn.Tanh(), nn.Linear(4, 3))
    assert rec._after_first_layer(rec.hook_free_copy(plain), plain, plain[0].weight if layers != "linear"
                                  else plain.weight) is not None
    for c in (0.05, 100.0):
        got = rec.expected_contributions(plain, plain.weight if layers == "linear" else plain[0].weight, canaries,
                                         loss_fn=nn.functional.cross_entropy, max_grad_norm=c)
        want = _reference_contributions(model, canaries, c)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
