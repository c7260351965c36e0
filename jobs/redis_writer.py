"""Pipelined, idempotent writes of feature rows to Redis (the layout is
:mod:`udfs.store.redis_layout`), retried while Redis cannot be reached."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.client import Pipeline
from redis.cluster import RedisCluster

from featurestream.jobs.node_pipelines import NodePipelines, refresh_slots, slot_of
from featurestream.jobs.redis_retry import WriteRetry
from featurestream.jobs.redis_target import RedisTarget
from featurestream.udfs.features.shard import CapturedRow
from featurestream.udfs.store.redis_layout import (
    ROWS_PER_UPSERT,
    UPSERT_ROWS_LUA,
    RowValue,
    encode_point_in_time,
    entity_key,
    layout_key,
    point_in_time_key,
    upsert_rows_args,
)
from featurestream.udfs.store.slot_groups import script_calls


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

    On Redis Cluster (``target.cluster``) the keys carry the entity id in a hash tag, each
    script call carries rows of one slot only (:func:`~udfs.store.slot_groups.script_calls`),
    and each master gets its calls in a pipeline of its own
    (:class:`~.node_pipelines.NodePipelines`); a failover's errors are retried as above, with
    the slot map read again before each attempt (:mod:`.redis_retry`).
    """

    def __init__(self, target: RedisTarget, retry_ms: int = 0) -> None:
        self._client = target.connect()
        self._upsert = self._client.register_script(UPSERT_ROWS_LUA)
        self._prefix = target.key_prefix
        self._cluster = target.cluster
        self._ttl = target.ttl_seconds
        self._batch_size = target.batch_size
        self._pit_ttl_ms = target.point_in_time_ttl_ms
        self._retried = WriteRetry(retry_ms, target.cluster,
                                   lambda error: refresh_slots(self._client))
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
        if self._cluster:
            self._retried(lambda: self._node_pipelines(now_ms).execute())
        else:
            self._retried(lambda: self._pipeline(now_ms).execute())
        self._pending.clear()
        self._captured.clear()

    def close(self) -> None:
        """Flush and release the connection pool."""
        self.flush()
        self._client.close()

    def _pipeline(self, now_ms: int) -> Pipeline:
        """The buffered rows as one pipeline (a new one per attempt: a failed one is reset)."""
        pipe = self._client.pipeline(transaction=False)
        self._set_captured(lambda key: pipe)
        rows = self._rows_by_key()
        keys = list(rows)
        for start in range(0, len(keys), ROWS_PER_UPSERT):
            chunk = keys[start:start + ROWS_PER_UPSERT]
            self._upsert(keys=chunk, args=upsert_rows_args([rows[k] for k in chunk], now_ms,
                                                           self._ttl),
                         client=pipe)
        return pipe

    def _node_pipelines(self, now_ms: int) -> NodePipelines:
        """The buffered rows as one pipeline per cluster master, each script call's rows of
        one slot (new ones per attempt, from the slot map as it is now)."""
        assert isinstance(self._client, RedisCluster)
        pipes = NodePipelines(self._client)
        self._set_captured(pipes.for_key)
        rows = self._rows_by_key()
        for keys in script_calls(list(rows), ROWS_PER_UPSERT, slot_of):
            self._upsert(keys=keys, args=upsert_rows_args([rows[k] for k in keys], now_ms,
                                                          self._ttl),
                         client=pipes.for_key(keys[0]))
        return pipes

    def _set_captured(self, pipeline_of: Callable[[str], Pipeline]) -> None:
        """Queue each captured row's ``SET NX`` on the pipeline ``pipeline_of`` its key."""
        for captured in self._captured:
            entity, _, entity_id = captured.key.partition(":")
            key = point_in_time_key(self._prefix, entity, captured.event_id)
            pipeline_of(key).set(key, encode_point_in_time(entity_id, captured.row), nx=True,
                                 px=self._pit_ttl_ms)

    def _rows_by_key(self) -> dict[str, dict[str, RowValue]]:
        """The buffered rows by Redis key (:func:`~udfs.store.redis_layout.entity_key`)."""
        rows = {}
        for state_key, row in self._pending.items():
            entity, _, entity_id = state_key.partition(":")
            rows[entity_key(self._prefix, entity, entity_id, cluster=self._cluster)] = row
        return rows
