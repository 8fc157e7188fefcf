"""Tests for trainers.plain against a numpy gradient-descent reference written here."""

import numpy as np
import pytest
import torch

from audit.errors import InputError
from trainers.data import Dataset, load_dataset, split_dataset
from trainers.models import build_model
from trainers.plain import PlainConfig, accuracy, predict_logits, train_distilled, train_plain

torch.set_num_threads(1)


def _toy(n=40, d=3, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, c, size=n).astype(np.int64)
    return Dataset(x=x, y=y, n_classes=c, name="toy")


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _numpy_gd(w, b, x, target, *, steps, lr, wd, logit_scale=1.0, loss_scale=1.0):
    """Full-batch GD on loss_scale * mean CE(target, softmax((xW^T + b) / logit_scale)) + torch-style L2."""
    w, b = w.astype(np.float64).copy(), b.astype(np.float64).copy()
    for _ in range(steps):
        q = _softmax((x @ w.T + b) / logit_scale)
        grad_z = loss_scale * (q - target) / logit_scale / len(x)
        w -= lr * (grad_z.T @ x + wd * w)
        b -= lr * (grad_z.sum(axis=0) + wd * b)
    return w, b


@pytest.mark.parametrize("wd,smooth", [(0.0, 0.0), (0.1, 0.0), (0.0, 0.2), (0.05, 0.1)])
def test_full_batch_sgd_matches_numpy(wd, smooth):
    ds = _toy()
    model = build_model("logreg", ds.in_shape, 3, generator=torch.Generator().manual_seed(0))
    w0 = model.linear.weight.detach().numpy().copy()
    b0 = model.linear.bias.detach().numpy().copy()
    cfg = PlainConfig(epochs=5, batch_size=len(ds), lr=0.5, weight_decay=wd, label_smoothing=smooth)
    res = train_plain(model, ds, config=cfg, seed=1)
    target = (1 - smooth) * np.eye(3)[ds.y] + smooth / 3
    w, b = _numpy_gd(w0, b0, ds.x.astype(np.float64), target, steps=5, lr=0.5, wd=wd)
    np.testing.assert_allclose(model.linear.weight.detach().numpy(), w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.linear.bias.detach().numpy(), b, rtol=1e-4, atol=1e-5)
    naive_acc = np.mean(np.argmax(ds.x @ w.T + b, axis=1) == ds.y)
    assert res.train_accuracy == pytest.approx(naive_acc)
    assert res.epochs_run == 5 and res.test_accuracy is None


def test_distillation_matches_soft_label_gradient():
    ds = _toy(seed=1)
    teacher_logits = np.random.default_rng(2).normal(size=(len(ds), 3)) * 3
    student = build_model("logreg", ds.in_shape, 3, generator=torch.Generator().manual_seed(0))
    w0 = student.linear.weight.detach().numpy().copy()
    b0 = student.linear.bias.detach().numpy().copy()
    t = 3.0
    cfg = PlainConfig(epochs=4, batch_size=len(ds), lr=0.2)
    res = train_distilled(student, ds.x, teacher_logits, temperature=t, config=cfg, seed=0, train=ds, test=ds)
    w, b = _numpy_gd(w0, b0, ds.x.astype(np.float64), _softmax(teacher_logits / t), steps=4, lr=0.2, wd=0.0,
                     logit_scale=t, loss_scale=t**2)
    np.testing.assert_allclose(student.linear.weight.detach().numpy(), w, rtol=1e-4, atol=1e-5)
    assert res.test_accuracy == res.train_accuracy
    with pytest.raises(InputError, match="teacher_logits has shape"):
        train_distilled(student, ds.x, teacher_logits[:5], temperature=t, config=cfg, seed=0, train=ds)


def test_early_stopping_restores_best_epoch():
    x = _toy(n=60).x
    ds = Dataset(x=x, y=(x[:, 0] > 0).astype(np.int64), n_classes=2, name="separable")
    # validation = the training inputs with flipped labels: its loss rises as training fits
    val = Dataset(x=ds.x, y=1 - ds.y, n_classes=2, name="flipped")
    model = build_model("logreg", ds.in_shape, 2, generator=torch.Generator().manual_seed(0))
    cfg = PlainConfig(epochs=30, batch_size=60, lr=0.5, patience=3)
    res = train_plain(model, ds, config=cfg, seed=0, val=val)
    assert res.best_epoch == 1 and res.epochs_run == 4 and len(res.val_losses) == 4
    assert np.all(np.diff(res.val_losses) > 0)
    logits = torch.as_tensor(predict_logits(model, val.x))
    restored = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(val.y)))
    assert restored == pytest.approx(res.val_losses[0], rel=1e-6)
    with pytest.raises(InputError, match="validation dataset"):
        train_plain(model, ds, config=cfg, seed=0)


def test_seeded_dropout_training_is_reproducible_and_leaves_global_rng():
    ds = _toy(n=64)
    cfg = PlainConfig(epochs=2, batch_size=16, lr=0.1, optimizer="adam")

    def run(seed):
        m = build_model("mlp", ds.in_shape, 3, generator=torch.Generator().manual_seed(0), widths=(16,), dropout=0.5)
        train_plain(m, ds, config=cfg, seed=seed)
        return torch.cat([p.detach().ravel() for p in m.parameters()])

    state = torch.get_rng_state()
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_digits_cnn_utility():
    ds = load_dataset("digits", seed=0)
    s = split_dataset(ds, pool=800, population=0, test=400, seed=0)
    model = build_model("cnn", ds.in_shape, 10, generator=torch.Generator().manual_seed(0))
    res = train_plain(model, s.pool, config=PlainConfig(epochs=4, batch_size=32, lr=0.01, optimizer="adam"),
                      seed=0, test=s.test)
    assert res.test_accuracy > 0.85 and res.train_accuracy >= res.test_accuracy - 0.05
    assert res.test_accuracy == accuracy(model, s.test)


def test_config_validation():
    with pytest.raises(InputError, match="optimizer='rmsprop'"):
        PlainConfig(optimizer="rmsprop")
    with pytest.raises(InputError, match="label_smoothing=1.0"):
        PlainConfig(label_smoothing=1.0)
    with pytest.raises(InputError, match="epochs=0"):
        PlainConfig(epochs=0)
