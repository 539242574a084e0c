"""One local Ray cluster for the whole test session (pytest plugin: ``tests.ray_fixtures``).

Register it in tests/conftest.py with ``pytest_plugins = ["tests.ray_fixtures"]``; test modules
that need it may also import ``ray_session`` directly.
"""

from __future__ import annotations

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def ray_session():
    """``ray.init(num_cpus=2, ...)`` once per session, shut down at the end.

    Declares the sweeps' trial-driver resource so trial drivers take no CPU, and puts the repo
    on the workers' PYTHONPATH (they inherit this process's environment).
    """
    for key, value in (("RAY_AUTH_MODE", "disabled"), ("RAY_USAGE_STATS_ENABLED", "0"),
                       ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1"), ("OMP_NUM_THREADS", "1")):
        os.environ.setdefault(key, value)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if REPO_ROOT not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *paths])
    import ray

    from sweeps.tuner import TRIAL_RESOURCE, TRIAL_RESOURCE_SLOTS

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=200 * 1024**2,
                 resources={TRIAL_RESOURCE: TRIAL_RESOURCE_SLOTS})
    yield ray
    if started:
        ray.shutdown()
