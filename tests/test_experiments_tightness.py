"""Smoke test of ``python -m experiments.tightness --quick`` and checks of its pieces."""

import json
import shutil

import numpy as np
import pytest

from audit.stats import Bonferroni, epsilon_from_counts, epsilon_from_scores
from experiments import tightness
from experiments.multi_run_whitebox import counts_at

pytestmark = [pytest.mark.filterwarnings("ignore:Secure RNG"), pytest.mark.filterwarnings("ignore:Full backward hook")]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("tightness")
    assert tightness.main(["--quick", "--out", str(out)]) == 0
    return out


def test_quick_writes_every_file_and_every_kind(quick):
    for suffix in ("md", "json", "png"):
        assert (quick / f"tightness.{suffix}").stat().st_size > 0
    saved = json.loads((quick / "tightness.json").read_text())
    point = saved["points"]["8"]
    for kind in tightness.KINDS:
        assert len(point[kind]["bound"]) >= 1 and len(point[kind]["estimate"]) >= 1
    text = (quick / "tightness.md").read_text()
    assert "*estimate*" in text and "2 CPU cores" in text and "--quick" in text


def test_quick_bounds_stay_under_their_ceilings_and_claims(quick):
    saved = json.loads((quick / "tightness.json").read_text())
    point, ceil = saved["points"]["8"], saved["ceilings"]
    for b, p in zip(point["wb_one_run"]["bound"], point["wb_one_run"]["power"]):
        assert 0.0 <= b <= p == ceil["one_run_whitebox"]
    n = saved["setting"]["runs_per_world"]
    assert ceil["multi_run"] == pytest.approx(epsilon_from_counts(n, 0, 0, n, delta=1e-5).value)
    assert all(0.0 <= b <= ceil["multi_run"] for b in point["wb_multi_run"]["bound"] + point["wb_multi_run"]["split"])
    for kind in ("bb_clipbkd", "bb_natural"):
        for b, p, c in zip(point[kind]["bound"], point[kind]["power"], point[kind]["claimed"]):
            assert 0.0 <= b <= max(p, 0.0) + 1e-12
            assert c == pytest.approx(8.0, rel=0.05)  # target_epsilon reached the accountant


def test_quick_whitebox_one_run_tracks_the_yardstick(quick):
    # same (m, q, T, sigma): real fast-trainer DP-SGD should give what the idealised simulation gives
    point = json.loads((quick / "tightness.json").read_text())["points"]["8"]
    one_run, ideal = np.mean(point["wb_one_run"]["bound"]), np.mean(point["yardstick"]["bound"])
    assert ideal > 1.0 and 0.7 * ideal <= one_run <= 1.3 * ideal


def test_render_rebuilds_the_same_markdown_from_the_json(quick, tmp_path):
    shutil.copy(quick / "tightness.json", tmp_path / "tightness.json")
    assert tightness.main(["--render", str(tmp_path / "tightness.json")]) == 0
    assert (tmp_path / "tightness.md").read_text() == (quick / "tightness.md").read_text()
    assert (tmp_path / "tightness.png").stat().st_size > 0


def test_render_of_a_missing_file_is_a_one_line_error(tmp_path, capsys):
    assert tightness.main(["--render", str(tmp_path / "missing.json")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_bonferroni_single_threshold_counts_like_counts_at():
    # the multi-run bound and the GDP estimate must read the same counts at the pilot threshold
    rng = np.random.default_rng(3)
    members = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    scores = members * 2.0 + rng.standard_normal(400)
    t = 1.5
    via_strategy = epsilon_from_scores(scores, members, delta=1e-5, strategy=Bonferroni([t])).value
    via_counts = epsilon_from_counts(*counts_at(scores, members, t), delta=1e-5).value
    assert via_strategy == pytest.approx(via_counts) and via_counts > 0.5


def test_blackbox_config_claims_the_target_epsilon(tmp_path):
    from audit.config import parse_config

    config = parse_config(tightness.blackbox_config(tightness.QUICK, "clipbkd", 2.0, 0, tmp_path))
    assert config.dp.target_epsilon == 2.0 and config.dp.noise_multiplier is None
    assert config.audit.canary_kind == "clipbkd" and config.mode == "dp"
