"""What roc.png and comparison.png draw: the ROC as the step function its markers read
from (tie blocks included, no zero pinned at the floor), and a comparison whose runs are
named by their differing settings, with even percent ticks and labels that do not overlap."""

import copy
import io
import re
from pathlib import Path

import numpy as np
import pytest

from audit.pipeline.analysis import _thin_roc
from audit.report import fields as F
from audit.report import figures, load_report
from audit.report.pareto import pareto_front
from audit.report.settings import differing_keys, setting_labels, short_names
from audit.stats.roc import roc_curve, tpr_at_fpr_from_curve

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"
FPRS = (0.1, 0.01, 0.001, 0.0001)


# --- roc.png ----------------------------------------------------------------------------


def attack_entry(scores, members, *, thin=True):
    """An attack as the pipeline writes it (report.json), from raw scores."""
    curve = roc_curve(scores, members)
    roc = _thin_roc(curve.fpr, curve.tpr) if thin else {"fpr": curve.fpr.tolist(), "tpr": curve.tpr.tolist()}
    return {"auc": 0.6, "n_members": curve.n_members, "n_nonmembers": curve.n_nonmembers,
            "tpr_at_fpr": [tpr_at_fpr_from_curve(curve, f).to_dict() for f in FPRS], "roc": roc}


def tied_top_scores(n=4000, seed=0):
    """The K = 8 lira-offline shape: 3% of the non-members and 2.6% of the members tied at
    the top score, then a continuous, mildly separating score."""
    rng = np.random.default_rng(seed)
    members = np.arange(n) % 2 == 0
    scores = rng.normal(size=n) + 0.3 * members
    tied = np.where(members, rng.random(n) < 0.026, rng.random(n) < 0.03)
    scores[tied] = 10.0
    return scores, members


def step_value(xs, ys, x):
    """The steps-post curve through (xs, ys) at x: the y of the last vertex at or left of x."""
    i = np.searchsorted(xs, x, side="right") - 1
    return ys[i] if i >= 0 else None


def drawn(report):
    fig = figures.plot_roc(F.attacks(report))
    ax = fig.axes[0]
    curves = {line.get_gid().split(":", 1)[1]: line for line in ax.get_lines()
              if (line.get_gid() or "").startswith("roc:")}
    markers = [line for line in ax.get_lines()  # the data points, not their interval caps
               if (line.get_gid() or "").startswith(("point:", "zero:")) and line.get_marker() in ("o", "v")]
    return fig, ax, curves, markers


@pytest.mark.parametrize("thin", [True, False])
def test_every_marker_lies_on_its_step_curve(thin):
    scores, members = tied_top_scores()
    report = {"attacks": {"tied": attack_entry(scores, members, thin=thin),
                          "fixture-loss": load_report(FIXTURE)["attacks"]["loss"]}}
    _, ax, curves, markers = drawn(report)
    for name, entry in report["attacks"].items():
        line = curves[name]
        assert line.get_drawstyle() == "steps-post"
        xs, ys = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert (np.diff(xs) >= 0).all() and (np.diff(ys) >= 0).all()
        for point in entry["tpr_at_fpr"]:
            if point["tpr"] > 0:
                assert step_value(xs, ys, point["target_fpr"]) == pytest.approx(point["tpr"], abs=1e-12)
            else:  # TPR 0 is not drawn: the curve starts right of this FPR
                assert point["target_fpr"] < xs[0]
    # each marker is drawn at (target FPR, reported TPR) when positive
    for line in markers:
        kind, name, target = line.get_gid().split(":")
        point = next(p for p in report["attacks"][name]["tpr_at_fpr"] if p["target_fpr"] == float(target))
        if kind == "point":
            assert line.get_ydata()[0] == pytest.approx(point["tpr"])
            xs, ys = curves[name].get_xdata(), curves[name].get_ydata()
            assert step_value(np.asarray(xs), np.asarray(ys), float(target)) == pytest.approx(line.get_ydata()[0])
        else:
            assert point["tpr"] == 0 and line.get_marker() == "v"


