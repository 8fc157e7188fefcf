"""Test-suite wiring: how pytest-xdist shares the tests among workers (``-n auto --dist loadgroup``).

Each test module is one group, so a module-scoped fixture (a trained run, a local Ray) is built once
and used by one worker. The modules that start a local Ray are one group between them, so no two
Ray sessions run at once on a 2-core machine.
"""

import pytest

RAY_MODULES = {"test_executors_ray.py", "test_experiments_bench_executors.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.name
        item.add_marker(pytest.mark.xdist_group("ray" if module in RAY_MODULES else module))
