"""Canary rows reserved in Opacus' per-sample gradient hooks (canaries.reserved_rows).

The reference is the canary optimizer with the reservation switched off, which pads every
per-sample gradient after the backward pass (the values ``torch.cat`` gives): the same
user script, seeds and data must give bit-identical readings, presence and weights, while
no real per-sample gradient is copied a second time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from torch import nn

import opacus.grad_sample.grad_sample_module as gsm
from audit import attach_audit
from canaries import reserved_rows
from tests.test_attach import MODELS, train_loop, user_script

pytestmark = [pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
              pytest.mark.filterwarnings("ignore:Full backward hook is firing")]
OPACUS_OWN = gsm.create_or_accumulate_grad_sample


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target)


def _run(digits, *, reserve: bool, monkeypatch, **kwargs):
    with monkeypatch.context() as patch:
        if not reserve:
            patch.setattr(reserved_rows, "reserve", lambda *args, **kw: None)
        run, _, net, optimizer, _ = user_script(digits, n=256, batch_size=32, epochs=1, canaries=300, finish=False,
                                                **kwargs)
        copied = [p for p in optimizer.params if id(p) in optimizer._canary_buffers
                  and not getattr(p, "canary_slot", False)]
        obs = optimizer.canary_observations()
        optimizer._canary_unreserve()  # what finish does when it detaches the canaries
    return obs, [p.detach().clone() for p in net.parameters()], len(copied)


@pytest.mark.parametrize("model, mode, physical_batch", [
    ("mlp", "hooks", None), ("cnn", "hooks", None), ("mlp", "functorch", None), ("cnn", "hooks", 8)])
def test_reserved_rows_give_the_run_that_padding_gives(digits, monkeypatch, model, mode, physical_batch):
    kwargs = dict(model=model, mode=mode, physical_batch=physical_batch)
    reserved, weights, copied = _run(digits, reserve=True, monkeypatch=monkeypatch, **kwargs)
    padded, weights_padded, copied_padded = _run(digits, reserve=False, monkeypatch=monkeypatch, **kwargs)
    assert reserved.presence.sum() > 0 and reserved.readings.shape == padded.readings.shape
    np.testing.assert_array_equal(reserved.presence, padded.presence)
    np.testing.assert_array_equal(reserved.readings, padded.readings)
    assert all(torch.equal(a, b) for a, b in zip(weights, weights_padded))
    assert copied == 0 and copied_padded > 0  # the reservation is what removed the copy
    assert gsm.create_or_accumulate_grad_sample is OPACUS_OWN


def test_expanded_weights_are_padded_after_the_backward(digits, monkeypatch):
    """"ew" computes per-sample gradients without Opacus' hooks: nothing is reserved, the
    rows are padded as before and the run is the same."""
    reserved, weights, copied = _run(digits, reserve=True, monkeypatch=monkeypatch, mode="ew")
    padded, weights_padded, _ = _run(digits, reserve=False, monkeypatch=monkeypatch, mode="ew")
    np.testing.assert_array_equal(reserved.readings, padded.readings)
    assert copied > 0


def test_other_models_and_finished_audits_get_opacus_own_rows(digits):
    """While one optimizer carries canaries, another model's per-sample gradients in the same
    process have exactly the batch's rows; after finish Opacus' own function is back."""
    x, y = digits

    def private(seed):
        torch.manual_seed(seed)
        net = MODELS["mlp"]()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:256], y[:256]), batch_size=32)
        engine = PrivacyEngine()
        net, opt, loader = engine.make_private(module=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                                               data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)
        return net, opt, loader, engine

    audited, opt, loader, engine = private(0)
    run = attach_audit(opt, canaries=1000, seed=0)
    assert gsm.create_or_accumulate_grad_sample is not OPACUS_OWN
    other, other_opt, _, _ = private(1)
    other_opt.zero_grad()
    nn.functional.cross_entropy(other(x[:20]), y[:20]).backward()
    assert all(p.grad_sample.shape[0] == 20 and reserved_rows.reserved_rows(p.grad_sample) == 0
               for p in other_opt.params)
    # the audited model, on a batch where canaries are present, carries their rows
    opt._canary_plan = torch.zeros(1000, dtype=torch.bool)
    opt._canary_plan[:3] = True
    opt._canary_plan_rows = 3
    opt.zero_grad()
    nn.functional.cross_entropy(audited(x[:20]), y[:20]).backward()
    assert all(p.grad_sample.shape[0] == 23 and reserved_rows.reserved_rows(p.grad_sample) == 3
               and torch.count_nonzero(p.grad_sample[20:]) == 0 for p in opt.params if not getattr(p, "canary_slot", 0))
    opt.step()
    assert opt.canary_observations().presence[0, :3].all()
    train_loop(audited, opt, loader, 1)
    run.finish(accountant=engine.accountant, delta=1e-5)
    assert gsm.create_or_accumulate_grad_sample is OPACUS_OWN
    opt.zero_grad()
    nn.functional.cross_entropy(audited(x[:20]), y[:20]).backward()
    assert all(p.grad_sample.shape[0] == 20 for p in opt.params)



def test_an_opacus_without_the_allocation_function_reserves_nothing(monkeypatch):
    """Reservation depends on one Opacus module function; where it is missing, reserve()
    registers nothing and patches nothing, and the canary optimizer pads after the backward
    pass (the path test_reserved_rows_give_the_run_that_padding_gives checks with reserve off)."""
    param = nn.Parameter(torch.zeros(3))
    monkeypatch.delattr(gsm, "create_or_accumulate_grad_sample")
    reserved_rows.reserve(object.__new__(nn.Module), [param])
    assert not hasattr(gsm, "create_or_accumulate_grad_sample")
    assert reserved_rows._owner(param) is None