def test_a_tie_block_is_a_flat_run_then_a_jump_not_a_chord():
    scores, members = tied_top_scores()
    curve = roc_curve(scores, members)
    block_fpr, block_tpr = curve.fpr[1], curve.tpr[1]  # the tied top scores: one vertex
    assert block_fpr > 0.02 and block_tpr > 0.015
    _, ax, curves, _ = drawn({"attacks": {"tied": attack_entry(scores, members)}})
    xs, ys = np.asarray(curves["tied"].get_xdata()), np.asarray(curves["tied"].get_ydata())
    # nothing is drawn left of the block (TPR 0 there), and the block is the first vertex
    assert xs[0] == pytest.approx(block_fpr) and ys[0] == pytest.approx(block_tpr)
    # 1% FPR, inside the block: the curve is not drawn (TPR 0), as the marker says
    point = tpr_at_fpr_from_curve(curve, 0.01)
    assert point.tpr == 0 and step_value(xs, ys, 0.01) is None
    legend = [t.get_text() for t in ax.figure.legends[0].get_texts()]
    assert f"tied (AUC 0.6; TPR = 0 below FPR {100 * block_fpr:.3g}%)" in legend


def test_no_zero_pinned_at_the_floor():
    report = load_report(FIXTURE)
    fig, ax, curves, markers = drawn(report)
    bottom = ax.get_ylim()[0]
    for line in curves.values():
        assert min(line.get_ydata()) > bottom
        assert min(line.get_xdata()) >= ax.get_xlim()[0]
    # lira-online has TPR 0.05% at FPR 0: positive from the left edge, so drawn from there
    lira = curves["lira-online"]
    assert lira.get_xdata()[0] == pytest.approx(ax.get_xlim()[0]) and lira.get_ydata()[0] == pytest.approx(0.0005)
    # loss has TPR 0 below FPR 0.05%: its curve starts there, and the legend says so
    assert curves["loss"].get_xdata()[0] == pytest.approx(0.0005)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "loss (AUC 0.51; TPR = 0 below FPR 0.05%)" in texts
    assert "lira-online (AUC 0.53)" in texts
    # the one marker of TPR 0 (loss at 0.01% FPR) is a labelled triangle on the lower edge
    zeros = [m for m in markers if m.get_gid().startswith("zero:")]
    assert [m.get_gid() for m in zeros] == ["zero:loss:0.0001"]
    assert any(t.startswith("TPR = 0 at that FPR (on the lower edge)") for t in texts)


def test_roc_steps_by_hand():
    attack = F.Attack(name="a", auc=None, n_members=10, n_nonmembers=10, points=(),
                      roc_fpr=(0.0, 0.0, 0.1, 0.1, 0.3, 1.0), roc_tpr=(0.0, 0.0, 0.0, 0.4, 0.4, 1.0))
    steps = figures.roc_steps(attack, 1e-3)
    assert steps.xs == (0.1, 1.0) and steps.ys == (0.4, 1.0) and steps.zero_below == 0.1
    assert steps.tpr_at(0.05) == 0.0 and steps.tpr_at(0.1) == 0.4 and steps.tpr_at(0.99) == 0.4
    positive = F.Attack(name="b", auc=None, n_members=10, n_nonmembers=10, points=(),
                        roc_fpr=(0.0, 0.0, 0.5, 1.0), roc_tpr=(0.0, 0.2, 0.6, 1.0))
    steps = figures.roc_steps(positive, 1e-3)
    assert steps.xs == (1e-3, 0.5, 1.0) and steps.ys == (0.2, 0.6, 1.0) and steps.zero_below is None
    # an operating point adds its vertex when thinning dropped it
    thinned = F.Attack(name="c", auc=None, n_members=10, n_nonmembers=10,
                       points=(F.OperatingPoint(0.2, 0.5, 0.15, None),),
                       roc_fpr=(0.0, 0.1, 1.0), roc_tpr=(0.0, 0.3, 1.0))
    steps = figures.roc_steps(thinned, 1e-3)
    assert steps.xs == (0.1, 0.15, 1.0) and steps.tpr_at(0.2) == 0.5


# --- comparison.png ---------------------------------------------------------------------


def run(base, name, *, accuracy, tpr, bound, **config):
    report = copy.deepcopy(base)
    report["name"] = name
    report["utility"]["test_accuracy"] = accuracy
    for p in report["attacks"]["lira-online"]["tpr_at_fpr"]:
        if p["target_fpr"] == 0.001:
            p["tpr"] = tpr
    report["bounds"][0]["epsilon_lower_bound"] = bound
    for dotted, value in config.items():
        section, key = dotted.split("__")
        report["config"].setdefault(section, {})[key] = value
    return report


def comparison(reports):
    summaries = F.summarize_all(reports)
    accuracy = [s.test_accuracy for s in summaries]
    fig = figures.plot_comparison(summaries, pareto_front(accuracy, [s.tpr for s in summaries]),
                                  pareto_front(accuracy, [s.epsilon_lower_bound for s in summaries]),
                                  setting_labels(reports))
    fig.savefig(io.BytesIO(), format="png")  # lay out and draw, as the report does
    return fig


