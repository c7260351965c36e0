"""The feature job's two Python operators: the sharding stage, and the keyed function that
adapts PyFlink to :class:`udfs.features.operator.FeatureShardOperator`.

Functions take plain constructor values and create their clients in ``open()``: they are
pickled to the TaskManagers' Python workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyflink.common import Types
from pyflink.datastream import (
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import MapStateDescriptor

from featurestream.jobs import pyflink_compat
from featurestream.jobs.features.shard_scope import ShardScope
from featurestream.jobs.kafka_io import FRAME_TYPE
from featurestream.jobs.metrics import FlinkMetricGroup
from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.udfs.contract.records import decoder_for
from featurestream.udfs.contract.schema_registry import RegistryConfig, registry_for
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.features import routing
from featurestream.udfs.features.collection import few_full_collections
from featurestream.udfs.features.event_time import PartitionTime
from featurestream.udfs.features.layout import describe
from featurestream.udfs.features.operator import FeatureShardOperator, OperatorCounters
from featurestream.udfs.features.placement import SubtaskRoutes
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.features.point_in_time import ScoredEvents
from featurestream.udfs.features.processor import FeatureProcessor
from featurestream.udfs.features.routing import EventRouter, ShardEvent
from featurestream.udfs.telemetry.catalog import SOURCE_EVENTS
from featurestream.udfs.telemetry.metrics import (
    Counter,
    DeadLetterCounters,
    MetricGroup,
    counter,
)
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage, dlq_frame
from featurestream.udfs.wire.frames import CHECKPOINT_MARKER, decode_source_frame, split_batch

DLQ = OutputTag("dlq", FRAME_TYPE)
# What the sharding stage rejects (the keyed operator rejects late and expired events).
SHARDING_REJECTIONS = (
    *((Stage.DECODE, reason) for reason in (
        ErrorClass.MALFORMED_RECORD, ErrorClass.UNKNOWN_SCHEMA_ID, ErrorClass.INCOMPATIBLE_SCHEMA,
        ErrorClass.SCHEMA_VIOLATION, ErrorClass.INVALID_VALUE)),
    (Stage.WINDOW, ErrorClass.FUTURE_EVENT),
)


@dataclass(frozen=True)
class ShardingCounters:
    """The sharding stage's metrics: source records read (good or bad), and its dead letters."""

    source_events: Counter
    dead_letters: DeadLetterCounters

    @classmethod
    def register(cls, group: MetricGroup) -> ShardingCounters:
        return cls(counter(group, SOURCE_EVENTS), DeadLetterCounters(group, SHARDING_REJECTIONS))


class ShardEvents(ProcessFunction):
    """A batch of source frames -> one record per keyed subtask, holding the events of each
    of its shards (:mod:`udfs.features.placement`); undecodable events, and events more than
    ``max_future_skew_ms`` ahead of the wall clock -> the DLQ. ``scored``: the events whose
    rows the shards capture for the scoring job. A record's time (from which the watermark
    follows) is the slowest partition's (:mod:`udfs.features.event_time`).

    ``shard_keys[i]`` is the Flink key of shard ``i`` (see ``ShardKeys.java``). A checkpoint
    marker goes on to every shard. The keyed operator runs at this stage's parallelism.
    """

    _router: EventRouter  # made in open()
    _routes: SubtaskRoutes  # made in open()
    _partition_time: PartitionTime  # made in open()
    _metrics: FlinkMetricGroup  # from open()
    _counters: ShardingCounters  # from open()

    def __init__(self, definitions: Definitions, schema_registry: RegistryConfig,
                 dlq_topic: str, shard_keys: Sequence[int], max_future_skew_ms: int,
                 scored: ScoredEvents | None, idleness_ms: int, max_parallelism: int) -> None:
        self._definitions = definitions
        self._max_parallelism = max_parallelism
        self._scored = scored
        self._idleness_ms = idleness_ms
        self._schema_registry = schema_registry
        self._dlq_topic = dlq_topic
        self._shard_keys = tuple(shard_keys)
        self._max_future_skew_ms = max_future_skew_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        registry = registry_for(self._schema_registry)
        self._router = EventRouter(
            compile_plans(self._definitions),
            {s.name: decoder_for(s, registry) for s in self._definitions.sources},
            len(self._shard_keys), scored=self._scored,
            max_future_skew_ms=self._max_future_skew_ms)
        self._routes = SubtaskRoutes(self._shard_keys,
                                     runtime_context.get_number_of_parallel_subtasks(),
                                     self._max_parallelism)
        self._partition_time = PartitionTime(self._idleness_ms, hold_ms=self._idleness_ms)
        self._metrics = FlinkMetricGroup(runtime_context.get_metrics_group())
        self._counters = ShardingCounters.register(self._metrics)

    def process_element(self, batch: bytes, ctx: ProcessFunction.Context) -> Iterator[Any]:
        if self._metrics.untouched:
            self._metrics.touch()
        if batch == CHECKPOINT_MARKER:
            time = self._partition_time.update({})  # event time moves on without records too
            for marker in self._routes.markers(time):
                yield routing.encode_subtask_record(marker)
            return
        frames = split_batch(batch)
        self._counters.source_events.inc(len(frames))
        groups, failed = self._router.group_by_shard(frames)
        time = self._partition_time.update(self._router.partition_newest)
        for frame, problem in failed:
            self._counters.dead_letters.count(problem)
            yield DLQ, dlq_frame(self._dlq_topic, decode_source_frame(frame), problem)
        for record in self._routes.records(groups, time):
            yield routing.encode_subtask_record(record)


