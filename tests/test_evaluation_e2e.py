"""End to end (slow): train small models on digits, record observations model by model,
evaluate the attacks leave-one-out. Uses trainers.* only to produce the observations."""

from __future__ import annotations

import numpy as np
import pytest

from audit.evaluation import evaluate_attacks
from audit.observations import ObservationRun, load_observations


@pytest.mark.slow
def test_attacks_detect_membership_of_overfit_mlps_on_digits(tmp_path):
    torch = pytest.importorskip("torch")
    from canaries.designs import lira_balanced
    from trainers.data import load_dataset
    from trainers.models import build_model
    from trainers.plain import PlainConfig, predict_logits, train_plain

    rng = np.random.default_rng(0)
    data = load_dataset("digits", seed=0, n=750)
    n_models = 8
    keep = np.zeros((n_models, len(data)), bool)
    keep[:, :600] = lira_balanced(n_models, 600, rng)  # the last 150 records: RMIA's population
    noise = rng.normal(scale=0.05, size=(3,) + data.x.shape).astype(np.float32)
    queries = np.concatenate([data.x[None], data.x[None] + noise])  # original + 3 noisy copies
    run = ObservationRun.create(tmp_path / "run", labels=data.y, metadata={"dataset": "digits", "trainer": "plain"})
    config = PlainConfig(epochs=40, batch_size=32, lr=1e-2, optimizer="adam")
    for m in range(run.n_models_done, n_models):
        model = build_model("mlp", data.in_shape, data.n_classes, generator=torch.Generator().manual_seed(m))
        train_plain(model, data.subset(keep[m]), config=config, seed=m)
        logits = np.stack([predict_logits(model, q) for q in queries], axis=1)  # [records, queries, classes]
        run.append(keep=keep[m], logits=logits)
    obs = load_observations(tmp_path / "run")
    ev = evaluate_attacks(obs, ["loss", "lira-online-fixed", "lira-offline", "rmia", "label-only"], fprs=(0.01,))
    for name, e in ev.items():
        print(name, round(e.auc, 3), e.tpr_at_fpr[0].tpr, e.tpr_at_fpr[0].tpr_interval)
    assert ev["loss"].auc > 0.55
    assert ev["lira-online-fixed"].auc > ev["loss"].auc
    assert ev["lira-online-fixed"].tpr_at_fpr[0].tpr > ev["loss"].tpr_at_fpr[0].tpr
