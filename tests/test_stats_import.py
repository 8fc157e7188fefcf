"""``import audit.stats`` must not pull in torch, opacus or mlflow."""

import subprocess
import sys


def test_stats_import_is_light():
    code = (
        "import sys, audit.stats, audit.cli.bound\n"
        "heavy = [m for m in ('torch', 'opacus', 'mlflow') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
