"""The feature job's Python operators: decode, event time, and the keyed feature function.

Functions take plain constructor values and create their clients in ``open()``: they are
pickled to the TaskManagers' Python workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pyflink.common import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import (
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import ValueStateDescriptor

from jobs.kafka_io import FRAME_TYPE
from jobs.redis_writer import RedisRowWriter
from udfs.codec import DecodeError, EventDecoder
from udfs.dlq import dlq_frame
from udfs.feature_processor import FeatureProcessor, Outcome
from udfs.features import Feature
from udfs.kafka_framing import decode_source_frame
from udfs.schema_registry import registry_for

DLQ = OutputTag("dlq", FRAME_TYPE)

# What travels from decode to the keyed function: (user_id, ts, source frame), in Flink's
# native tuple coder (no pickling). The keyed function decodes the frame again, which costs
# less than pickling an Event across the boundary, and keeps the original bytes and their
# coordinates for the DLQ.
KeyedFrame = tuple[str, int, bytes]
KEYED_FRAME_TYPE = Types.TUPLE([Types.STRING(), Types.LONG(), FRAME_TYPE])


class DecodeEvents(ProcessFunction):
    """Source frames -> decoded events; undecodable records -> the DLQ side output."""

    def __init__(self, schema_registry_url: str, dlq_topic: str) -> None:
        self._registry_url = schema_registry_url
        self._dlq_topic = dlq_topic
        self._decoder: EventDecoder | None = None
        self._dead = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self._decoder = EventDecoder(registry_for(self._registry_url))
        self._dead = runtime_context.get_metrics_group().counter("undecodable_events")

    def process_element(self, frame: bytes, ctx: ProcessFunction.Context) -> Iterator[Any]:
        record = decode_source_frame(frame)
        result = self._decoder.decode(record.value)
        if isinstance(result, DecodeError):
            self._dead.inc()
            yield DLQ, dlq_frame(self._dlq_topic, record, "decode", result.error_class,
                                 result.message)
        else:
            yield result.user_id, result.ts, frame


class EventTime(TimestampAssigner):
    """Event time is the event's ``ts`` field."""

    def extract_timestamp(self, value: KeyedFrame, record_timestamp: int) -> int:
        return value[1]


class MaterializeFeatures(KeyedProcessFunction):
    """Keyed by user: windows in one state value, one timer, rows upserted into Redis.

    Rows are buffered and written in micro-batches; the buffer is flushed whenever it fills and
    at the end of every bundle, before PyFlink commits the bundle's state, so a checkpoint never
    covers a row that has not reached Redis.
    """

    def __init__(self, features: Sequence[Feature], allowed_lateness_ms: int, redis_url: str,
                 key_prefix: str, ttl_seconds: int, batch_size: int, dlq_topic: str,
                 schema_registry_url: str) -> None:
        self._features = tuple(features)
        self._allowed_lateness_ms = allowed_lateness_ms
        self._redis = (redis_url, key_prefix, ttl_seconds, batch_size)
        self._dlq_topic = dlq_topic
        self._registry_url = schema_registry_url
        self._processor: FeatureProcessor | None = None
        self._decoder: EventDecoder | None = None
        self._writer: RedisRowWriter | None = None
        self._state = None
        self._late = None
        self._expired = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self._processor = FeatureProcessor(self._features, self._allowed_lateness_ms)
        self._decoder = EventDecoder(registry_for(self._registry_url))
        self._writer = RedisRowWriter(*self._redis)
        self._state = runtime_context.get_state(
            ValueStateDescriptor("user_windows", Types.PICKLED_BYTE_ARRAY()))
        metrics = runtime_context.get_metrics_group()
        self._late = metrics.counter("late_events")
        self._expired = metrics.counter("expired_events")
        _flush_before_bundle_commit(runtime_context, self._writer.flush)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def process_element(self, value: KeyedFrame, ctx: KeyedProcessFunction.Context
                        ) -> Iterator[Any]:
        record = decode_source_frame(value[2])
        event = self._decoder.decode(record.value)
        if isinstance(event, DecodeError):  # decoded fine upstream; only a changed registry
            yield DLQ, dlq_frame(self._dlq_topic, record, "decode", event.error_class,
                                 event.message)
            return
        watermark = ctx.timer_service().current_watermark()
        outcome = self._processor.on_event(self._state.value(), event, watermark)
        if outcome.rejection is not None:
            rejection = outcome.rejection
            (self._late if rejection.error_class == "LateEvent" else self._expired).inc()
            yield DLQ, dlq_frame(self._dlq_topic, record, "window",
                                 rejection.error_class, rejection.message,
                                 key=event.user_id.encode())
        self._apply(outcome, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterator[Any]:
        self._apply(self._processor.on_timer(self._state.value(), timestamp), ctx)
        return iter(())  # PyFlink iterates the result of on_timer; expiry emits no records

    def _apply(self, outcome: Outcome, ctx: KeyedProcessFunction.Context) -> None:
        """Move the timer, store or clear the state, buffer the row."""
        timers = ctx.timer_service()
        if outcome.delete_timer is not None:
            timers.delete_event_time_timer(outcome.delete_timer)
        if outcome.register_timer is not None:
            timers.register_event_time_timer(outcome.register_timer)
        if outcome.state is None:
            self._state.clear()
            return
        self._state.update(outcome.state)
        if outcome.row is not None:
            self._writer.add(ctx.get_current_key(), outcome.row)


def _flush_before_bundle_commit(runtime_context: RuntimeContext, flush: Any) -> None:
    """Run ``flush`` at the end of every bundle, just before the keyed state is committed.

    PyFlink calls ``commit()`` on the keyed state backend when a bundle finishes (and a
    checkpoint always finishes the bundle first); it offers no public end-of-bundle hook.
    """
    backend = runtime_context._keyed_state_backend
    commit = backend.commit

    def flush_then_commit() -> None:
        flush()
        commit()

    backend.commit = flush_then_commit
