"""The effective-noise experiment runs end to end on a tiny setting and renders its table."""

from dataclasses import replace

import pytest

from experiments import effective_tightness as et
from experiments import tightness as tt

TINY = replace(et.QUICK, claims=(1.0,), soundness_claims=(1.0,), trainer_claims=(1.0,), many_canaries_claim=1.0,
               multi_run_claim=1.0, exact_runs=3, trainer_runs=3, seeds=1, many_canaries=300, multi_run_per_world=10,
               tight=replace(tt.FULL, steps=100, canaries=200))


@pytest.mark.slow
def test_tiny_run_renders_every_section():
    result = et.run(TINY, log=lambda line: None)
    (row,) = result["soundness_exact"].values()
    assert row["effective_above_truth"]["n"] == 3 and 0.95 < row["noise_ratio"]["mean"] < 1.05
    (trainer,) = result["trainer"].values()
    assert trainer[0]["decided_by"] in ("noise", "signal") and trainer[0]["epsilon"] > 0
    text = et.markdown(result, TINY, 1.0, quick=True)
    for heading in ("## Soundness", "## Tightness", "## Reading"):
        assert heading in text
    assert "measured noise / σ" in text and "m = 300 canaries" in text
