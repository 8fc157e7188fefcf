"""The demo's simulated run: a correct claim is not contradicted, a planted bug is."""

import numpy as np

from audit.stats import epsilon_one_run_from_scores
from experiments.demo_scores import main


def test_demo_scores_correct_and_buggy(tmp_path):
    bounds = {}
    for name, factor in (("correct", 1.0), ("buggy", 0.1)):
        path = tmp_path / f"{name}.npz"
        assert main([str(path), "--epsilon", "2", "--canaries", "500", "--steps", "300", "--noise-factor", str(factor)]) == 0
        with np.load(path, allow_pickle=False) as data:
            bounds[name] = epsilon_one_run_from_scores(data["scores"], data["members"], delta=1e-5).value
    assert bounds["correct"] < 2.0 < bounds["buggy"]


def test_one_run_vs_hull_quick(capsys):
    from experiments.one_run_vs_hull import main as compare

    assert compare(["--quick"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 8
