"""One local Ray cluster for the whole test session (pytest plugin: ``tests.ray_fixtures``).

Register it in tests/conftest.py with ``pytest_plugins = ["tests.ray_fixtures"]``; test modules
that need it may also import ``ray_session`` directly.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """The sweeps' embedded cluster with 2 CPUs, started once per session, shut down at the end.

    ``configure_environment`` puts the repo on the workers' PYTHONPATH and sets the Ray and
    torch defaults (they inherit this process's environment).
    """
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    from sweeps.cli import configure_environment, connect_ray

    # The product's own embedded cluster (dashboard and state API on loopback), 2 CPUs.
    started = connect_ray(2, configure_environment(), log_to_driver=False,
                          object_store_memory=200 * 1024**2)
    yield ray
    if started:
        ray.shutdown()