def visible_ticks(axis, limits):
    lo, hi = limits
    return [(loc, label.get_text()) for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
            if lo - 1e-12 <= loc <= hi + 1e-12]


def check_percent_ticks(axis, limits):
    ticks = visible_ticks(axis, limits)
    assert len(ticks) >= 3
    values = [float(re.fullmatch(r"(-?\d+(?:\.\d+)?)%", text).group(1)) for _, text in ticks]
    decimals = {len(text.split(".")[1]) - 1 if "." in text else 0 for _, text in ticks}
    assert len(decimals) == 1  # every label written alike
    gaps = np.diff(values)
    assert np.allclose(gaps, gaps[0]) and gaps[0] > 0  # evenly spaced as written, not only as placed
    for (loc, _), value in zip(ticks, values):
        assert value == pytest.approx(100 * loc, abs=1e-9)  # no label rounded away from its tick


def test_two_runs_differing_in_one_setting_are_labelled_with_it():
    base = load_report(FIXTURE)
    reports = [run(base, "wd", accuracy=0.81, tpr=0.0123, bound=1.2, trainer__weight_decay=5e-4),
               run(base, "plain", accuracy=0.79, tpr=0.0087, bound=0.7, trainer__weight_decay=0.0)]
    fig = comparison(reports)
    for ax in fig.axes[:2]:
        texts = sorted(t.get_text() for t in ax.texts)
        assert texts == ["weight_decay=0", "weight_decay=0.0005"]
        note = next(t for t in ax.texts if t.get_text() == "weight_decay=0.0005")
        assert note.xy == pytest.approx((0.81, 0.0123 if ax is fig.axes[0] else 1.2))


def test_percent_ticks_are_even_and_not_rounded_unevenly():
    base = load_report(FIXTURE)
    # accuracies 67.5% to 73%: PercentFormatter(decimals=0) wrote 67.5/70/72.5 as "68%, 70%, 73%"
    reports = [run(base, f"r{i}", accuracy=acc, tpr=tpr, bound=b, dp__noise_multiplier=s)
               for i, (acc, tpr, b, s) in enumerate([(0.675, 0.0031, 0.2, 2.0), (0.7, 0.0042, 0.5, 1.0),
                                                     (0.73, 0.0061, 0.9, 0.5)])]
    fig = comparison(reports)
    ax_tpr, ax_eps = fig.axes[:2]
    check_percent_ticks(ax_tpr.xaxis, ax_tpr.get_xlim())
    check_percent_ticks(ax_tpr.yaxis, ax_tpr.get_ylim())
    check_percent_ticks(ax_eps.xaxis, ax_eps.get_xlim())
    assert sorted(t.get_text() for t in ax_tpr.texts) == ["dp σ=0.5", "dp σ=1", "dp σ=2"]


@pytest.mark.parametrize("accuracy_span", [0.004, 0.0005])
def test_percent_ticks_on_narrow_ranges(accuracy_span):
    base = load_report(FIXTURE)
    reports = [run(base, "a", accuracy=0.9, tpr=0.0011, bound=0.1, trainer__lr=0.1),
               run(base, "b", accuracy=0.9 + accuracy_span, tpr=0.0012, bound=0.2, trainer__lr=0.2)]
    fig = comparison(reports)
    for ax in fig.axes[:2]:
        check_percent_ticks(ax.xaxis, ax.get_xlim())
    check_percent_ticks(fig.axes[0].yaxis, fig.axes[0].get_ylim())


def label_boxes(ax):
    return [t.get_window_extent() for t in ax.texts]


def disjoint(boxes):
    return all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_labels_of_close_runs_do_not_overlap():
    base = load_report(FIXTURE)
    sigmas = [(0.732, 0.0061, 0.9, 0.5), (0.711, 0.0042, 0.5, 1.0), (0.684, 0.0031, 0.21, 2.0),
              (0.686, 0.0032, 0.22, 2.5), (0.676, 0.0030, 0.05, 4.0)]
    reports = [run(base, f"s{i}", accuracy=a, tpr=t, bound=b, dp__noise_multiplier=s)
               for i, (a, t, b, s) in enumerate(sigmas)]
    fig = comparison(reports)
    for ax in fig.axes[:2]:
        assert len(ax.texts) == 5 and disjoint(label_boxes(ax))
        frame = ax.get_window_extent()
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 for b in label_boxes(ax))


