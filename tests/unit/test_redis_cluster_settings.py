"""FEATURESTREAM_REDIS_CLUSTER needs a TCP URL of database 0: anything else fails at start-up
naming both settings and the fix; a cluster no node of which answers is one line for the
CLI, not a redis-py RedisClusterException trace."""

from __future__ import annotations

import pytest

from featurestream.backfill.online_store import check_reachable
from featurestream.cli.redis_access import redis_client
from featurestream.devstack.private import free_ports
from featurestream.errors import UserFacingError
from featurestream.jobs.redis_target import RedisTarget
from featurestream.settings import Settings, SettingsError


@pytest.mark.parametrize(("url", "hint"), [
    ("unix:///run/redis.sock", "not a unix socket"),
    ("redis://cache:7000/1", "database 0 only"),
    ("redis://cache:7000/0?db=3", "database 0 only"),
])
def test_a_cluster_url_that_cannot_work_is_refused(url: str, hint: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"FEATURESTREAM_REDIS_URL": url, "FEATURESTREAM_REDIS_CLUSTER": "true"})
    message = str(error.value)
    assert "FEATURESTREAM_REDIS_URL" in message and "FEATURESTREAM_REDIS_CLUSTER" in message
    assert hint in message


@pytest.mark.parametrize("url", ["redis://cache:7000", "redis://cache:7000/0",
                                 "rediss://:pw@cache:7000/"])
def test_a_node_address_is_a_cluster_url(url: str) -> None:
    settings = Settings.from_env({"FEATURESTREAM_REDIS_URL": url,
                                  "FEATURESTREAM_REDIS_CLUSTER": "true"})
    target = RedisTarget.from_settings(settings)
    assert target.cluster and target.url == url


def test_a_single_redis_keeps_its_socket_and_databases() -> None:
    for url in ("unix:///run/redis.sock", "redis://cache:6379/3"):
        assert not RedisTarget.from_settings(Settings.from_env(
            {"FEATURESTREAM_REDIS_URL": url})).cluster


def test_an_unreachable_cluster_is_one_line_naming_the_settings() -> None:
    (port,) = free_ports(1)  # nothing listens: refused
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_cluster=True)
    with pytest.raises(UserFacingError) as error, redis_client(settings):
        pass
    assert "FEATURESTREAM_REDIS_URL" in str(error.value)
    assert "FEATURESTREAM_REDIS_CLUSTER=true" in str(error.value)
    with pytest.raises(UserFacingError, match="FEATURESTREAM_REDIS_URL"):
        check_reachable(settings)
