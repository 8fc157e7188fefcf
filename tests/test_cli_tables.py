"""What the terminal says: an FPR that the non-members scored cannot measure is never quoted."""

from audit.cli._audit import attack_lines
from audit.cli.evaluate import _table
from audit.evaluation import LeaveOneOutScores, summarize_scores


def _row(target_fpr, tpr, n_nonmembers):
    return {"target_fpr": target_fpr, "tpr": tpr, "tpr_interval": [0.0, 1.0], "n_nonmembers": n_nonmembers}


def test_run_table_marks_unmeasurable_fprs():
    report = {"attacks": {
        "loss": {"auc": 0.9, "tpr_at_fpr": [_row(0.1, 0.5, 500), _row(0.001, 0.25, 500)]},
        "rmia": {"auc": 0.8, "tpr_at_fpr": [_row(0.1, 0.4, 500), _row(0.001, 0.125, 500)]},
    }}
    lines = attack_lines(report)
    assert lines[0].split() == ["attack", "AUC", "TPR@10%", "TPR@0.1%"]
    assert lines[1].split() == ["loss", "0.900", "50.0%", "-"]  # 500 * 0.001 < 1: not a measurement
    assert lines[2].split() == ["rmia", "0.800", "40.0%", "-"]
    assert "1/500" in lines[-1] and "25.0%" not in "".join(lines)
    report["attacks"]["loss"]["tpr_at_fpr"][1]["n_nonmembers"] = 1000  # now exactly measurable
    assert attack_lines(report)[1].split()[-1] == "25.0%"
    assert attack_lines({"attacks": {}}) == [] and attack_lines({}) == []


def test_evaluate_table_marks_unmeasurable_fprs():
    import numpy as np

    rng = np.random.default_rng(0)
    members = np.arange(400) < 200
    scores = rng.normal(size=400) + members
    loo = LeaveOneOutScores(method="loss", targets=np.array([0]), scores=scores[None], members=members[None],
                            audited=np.ones(400, bool))
    ev = summarize_scores(loo, fprs=(0.1, 0.001))
    text = _table({"loss": ev}, {}, 5)
    row = next(line for line in text.splitlines() if line.startswith("loss"))
    assert row.split()[-1] == "-" and "[" in row  # 10% measured with its interval, 0.1% not
    assert "1/200" in text
