"""audit.report: comparison of several runs and the privacy-utility Pareto front."""

import copy
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from audit.errors import InputError
from audit.report import compare_reports, load_report, pareto_front

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- pareto_front on hand-made points ---------------------------------------------------


def test_pareto_front_hand_made():
    utility = [0.90, 0.80, 0.70, 0.90, None, 0.60, 0.85]
    leakage = [0.50, 0.10, 0.20, 0.50, 0.00, 0.05, float("nan")]
    # (0.7, 0.2) is dominated by (0.8, 0.1); the two identical (0.9, 0.5) do not dominate each other;
    # runs with a missing coordinate are never placed.
    assert pareto_front(utility, leakage) == [True, True, False, True, False, True, False]


def test_pareto_front_ties_on_one_axis():
    # same accuracy, lower leakage wins; same leakage, higher accuracy wins
    assert pareto_front([0.7, 0.7], [0.1, 0.2]) == [True, False]
    assert pareto_front([0.6, 0.7], [0.1, 0.1]) == [False, True]
    assert pareto_front([], []) == []


def test_pareto_front_length_mismatch():
    with pytest.raises(InputError, match="differ in length"):
        pareto_front([0.1, 0.2], [0.1])


def naive_front(points):
    """Reference: a point is on the front iff no other point is >= in utility, <= in leakage, and differs."""
    return [not any(u2 >= u and l2 <= l and (u2, l2) != (u, l) for u2, l2 in points) for u, l in points]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=12))
def test_pareto_front_matches_reference(points):
    front = pareto_front([p[0] for p in points], [p[1] for p in points])
    assert front == naive_front(points)
    if points:
        assert any(front)  # a finite non-empty set always has a non-dominated point
    on = [p for p, f in zip(points, front) if f]
    for a, b in itertools.product(on, on):  # front points are mutually non-dominating
        assert not (b[0] >= a[0] and b[1] <= a[1] and b != a)


# --- compare_reports on modified copies of the fixture ----------------------------------


def variant(base, name, *, test_accuracy, lira_tpr, loss_tpr=0.001, bound):
    report = copy.deepcopy(base)
    report["name"] = name
    report["utility"]["test_accuracy"] = test_accuracy
    for attack, tpr in (("lira-online", lira_tpr), ("loss", loss_tpr)):
        point = next(p for p in report["attacks"][attack]["tpr_at_fpr"] if p["target_fpr"] == 0.001)
        point["tpr"] = tpr
    report["bounds"][0]["epsilon_lower_bound"] = bound
    return report


@pytest.fixture
def runs():
    base = load_report(FIXTURE)
    return [
        # lowest TPR and lowest bound, least accurate: on both fronts
        variant(base, "dp-eps1", test_accuracy=0.60, lira_tpr=0.002, bound=0.05),
        # most accurate: on both fronts; here the loss attack is the strongest
        variant(base, "dp-eps8", test_accuracy=0.70, lira_tpr=0.004, loss_tpr=0.005, bound=0.50),
        # less accurate and leakier than dp-eps8 by TPR, but a lower bound than it: epsilon front only
        variant(base, "defence", test_accuracy=0.65, lira_tpr=0.010, bound=0.30),
    ]


def comparison_rows(markdown):
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]


def test_comparison_rows_and_pareto_marks(runs, tmp_path):
    paths = compare_reports(runs, tmp_path)
    assert sorted(p.name for p in paths) == ["comparison.md", "comparison.png"]
    rows = {r["run"]: r for r in comparison_rows((tmp_path / "comparison.md").read_text())}
    assert list(rows) == ["dp-eps1", "dp-eps8", "defence"]
    assert rows["dp-eps1"]["Pareto front"] == "TPR, epsilon"
    assert rows["dp-eps8"]["Pareto front"] == "TPR, epsilon"
    assert rows["defence"]["Pareto front"] == "epsilon"
    assert rows["dp-eps8"]["strongest attack"] == "loss" and rows["dp-eps8"]["AUC (same attack)"] == "0.51"
    assert rows["dp-eps8"]["TPR at 0.1% FPR"] == "0.5% [0.01%, 0.4%]"  # interval as given by the report
    assert rows["defence"]["strongest attack"] == "lira-online"
    assert rows["defence"]["best epsilon lower bound"] == "0.3"
    assert rows["defence"]["test accuracy"] == "65%"
    assert rows["dp-eps1"]["claimed epsilon"] == "2.31" and rows["dp-eps1"]["mode"] == "dp"
    assert rows["dp-eps1"]["verdict"] == "NO VIOLATION DETECTED"


def test_comparison_png_is_valid(runs, tmp_path):
    compare_reports(runs, tmp_path)
    data = (tmp_path / "comparison.png").read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000


def test_comparison_with_a_non_dp_run(runs, tmp_path):
    plain = copy.deepcopy(runs[0])
    plain.update(name="plain", mode="non-dp", bounds=[], estimates=[], claimed={"epsilon": None},
                 verdict={"decision": "REPORTED"})
    plain["utility"]["test_accuracy"] = 0.9
    plain["attacks"]["lira-online"]["tpr_at_fpr"][2]["tpr"] = 0.15  # more accurate and much leakier
    compare_reports([*runs, plain], tmp_path)
    rows = {r["run"]: r for r in comparison_rows((tmp_path / "comparison.md").read_text())}
    assert rows["plain"]["claimed epsilon"] == "-" and rows["plain"]["best epsilon lower bound"] == "-"
    assert rows["plain"]["Pareto front"] == "TPR"  # most accurate; no bound, so not placed on the epsilon panel
    assert rows["dp-eps8"]["Pareto front"] == "TPR, epsilon"


def test_comparison_needs_reports(tmp_path):
    with pytest.raises(InputError, match="reports"):
        compare_reports([], tmp_path)
    with pytest.raises(InputError, match="reports"):
        compare_reports(load_report(FIXTURE), tmp_path)


def test_unnamed_runs_get_numbers(runs, tmp_path):
    for r in runs:
        del r["name"]
    compare_reports(runs, tmp_path)
    names = [r["run"] for r in comparison_rows((tmp_path / "comparison.md").read_text())]
    assert names == ["run 1", "run 2", "run 3"]
    assert not re.search(r"\bNone\b", (tmp_path / "comparison.md").read_text())
