"""Pipelined, idempotent writes of feature rows to Redis (the layout is
:mod:`udfs.store.redis_layout`), retried while Redis cannot be reached."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.retry import Retry

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

T = TypeVar("T")
# Waits between attempts: 0.1 s, doubling, at most 5 s (so a Redis that comes back is
# written to within 5 s).
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 5.0


class RedisRowWriter:
    """Buffers the latest row per entity and writes them in one pipelined round trip.

    Rows come under the entity's state key ``<entity>:<id>``; the Redis key is the prefix and
    that key (:func:`udfs.store.redis_layout.entity_key`). Rows of one entity arrive in
    ``(as_of, version)`` order, so only the newest buffered row per entity is written; the
    upsert script drops any row older than the stored one. Each script call carries up to
    :data:`ROWS_PER_UPSERT` rows; a flush happens every ``target.batch_size`` entities, and
    whenever the caller asks. Rows captured for scored events are written in the same round
    trip, each once (``SET NX``), with their own TTL.

    A write that cannot reach Redis (refused, reset, timed out, or Redis still loading) is
    retried with exponential backoff for up to ``retry_ms``, then raised: meanwhile the caller
    (the feature job's bundle) waits, so Flink backpressures the source and nothing piles up
    in memory; past it the job fails and restarts from its last checkpoint. Retrying is safe:
    the upsert keeps the newer row and ``SET NX`` the first.
    """

    def __init__(self, target: RedisTarget, retry_ms: int = 0) -> None:
        self._client = target.connect()
        self._upsert = self._client.register_script(UPSERT_ROWS_LUA)
        self._prefix = target.key_prefix
        self._ttl = target.ttl_seconds
        self._batch_size = target.batch_size
        self._pit_ttl_ms = target.point_in_time_ttl_ms
        self._retry_s = retry_ms / 1000
        self._retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), -1)
        self._pending: dict[str, dict[str, RowValue]] = {}
        self._captured: list[CapturedRow] = []

    def publish_layout(self, layout: Mapping[str, Any]) -> None:
        """Record the layout the job runs (:func:`udfs.features.layout.describe`) for
        ``featurestream plan``."""
        self._retried(lambda: self._client.set(layout_key(self._prefix),
                                               json.dumps(layout, sort_keys=True)))

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
        """Write every buffered row (retried; raises if Redis stays unreachable: the job then
        restarts and replays)."""
        if not self._pending and not self._captured:
            return
        now_ms = int(time.time() * 1000)
        self._retried(lambda: self._pipeline(now_ms).execute())
        self._pending.clear()
        self._captured.clear()

    def close(self) -> None:
        """Flush and release the connection pool."""
        self.flush()
        self._client.close()

    def _pipeline(self, now_ms: int) -> Pipeline:
        """The buffered rows as one pipeline (a new one per attempt: a failed one is reset)."""
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
        return pipe

    def _retried(self, write: Callable[[], T]) -> T:
        """``write()``, retried with backoff while Redis cannot be reached, for up to
        ``retry_ms``."""
        deadline = time.monotonic() + self._retry_s

        def give_up_past_deadline(error: Exception) -> None:
            if time.monotonic() >= deadline:
                raise error
        return self._retry.call_with_retry(write, give_up_past_deadline)
