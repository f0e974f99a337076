"""Shared test fixtures: one real Ray per test session, deterministic hypothesis."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests.raytools import RayCluster, ray_env, start_head

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60)
settings.register_profile("dev", deadline=None, max_examples=60)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def ray_cluster() -> RayCluster:
    """A real single-node Ray (`ray start --head`, 2 CPUs) shared by the whole session.

    In-process tests join it with `ray_address`; subprocesses (CLI, server) get RAY_ADDRESS.
    """
    ray_env()
    cluster = start_head(num_cpus=2)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def ray_address(ray_cluster: RayCluster) -> str:
    """Address of the session Ray, with this process connected to it."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, logging_level="ERROR")
    yield ray_cluster.address
    ray.shutdown()
