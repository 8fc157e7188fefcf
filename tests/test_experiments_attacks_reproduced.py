"""Smoke test of ``python -m experiments.attacks_reproduced --quick``; the split keeps the
offline references away from every audited record."""

import json
from dataclasses import replace

import numpy as np
import pytest

from audit.errors import InputError
from experiments.attack_bench import ATTACKS, CURVE_ATTACKS, NEEDS_IN, MLPTraining
from experiments.attacks_reproduced import OFFLINE_ATTACKS, QUICK, build, main, make_split, offline_reference_scores


def test_quick_run_writes_report_json_and_figures(tmp_path, capsys):
    assert main(["--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "## Offline attacks with references that never saw the audited records" in out
    data = json.loads((tmp_path / "attacks_reproduced.json").read_text())
    assert set(data["datasets"]) == {s.name for s in QUICK}
    for s in QUICK:
        d = data["datasets"][s.name]
        assert set(d["attacks"]) == set(ATTACKS)
        assert d["attacks"]["loss"]["members"] == d["attacks"]["loss"]["non_members"] == s.n_models * s.n_audited // 2
        assert d["attacks"]["shokri"]["targets"] == list(range(s.shokri_targets))
        # the faithful offline run: every target, every audited record
        assert set(d["offline_references"]) == {*OFFLINE_ATTACKS, "rmia-fraction-only"}
        for ev in d["offline_references"].values():
            assert ev["members"] + ev["non_members"] == s.n_models * s.n_audited
        curve = {(p["method"], p["shadows"]): p for p in d["shadow_count"]}
        expected = {(m, k) for m in CURVE_ATTACKS for k in s.shadow_counts if not (m in NEEDS_IN and k < 2)}
        assert set(curve) == expected
        for m in CURVE_ATTACKS:
            k_all = s.n_models - 1
            assert curve[(m, k_all)]["coverage"] == 1.0
            assert curve[(m, k_all)]["targets"] == list(range(s.curve_targets))
        assert 0.0 < curve[("lira-offline", 1)]["coverage"] < 1.0  # one shadow is OUT for about half
    for name in ("attacks_reproduced.md", "attacks_reproduced_shadow_count.png",
                 *(f"attacks_reproduced_{s.name}.png" for s in QUICK)):
        assert (tmp_path / name).stat().st_size > 0


def test_split_is_disjoint_and_references_never_see_audited_records():
    s = QUICK[0]
    split = make_split(s, 2000, [1, 2, 3, 4, 5])
    assert not (split.audited & split.population).any() and not (split.audited & split.reference_pool).any()
    assert not (split.population & split.reference_pool).any()
    assert (split.audited.sum(), split.population.sum(), split.reference_pool.sum()) == (
        s.n_audited, s.n_population, s.n_reference_pool)
    targets, refs = split.keep[: s.n_models], split.keep[s.n_models :]
    assert refs.shape[0] == s.n_references
    assert not refs[:, ~split.reference_pool].any()  # references: reference pool only
    assert not targets[:, ~split.audited].any()  # targets: audited records only
    assert (targets[:, split.audited].sum(0) == s.n_models // 2).all()
    assert (refs[:, split.reference_pool].sum(0) == s.n_references // 2).all()
    with pytest.raises(InputError):
        make_split(s, s.n_audited, [1, 2, 3, 4, 5])


def test_offline_scores_refuse_references_trained_on_audited_records_and_are_deterministic():
    tiny = replace(QUICK[2], n_models=2, n_audited=100, n_population=40, n_reference_pool=100, n_references=2,
                   training=MLPTraining((16,), 3.0, 0.05, 0.9, 16))
    (t1, r1, _), (t2, r2, _) = build(tiny, 3), build(tiny, 3)
    np.testing.assert_array_equal(t1.logits, t2.logits)
    np.testing.assert_array_equal(r1.logits, r2.logits)
    a = offline_reference_scores(t1, r1, ("lira-offline",))["lira-offline"]
    b = offline_reference_scores(t2, r2, ("lira-offline",))["lira-offline"]
    assert a.auc == b.auc
    leaky = replace(r1, keep=r1.keep | ~r1.population_mask[None, :])
    with pytest.raises(InputError):
        offline_reference_scores(t1, leaky, ("lira-offline",))


def test_unknown_dataset_is_bad_input(capsys):
    assert main(["--quick", "--datasets", "purchase,nope"]) == 2
    assert "expected a comma-separated subset" in capsys.readouterr().err
