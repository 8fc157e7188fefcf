"""experiments.one_run_vs_hull in its quick form."""


def test_one_run_vs_hull_quick(capsys):
    from experiments.one_run_vs_hull import main as compare

    assert compare(["--quick"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 8
