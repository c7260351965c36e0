"""The CLI's Redis connection: short timeouts, and one clear line (password masked, the setting
to fix) instead of a traceback when Redis cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from featurestream.errors import UserFacingError
from featurestream.jobs.redis_target import sync_client
from featurestream.settings import Settings, masked_url

TIMEOUT_S = 5.0


@contextmanager
def redis_client(settings: Settings) -> Iterator[redis.Redis | RedisCluster]:
    """A client of ``FEATURESTREAM_REDIS_URL`` for one command (a cluster client with
    ``FEATURESTREAM_REDIS_CLUSTER``), closed afterwards."""
    try:
        client = sync_client(settings.redis_url, settings.redis_cluster, TIMEOUT_S)
    except redis.RedisError as exc:
        raise _unreadable(settings, exc) from None
    try:
        yield client
    except (redis.RedisError, RedisClusterException) as exc:  # the latter: no node answers
        raise _unreadable(settings, exc) from None
    finally:
        client.close()


class RedisUnreadable(UserFacingError):
    """Redis could not be read (not reached, refused the login, no cluster node answered)."""


def _unreadable(settings: Settings, exc: Exception) -> RedisUnreadable:
    cluster = " (a node of the Redis Cluster: FEATURESTREAM_REDIS_CLUSTER=true)" \
        if settings.redis_cluster else ""
    return RedisUnreadable(f"cannot read Redis at {masked_url(settings.redis_url)}{cluster} "
                           f"({exc}); check FEATURESTREAM_REDIS_URL or run `featurestream up`")
