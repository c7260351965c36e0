"""FEATURESTREAM_REDIS_CLUSTER needs a TCP URL of database 0: anything else fails at start-up
naming both settings and the fix."""

from __future__ import annotations

import pytest

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
