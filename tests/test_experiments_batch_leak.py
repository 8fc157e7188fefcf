"""``experiments.batch_leak``: the oracle's score and the quick table."""

import numpy as np

from canaries.iterate_scores import likelihood_ratio
from experiments import batch_leak


def test_without_the_batch_channel_the_oracle_score_is_the_likelihood_ratio():
    s = batch_leak.Setting(records=1000, batch_size=10, steps=200)
    readings, batch, members = batch_leak.simulate(50, 1.2, s, np.random.default_rng(0), normalise=False)
    ours = batch_leak.oracle_scores(readings, batch, 1.2, s, use_batch=False, normalised=False)
    np.testing.assert_allclose(ours, likelihood_ratio(readings, sample_rate=0.01, noise_multiplier=1.2, max_grad_norm=1.0))
    # the released readings of the bug are the correct ones divided by |B_t| / (q n): the oracle undoes that
    bugged, batch, _ = batch_leak.simulate(50, 1.2, s, np.random.default_rng(0))
    np.testing.assert_allclose(batch_leak.oracle_scores(bugged, batch, 1.2, s, use_batch=False), ours)
    # the batch channel adds log(|B_t| / lam) inside each step's mixture, so it moves the scores
    assert not np.allclose(batch_leak.oracle_scores(bugged, batch, 1.2, s, use_batch=True), ours)


def test_quick_table_oracle_blind_control_seen(capsys):
    assert batch_leak.main(["--quick"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("| 1000 | 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[8] == "0/1"  # the oracle does not reject the claim
    assert float(cells[9].split("–")[0]) <= 0.05  # the same test sees half the noise
