"""The feature job's Python operators: shard a batch of events, event time, and the keyed
function that keeps each shard's users and materializes their rows.

Functions take plain constructor values and create their clients in ``open()``: they are
pickled to the TaskManagers' Python workers.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from featurestream.jobs.kafka_io import FRAME_TYPE
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.udfs.contract.codec import EventDecoder
from featurestream.udfs.contract.schema_registry import RegistryConfig, registry_for
from featurestream.udfs.features import routing
from featurestream.udfs.features.definitions import Feature
from featurestream.udfs.features.processor import FeatureProcessor
from featurestream.udfs.features.shard import SHARD_COUNT_ENTRY, UserShard, shard_count_problem
from featurestream.udfs.wire.dead_letters import dlq_frame
from featurestream.udfs.wire.frames import CHECKPOINT_MARKER, decode_source_frame, split_batch
from pyflink.common import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import (
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import MapStateDescriptor

DLQ = OutputTag("dlq", FRAME_TYPE)

# What travels from the sharding stage to the keyed function: (shard key, newest event time,
# packed events of that shard, or the checkpoint marker), in Flink's native tuple coder.
ShardRecord = tuple[int, int, bytes]
SHARD_RECORD_TYPE = Types.TUPLE([Types.INT(), Types.LONG(), FRAME_TYPE])
_MARKER_TIME = -(2**63)  # a checkpoint marker's time: never moves the watermark

_FULL_COLLECTION_EVERY = 1_000  # younger (generation 1) collections


class ShardEvents(ProcessFunction):
    """A batch of source frames -> one record per state shard; undecodable -> the DLQ.

    ``shard_keys[i]`` is the Flink key of shard ``i`` (see ``ShardKeys.java``).
    """

    def __init__(self, schema_registry: RegistryConfig, dlq_topic: str,
                 shard_keys: Sequence[int]) -> None:
        self._schema_registry = schema_registry
        self._dlq_topic = dlq_topic
        self._shard_keys = tuple(shard_keys)
        self._decoder: EventDecoder | None = None
        self._dead = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self._decoder = EventDecoder(registry_for(self._schema_registry))
        self._dead = runtime_context.get_metrics_group().counter("undecodable_events")

    def process_element(self, batch: bytes, ctx: ProcessFunction.Context) -> Iterator[Any]:
        if batch == CHECKPOINT_MARKER:  # a checkpoint is coming: every shard must know
            for key in self._shard_keys:
                yield key, _MARKER_TIME, CHECKPOINT_MARKER
            return
        groups, failed = routing.group_by_shard(split_batch(batch), self._decoder,
                                                     len(self._shard_keys))
        for frame, error in failed:
            self._dead.inc()
            yield DLQ, dlq_frame(self._dlq_topic, decode_source_frame(frame), "decode",
                                 error.error_class, error.message)
        for shard, events in groups.items():
            yield self._shard_keys[shard], max(e[1] for e in events), routing.pack(events)


class NewestEventTime(TimestampAssigner):
    """A shard record's time is its newest event's ``ts``: the watermark follows event time."""

    def extract_timestamp(self, value: ShardRecord, record_timestamp: int) -> int:
        return value[1]


class MaterializeFeatures(KeyedProcessFunction):
    """Keyed by state shard: the shard's users in memory and in a map state, one event-time
    timer per shard, rows upserted into Redis.

    At the end of every bundle, before PyFlink commits it, the changed rows are written to
    Redis. The users that events changed go into the map state when the shard's checkpoint
    marker arrives: every sharding subtask sends one to every shard just before its barrier,
    and with aligned checkpoints nothing reaches the shard between the last marker and the
    snapshot, so a checkpoint never covers a row that has not reached Redis or an event whose
    user's state is not stored.
    """

    def __init__(self, features: Sequence[Feature], allowed_lateness_ms: int, shards: int,
                 redis_url: str, key_prefix: str, ttl_seconds: int, batch_size: int,
                 dlq_topic: str) -> None:
        self._features = tuple(features)
        self._allowed_lateness_ms = allowed_lateness_ms
        self._shard_count = shards
        self._redis = (redis_url, key_prefix, ttl_seconds, batch_size)
        self._dlq_topic = dlq_topic
        self._processor: FeatureProcessor | None = None
        self._writer: RedisRowWriter | None = None
        self._shards: dict[int, UserShard] = {}  # by shard key
        self._touched: set[int] = set()
        self._users = None
        self._metrics: dict[str, Any] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._processor = FeatureProcessor(self._features, self._allowed_lateness_ms)
        self._writer = RedisRowWriter(*self._redis)
        # Shards hold millions of long-lived objects; Python's default (a full collection each
        # time they grow by a quarter, checked every 10 younger collections) spent a third of
        # the worker's time walking them. Full collections now wait for 1,000 younger ones.
        gc.set_threshold(gc.get_threshold()[0], gc.get_threshold()[1], _FULL_COLLECTION_EVERY)
        self._users = runtime_context.get_map_state(
            MapStateDescriptor("users", Types.STRING(), FRAME_TYPE))
        metrics = runtime_context.get_metrics_group()
        self._metrics = {name: metrics.counter(name) for name in
                         ("events_in", "late_events", "expired_events", "rows_written")}
        _before_bundle_commit(runtime_context._keyed_state_backend, self._end_bundle)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def process_element(self, value: ShardRecord, ctx: KeyedProcessFunction.Context
                        ) -> Iterator[Any]:
        shard = self._shard(ctx.get_current_key())
        if value[2] == CHECKPOINT_MARKER:
            states = shard.take_states()
            self._users.put_all(states.stored.items())
            for user_id in states.removed:
                self._users.remove(user_id)
            return
        events = routing.unpack(value[2])
        self._metrics["events_in"].inc(len(events))
        watermark = ctx.timer_service().current_watermark()
        for event, rejection in shard.add_events(events, watermark):
            late = rejection.error_class == "LateEvent"
            self._metrics["late_events" if late else "expired_events"].inc()
            yield DLQ, dlq_frame(self._dlq_topic, decode_source_frame(event[5]), "window",
                                 rejection.error_class, rejection.message,
                                 key=event[0].encode())
        self._register_timer(shard, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterator[Any]:
        shard = self._shard(ctx.get_current_key())
        shard.timer_fired(timestamp)
        shard.advance(max(timestamp, ctx.timer_service().current_watermark()))
        self._register_timer(shard, ctx)
        return iter(())  # PyFlink iterates the result of on_timer; expiry emits no records

    def _shard(self, key: int) -> UserShard:
        """The shard of ``key`` (the current key), loaded from the map state on first use."""
        self._touched.add(key)
        shard = self._shards.get(key)
        if shard is None:
            shard = self._shards[key] = UserShard(self._processor)
            stored = dict(self._users.items())
            written_with = stored.pop(SHARD_COUNT_ENTRY, None)
            problem = shard_count_problem(written_with, self._shard_count)
            if problem is not None:
                raise RuntimeError(problem)
            if written_with is None:
                self._users.put(SHARD_COUNT_ENTRY, str(self._shard_count).encode())
            shard.restore(stored.items())
        return shard

    def _register_timer(self, shard: UserShard, ctx: KeyedProcessFunction.Context) -> None:
        timer = shard.timer_to_register()
        if timer is not None:
            ctx.timer_service().register_event_time_timer(timer)

    def _end_bundle(self) -> None:
        """The rows of the bundle to Redis, in one pipeline."""
        rows = 0
        for key in self._touched:
            changed = self._shards[key].take_rows()
            rows += len(changed)
            for user_id, row in changed.items():
                self._writer.add(user_id, row)
        self._touched.clear()
        self._writer.flush()
        self._metrics["rows_written"].inc(rows)


def _before_bundle_commit(backend: Any, end_bundle: Callable[[], None]) -> None:
    """Run ``end_bundle`` at the end of every bundle, just before the keyed state is committed.

    PyFlink calls ``commit()`` on the keyed state backend when a bundle finishes (and a
    checkpoint always finishes the bundle first); it offers no public end-of-bundle hook.
    """
    commit = backend.commit

    def end_bundle_then_commit() -> None:
        end_bundle()
        commit()

    backend.commit = end_bundle_then_commit
