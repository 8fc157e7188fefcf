"""The suite's own wiring (tests/conftest.py): under ``--dist loadgroup`` each module is one xdist group."""

import os

import pytest


def test_this_module_is_one_xdist_group(request):
    """xdist marks a grouped test by suffixing its node id with ``@<group>``; without it, a
    module's fixtures are built on every worker that runs its tests (pytest 9.2 with xdist
    3.8 silently lost the suffix)."""
    if "PYTEST_XDIST_WORKER" not in os.environ or not request.config.getvalue("loadgroup"):
        pytest.skip("not run by xdist workers with --dist loadgroup")
    assert request.node.nodeid.endswith("@test_suite_wiring.py")
