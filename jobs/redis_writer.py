"""Pipelined, idempotent writes of feature rows to Redis (the layout is
:mod:`udfs.store.redis_layout`)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from featurestream.jobs.redis_target import RedisTarget
from featurestream.udfs.features.shard import CapturedRow
from featurestream.udfs.store.redis_layout import (
    ROWS_PER_UPSERT,
    UPSERT_ROWS_LUA,
    RowValue,
    encode_point_in_time,
    layout_key,
    point_in_time_key,
    upsert_rows_args,
)


class RedisRowWriter:
    """Buffers the latest row per entity and writes them in one pipelined round trip.

    Rows come under the entity's state key ``<entity>:<id>``; the Redis key is the prefix and
    that key (:func:`udfs.store.redis_layout.entity_key`). Rows of one entity arrive in
    ``(as_of, version)`` order, so only the newest buffered row per entity is written; the
    upsert script drops any row older than the stored one. Each script call carries up to
    :data:`ROWS_PER_UPSERT` rows; a flush happens every ``target.batch_size`` entities, and
    whenever the caller asks. Rows captured for scored events are written in the same round
    trip, each once (``SET NX``), with their own TTL.
    """

    def __init__(self, target: RedisTarget) -> None:
        self._client = target.connect()
        self._upsert = self._client.register_script(UPSERT_ROWS_LUA)
        self._prefix = target.key_prefix
        self._ttl = target.ttl_seconds
        self._batch_size = target.batch_size
        self._pit_ttl_ms = target.point_in_time_ttl_ms
        self._pending: dict[str, dict[str, RowValue]] = {}
        self._captured: list[CapturedRow] = []

    def publish_layout(self, layout: Mapping[str, Any]) -> None:
        """Record the layout the job runs (:func:`udfs.features.layout.describe`) for
        ``featurestream plan``."""
        self._client.set(layout_key(self._prefix), json.dumps(layout, sort_keys=True))

    def add(self, key: str, row: dict[str, RowValue]) -> None:
        """Buffer ``row`` as the newest of the entity with state key ``key``; flush when the
        batch is full."""
        self._pending[key] = row
        if len(self._pending) >= self._batch_size:
            self.flush()

    def add_captured(self, captured: CapturedRow) -> None:
        """Buffer the row captured for a scored event (written at the next flush)."""
        self._captured.append(captured)

    def flush(self) -> None:
        """Write every buffered row (raises if Redis fails: the job then restarts and replays)."""
        if not self._pending and not self._captured:
            return
        now_ms = int(time.time() * 1000)
        keys = list(self._pending)
        prefix = self._prefix
        pipe = self._client.pipeline(transaction=False)
        for captured in self._captured:
            entity, _, entity_id = captured.key.partition(":")
            pipe.set(point_in_time_key(prefix, entity, captured.event_id),
                     encode_point_in_time(entity_id, captured.row), nx=True,
                     px=self._pit_ttl_ms)
        for start in range(0, len(keys), ROWS_PER_UPSERT):
            chunk = keys[start:start + ROWS_PER_UPSERT]
            self._upsert(keys=[prefix + k for k in chunk],
                         args=upsert_rows_args([self._pending[k] for k in chunk], now_ms,
                                               self._ttl),
                         client=pipe)
        pipe.execute()
        self._pending.clear()
        self._captured.clear()

    def close(self) -> None:
        """Flush and release the connection pool."""
        self.flush()
        self._client.close()
