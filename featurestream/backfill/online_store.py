"""``--online-store``: the rows the replay ends with, written to Redis as the feature job writes
them (its own :class:`~featurestream.jobs.redis_writer.RedisRowWriter`: the layout, the TTL,
and the upsert that never puts an older row over a newer one) -- to rebuild Redis after a loss,
or to seed a new deployment."""

from __future__ import annotations

from collections.abc import Mapping

import redis

from featurestream.errors import UserFacingError
from featurestream.jobs.redis_target import RedisTarget, sync_client
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.settings import Settings, masked_url
from featurestream.udfs.features.processor import Row


def check_reachable(settings: Settings) -> None:
    """Fail before the replay, not after it, when Redis cannot be written."""
    try:
        client = sync_client(settings.redis_url, settings.redis_cluster, 5)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        raise _unreachable(settings, exc) from None


def write_online_store(settings: Settings, rows: Mapping[str, Row]) -> int:
    """Write every row (by state key ``<entity>:<id>``); returns how many."""
    try:
        writer = RedisRowWriter(RedisTarget.from_settings(settings))
        try:
            for key, row in rows.items():
                writer.add(key, row)
        finally:
            writer.close()
    except redis.RedisError as exc:
        raise _unreachable(settings, exc) from None
    return len(rows)


def _unreachable(settings: Settings, exc: redis.RedisError) -> UserFacingError:
    return UserFacingError(f"cannot write the online store to Redis at "
                           f"{masked_url(settings.redis_url)} ({exc}); check "
                           "FEATURESTREAM_REDIS_URL or run `featurestream up`")
