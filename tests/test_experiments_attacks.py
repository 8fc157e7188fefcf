"""Smoke test of ``python -m experiments.attacks_purchase --quick`` and its determinism."""

import json
from dataclasses import replace

import numpy as np

from experiments.attacks_purchase import ATTACKS, CURVE_ATTACKS, QUICK, build_observations, main, shadow_count_curve


def test_quick_run_writes_tables_and_figures(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ATTACKS:
        assert f"| {name} " in out
    data = json.loads((tmp_path / "attacks_purchase.json").read_text())
    assert set(data["attacks"]) == set(ATTACKS)
    n = QUICK.n_models * QUICK.n_audited
    for name, result in data["attacks"].items():
        targets = QUICK.shokri_targets if name == "shokri" else QUICK.n_models
        assert result["targets"] == list(range(targets))
        assert result["members"] + result["non_members"] == targets * QUICK.n_audited
        if name != "shokri":  # over every model: each audited record is IN for exactly half
            assert result["members"] == result["non_members"] == n // 2
        assert 0.0 <= result["auc"] <= 1.0
        assert [p["target_fpr"] for p in result["tpr_at_fpr"]] == [0.1, 0.01, 0.001, 0.0001]
    assert data["attacks"]["loss"]["auc"] > 0.5  # the quick models are overfit
    curve = {(p["method"], p["shadows"]): p for p in data["shadow_count"]}
    assert set(curve) == {(m, k) for m in CURVE_ATTACKS for k in QUICK.shadow_counts}
    # all K - 1 shadows: the same pairs and AUC as the leave-one-out table
    k_all = QUICK.n_models - 1
    for m in CURVE_ATTACKS:
        assert curve[(m, k_all)]["coverage"] == 1.0
        assert abs(curve[(m, k_all)]["auc"] - data["attacks"][m]["auc"]) < 1e-12
    for name in ("attacks_purchase.md", "attacks_purchase.png", "attacks_shadow_count.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_same_seed_same_numbers():
    tiny = replace(QUICK, n_models=4, n_audited=200, n_population=40, hidden=16, epochs=3.0, shadow_counts=(2, 3))
    (a, _), (b, _) = build_observations(tiny), build_observations(tiny)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.keep, b.keep)
    assert a.keep[:, : tiny.n_audited].sum(0).tolist() == [2] * tiny.n_audited
    assert not a.keep[:, tiny.n_audited :].any()
    pa, pb = (shadow_count_curve(a, (2, 3), ("lira-offline",), seed=1) for _ in range(2))
    assert [p.evaluation.auc for p in pa] == [p.evaluation.auc for p in pb]
