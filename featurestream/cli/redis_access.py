"""The CLI's Redis connection: short timeouts, and one clear line (password masked, the setting
to fix) instead of a traceback when Redis cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from featurestream.errors import UserFacingError
from featurestream.settings import Settings, masked_url


@contextmanager
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A client of ``FEATURESTREAM_REDIS_URL`` for one command, closed afterwards."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5,
                                  socket_connect_timeout=5)
    try:
        yield client
    except redis.RedisError as exc:
        raise UserFacingError(f"cannot read Redis at {masked_url(settings.redis_url)} ({exc}); "
                              "check FEATURESTREAM_REDIS_URL or run `featurestream up`") from None
    finally:
        client.close()
