"""Test tiers, one marker per test, so the fast tiers run alone:

- ``unit``: no server, no cluster, no network (at most PyFlink's local py4j JVM); every test
  under ``tests/unit`` (marked here). ``pytest -m unit`` takes seconds.
- ``redis``: needs only ``redis-server`` on PATH (the reader, the feature job's Redis writer);
  each test starts its own on a free port. ``pytest -m redis``
- ``flink``: needs the full local stack (tansu, Redis, a Flink session cluster with Java),
  started on free ports in a temporary home; minutes. ``pytest -m flink``

``pytest`` alone runs every tier; ``pytest -m "not flink"`` the two fast ones. Integration
modules declare their tier with ``pytestmark``; a test without a tier fails collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from testing.redis_cluster import LocalRedisCluster

TIERS = ("unit", "redis", "flink")
UNIT_DIR = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under ``tests/unit`` as ``unit``; refuse tests without a tier."""
    for item in items:
        if item.path.is_relative_to(UNIT_DIR):
            item.add_marker(pytest.mark.unit)
    untiered = [item.nodeid for item in items
                if not any(item.get_closest_marker(tier) for tier in TIERS)]
    if untiered:
        raise pytest.UsageError(f"tests without a tier marker ({', '.join(TIERS)}; see "
                                f"tests/conftest.py): {', '.join(untiered[:5])}")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A real local Redis Cluster (3 masters, 3 replicas; ``testing.redis_cluster``) shared by
    the session's tests; its ``url`` names one node. Call ``flush()`` for a clean slate."""
    from testing.redis_cluster import redis_cluster as start  # only where a test asks for it

    with start() as cluster:
        yield cluster
