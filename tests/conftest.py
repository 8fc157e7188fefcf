"""Test-suite wiring: how pytest-xdist shares the tests among workers (``-n auto --dist loadgroup``).

Each test module is one group, so a module-scoped fixture (a trained run, a local Ray) is built once
and used by one worker. The modules that start a local Ray are one group between them, so no two
Ray sessions run at once on a 2-core machine. xdist turns the markers into node-id suffixes
(``...@group``) in its own ``pytest_collection_modifyitems``, so this hook runs first
(``tryfirst``). With pytest 9.2 that renaming has no effect (node ids moved from ``_nodeid``
to ``_id``) and every module's fixtures were built on each worker: pyproject pins pytest
below 9.2, and the node ids in the output end in ``@<module>`` when grouping works.
"""

import pytest

RAY_MODULES = {"test_executors_ray.py", "test_experiments_bench_executors.py"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.name
        item.add_marker(pytest.mark.xdist_group("ray" if module in RAY_MODULES else module))