def test_crowded_runs_get_numbers_and_a_key():
    base = load_report(FIXTURE)
    reports = [run(base, f"wd{i}", accuracy=0.70 + 0.001 * (i % 4), tpr=0.004 + 0.0001 * i, bound=0.3 + 0.01 * i,
                   trainer__weight_decay=10.0 ** -(i + 1), trainer__lr=0.1 * (1 + i % 2)) for i in range(10)]
    fig = comparison(reports)
    for ax in fig.axes[:2]:
        assert sorted(int(t.get_text()) for t in ax.texts) == list(range(1, 11))
        assert disjoint(label_boxes(ax))
    key = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    for i, label in enumerate(setting_labels(reports)):
        assert f"{i + 1}: {label}" in key
    assert "1: weight_decay=0.1, lr=0.1" in key


def test_comparison_names_runs_by_name_when_configs_agree(tmp_path):
    base = load_report(FIXTURE)
    reports = [run(base, "first", accuracy=0.7, tpr=0.002, bound=0.1),
               run(base, "second", accuracy=0.75, tpr=0.004, bound=0.3)]
    fig = comparison(reports)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["first", "second"]


# --- what differs between runs ----------------------------------------------------------


def test_differing_keys_leave_out_where_and_how_a_run_was_executed():
    a = {"name": "a", "output_dir": "runs/a", "seed": 0, "mlflow": {"enabled": True}, "executor": {"kind": "local"},
         "dp": {"noise_multiplier": 1.0, "delta": 1e-5}, "trainer": {"weight_decay": 0.0}}
    b = copy.deepcopy(a)
    b.update(name="b", output_dir="runs/b", mlflow={"enabled": False}, executor={"kind": "ray"})
    assert differing_keys([a, b]) == []
    b["dp"]["noise_multiplier"] = 2.0
    b["trainer"]["lr"] = 0.1  # missing from a: differs too
    assert differing_keys([a, b]) == ["dp.noise_multiplier", "trainer.lr"]


def test_short_names_are_unique_suffixes():
    assert short_names(["dp.delta", "audit.delta", "trainer.lr"]) == {
        "dp.delta": "dp.delta", "audit.delta": "audit.delta", "trainer.lr": "lr"}


def test_setting_labels():
    def report(name, **config):
        return {"name": name, "config": config}

    assert setting_labels([report("a", dp={"noise_multiplier": 1.0}), report("b", dp={"noise_multiplier": None})]) == [
        "dp σ=1", "dp σ=none"]
    assert setting_labels([report("a", trainer={"kind": "plain"}, defence={"top_k": 1}),
                           report("b", trainer={"kind": "plain"}, defence={"top_k": 0})]) == ["top_k=1", "top_k=0"]
    assert setting_labels([report("a"), {"config": {}}]) == ["a", "run 2"]  # nothing differs: names
    many = [report(n, a={"w": w, "z": z}) for n, w, z in (("p", 0, 0), ("q", 0, 1), ("r", 1, 0))]
    assert setting_labels(many) == ["w=0, z=0", "w=0, z=1", "w=1, z=0"]
    # more keys differ than a label spells out: a partial list would mislead, the names say it
    assert setting_labels(many, max_keys=1) == ["p", "q", "r"]
    # labels that would read alike get their run's name in front
    alike = [report(n, a={"w": w}) for n, w in (("p", 1), ("q", 1), ("r", 3))]
    assert setting_labels(alike) == ["p (w=1)", "q (w=1)", "r (w=3)"]


def test_epsilon_figure_draws_the_effective_epsilon_with_its_noise():
    """The claim tests' effective epsilon is a bar of its own, labelled as resting on the
    DP-SGD family, with sigma_eff against the claimed sigma; read from report.json."""
    report = {"claim_tests": [{"name": "claim-test/likelihood-ratio",
                               "effective": {"epsilon": 5.66, "noise_multiplier": 0.653,
                                             "claimed_noise_multiplier": 0.735}}]}
    bound = F.Bound("one-run/likelihood-ratio", 3.0, True, "one-run", 0.975, 1e-5, 5.09, None)
    fig = figures.plot_epsilon([bound], [], claimed=4.0, power=5.09, effective=F.effective(report))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "effective: claim-test/likelihood-ratio\n(sigma_eff 0.653 vs claimed 0.735)"
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    assert 5.66 in widths and 3.0 in widths
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("effective epsilon (assumes DP-SGD") for t in legend)
    # nothing to draw but an effective epsilon still draws; nothing at all draws nothing
    assert figures.plot_epsilon([], [], claimed=4.0, power=None, effective=F.effective(report)) is not None
    assert figures.plot_epsilon([], [], claimed=4.0, power=None) is None
