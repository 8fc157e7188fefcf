"""experiments.claim_test_soundness in its quick form: runs, and its table says what it measured."""

from experiments.claim_test_soundness import main


def test_quick_table(capsys):
    assert main(["--quick"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 |")]
    assert len(rows) == 1 and "0/5" in rows[0]  # no false rejection of the correct claim in 5 audits
