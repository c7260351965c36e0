"""Pipelined, idempotent writes of feature rows to Redis (the layout is
:mod:`udfs.store.redis_layout`)."""

from __future__ import annotations

import time

from featurestream.jobs.redis_target import RedisTarget
from featurestream.udfs.store.redis_layout import (
    ROWS_PER_UPSERT,
    UPSERT_ROWS_LUA,
    FeatureValue,
    upsert_rows_args,
    user_key,
)


class RedisRowWriter:
    """Buffers the latest row per user and writes them in one pipelined round trip.

    Rows of one user arrive in ``(as_of, version)`` order, so only the newest buffered row per
    user is written; the upsert script drops any row older than the stored one. Each script
    call carries up to :data:`ROWS_PER_UPSERT` rows; a flush happens every
    ``target.batch_size`` users, and whenever the caller asks.
    """

    def __init__(self, target: RedisTarget) -> None:
        self._client = target.connect()
        self._upsert = self._client.register_script(UPSERT_ROWS_LUA)
        self._prefix = target.key_prefix
        self._ttl = target.ttl_seconds
        self._batch_size = target.batch_size
        self._pending: dict[str, dict[str, FeatureValue]] = {}

    def add(self, user_id: str, row: dict[str, FeatureValue]) -> None:
        """Buffer ``row`` as the user's newest; flush when the batch is full."""
        self._pending[user_id] = row
        if len(self._pending) >= self._batch_size:
            self.flush()

    def flush(self) -> None:
        """Write every buffered row (raises if Redis fails: the job then restarts and replays)."""
        if not self._pending:
            return
        now_ms = int(time.time() * 1000)
        users = list(self._pending)
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(users), ROWS_PER_UPSERT):
            chunk = users[start:start + ROWS_PER_UPSERT]
            self._upsert(keys=[user_key(self._prefix, u) for u in chunk],
                         args=upsert_rows_args([self._pending[u] for u in chunk], now_ms,
                                               self._ttl),
                         client=pipe)
        pipe.execute()
        self._pending.clear()

    def close(self) -> None:
        """Flush and release the connection pool."""
        self.flush()
        self._client.close()
