"""experiments.defences: every row's config is valid and comparable; the --quick run writes
the table, figure and JSON from the audits' own reports, and a second run resumes."""

import json

import pytest

from audit.report import load_report
from experiments import defences as D

pytestmark = [pytest.mark.filterwarnings("ignore:Secure RNG"), pytest.mark.filterwarnings("ignore:Optimal order")]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_rows_share_data_model_and_audit(tmp_path):
    configs = {d.slug: D.config_for(d, tmp_path) for d in D.DEFENCES}
    assert len(configs) == len(D.DEFENCES) and len({d.label for d in D.DEFENCES}) == len(D.DEFENCES)
    base = configs["none-plain"]
    assert base.trainer.kind == "plain" and base.mode == "non-dp" and not base.defence.active
    for slug, c in configs.items():
        # the fairness the comparison rests on: same data, canaries, K, seed and SGD settings
        assert (c.data, c.audit, c.seed) == (base.data, base.audit, base.seed), slug
        assert c.model.widths == base.model.widths and (c.trainer.epochs, c.trainer.lr) == (base.trainer.epochs, base.trainer.lr)
        assert c.output_dir == str(tmp_path / slug)
    assert {"lira-online-fixed", "label-only", "loss"} <= set(base.audit.attacks)
    assert 16 <= base.audit.models <= 32  # enough shadows for LiRA
    assert configs["dropout"].model.dropout > 0 and configs["distillation"].defence.distillation
    assert configs["top-1"].defence.top_k == 1 and configs["rounding"].defence.decimals >= 0
    assert configs["label-output"].defence.label_only
    dp = [c for c in configs.values() if c.mode == "dp"]
    assert len(dp) >= 3 and all(c.trainer.kind == "fast" for c in dp)
    assert len({c.dp.target_epsilon for c in dp}) == len(dp)
    # each trainer has its undefended baseline
    assert configs["none-fast"].trainer.kind == "fast" and configs["none-fast"].mode == "non-dp"


def test_quick_writes_results_from_the_reports_and_resumes(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert D.main(["--quick", "--runs", str(runs), "--out", str(out)]) == 0
    assert (out / "defences.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "defences.png").read_bytes() == (runs / "report" / "comparison.png").read_bytes()
    payload = json.loads((out / "defences.json").read_text())
    rows = {r["slug"]: r for r in payload["rows"]}
    assert list(rows) == [d.slug for d in D.DEFENCES if d.slug in D.QUICK_ROWS]
    text = (out / "defences.md").read_text()
    assert "2 CPU cores" in text and "python -m experiments.defences --quick" in text
    assert "![privacy against utility](defences.png)" in text
    for slug, r in rows.items():
        report = load_report(runs / slug)
        lira = report["attacks"]["lira-online-fixed"]
        assert r["lira"]["auc"] == pytest.approx(lira["auc"])
        tpr = next(p["tpr"] for p in lira["tpr_at_fpr"] if p["target_fpr"] == 0.001)
        assert r["lira"]["tpr_at_0.1%"]["tpr"] == pytest.approx(tpr)
        assert r["test_accuracy"] == pytest.approx(report["utility"]["test_accuracy"])
        assert 0.0 <= r["epsilon_lower_bound"] <= r["power"]
        assert f"| {r['defence']} | {r['setting']} | {r['trainer']} |" in text
    assert rows["dp-eps4"]["claimed_epsilon"] == pytest.approx(4.0, rel=0.05)
    assert rows["none-plain"]["claimed_epsilon"] is None and rows["none-fast"]["trainer"] == "fast"
    # a second run resumes: the observations are not rewritten, the numbers are the same
    observations = runs / "none-plain" / "observations"
    before = {p: p.stat().st_mtime_ns for p in observations.rglob("*") if p.is_file()}
    reports, again = D.run_all([D.DEFENCES[0]], runs, D.QUICK_OVERRIDES)
    assert {p: p.stat().st_mtime_ns for p in observations.rglob("*") if p.is_file()} == before
    assert again[0]["lira"]["auc"] == rows["none-plain"]["lira"]["auc"]


def test_bad_input_is_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert D.main(["--quick", "--runs", str(blocker)]) == 2
    assert D.main(["--quick", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2