class MaterializeFeatures(KeyedProcessFunction):
    """Keyed by state shard: PyFlink's map state, timer service, metrics and side output, and
    a Redis writer, as the ports of :class:`FeatureShardOperator`.

    A record holds groups for several shards of this subtask; each group is handed to the
    operator under its own shard's key (:class:`ShardScope`), so state and timers stay per
    shard -- per key group with the default shard count -- and move with their key
    group when the job rescales. A group of a shard this subtask does not own fails the job:
    its state would be written under a key group of another subtask. The first record loads
    every shard of the subtask: restored state the definitions or the shard count cannot carry
    over is refused before a row is written.

    The operator's end of bundle runs at the end of every bundle, just before PyFlink commits
    the bundle's keyed state (:func:`pyflink_compat.before_bundle_commit`), and a checkpoint
    always ends the bundle first: no checkpoint covers a row that has not reached Redis.
    """

    _operator: FeatureShardOperator  # made in open()
    _users: Any  # the current shard's map state, from open()
    _runtime_context: RuntimeContext  # from open()
    _owned: frozenset[int]  # the shard keys of this subtask, from open()
    _metrics: FlinkMetricGroup  # from open()

    def __init__(self, definitions: Definitions, allowed_lateness_ms: int,
                 shard_keys: Sequence[int], max_parallelism: int, target: RedisTarget,
                 dlq_topic: str, redis_retry_ms: int = 0, rewrite_restored: bool = False
                 ) -> None:
        self._definitions = definitions
        self._shard_keys = tuple(shard_keys)
        self._max_parallelism = max_parallelism
        self._redis_retry_ms = redis_retry_ms
        self._rewrite_restored = rewrite_restored
        self._allowed_lateness_ms = allowed_lateness_ms
        self._shards = len(shard_keys)
        self._target = target
        self._dlq_topic = dlq_topic
        self._writer: RedisRowWriter | None = None
        self._rejected: list[tuple[ShardEvent, Problem]] = []
        self._opened = False  # every shard of the subtask loaded

    def open(self, runtime_context: RuntimeContext) -> None:
        few_full_collections()
        self._runtime_context = runtime_context
        self._owned = SubtaskRoutes(
            self._shard_keys, runtime_context.get_number_of_parallel_subtasks(),
            self._max_parallelism).keys_of(runtime_context.get_index_of_this_subtask())
        self._users = runtime_context.get_map_state(
            MapStateDescriptor("users", Types.STRING(), FRAME_TYPE))
        writer = self._writer = RedisRowWriter(self._target, self._redis_retry_ms)
        self._metrics = FlinkMetricGroup(runtime_context.get_metrics_group())
        counters = OperatorCounters.register(self._metrics)
        plans = compile_plans(self._definitions)
        writer.publish_layout(describe(plans, self._shards))
        self._operator = FeatureShardOperator(
            {name: FeatureProcessor(plan, self._allowed_lateness_ms)
             for name, plan in plans.items()}, self._shards, writer, self, counters,
            rewrite_restored=self._rewrite_restored)
        pyflink_compat.before_bundle_commit(runtime_context, self._operator.end_bundle)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def reject(self, event: ShardEvent, problem: Problem) -> None:
        """The operator's dead letters: yielded to the DLQ side output after each call."""
        self._rejected.append((event, problem))

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context
                        ) -> Iterator[Any]:
        if self._metrics.untouched:
            self._metrics.touch()
        record = routing.decode_subtask_record(value)
        owned, runtime_context = self._owned, self._runtime_context
        scope = ShardScope(runtime_context, self._users, ctx.timer_service(), record.key)
        if not self._opened:
            for key in sorted(owned):
                scope.select(key)
                self._operator.open_shard(key, scope)
            self._opened = True
        for group in record.groups:
            if group.key not in owned:
                raise RuntimeError(
                    f"shard key {group.key} is not in a key group of keyed subtask "
                    f"{runtime_context.get_index_of_this_subtask()} (of "
                    f"{runtime_context.get_number_of_parallel_subtasks()}): the sharding "
                    "stage and the keyed operator disagree on parallelism or max parallelism")
            scope.select(group.key)
            self._operator.process(group, scope, scope)
        scope.restore()
        for event, problem in self._rejected:
            entity_id = event.key[len(event.entity) + 1:]  # the key is <entity>:<id>
            yield DLQ, dlq_frame(self._dlq_topic, decode_source_frame(event.frame), problem,
                                 key=entity_id.encode())
        self._rejected.clear()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterator[Any]:
        self._operator.on_timer(ctx.get_current_key(), timestamp, self._users,
                                ctx.timer_service())
        return iter(())  # PyFlink iterates the result of on_timer; expiry emits no records
