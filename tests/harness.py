"""A keyed-operator harness: drives :class:`FeatureShardOperator` -- the class the Flink job runs
-- through in-memory ports, the way Flink drives it, for any :class:`Definitions`.

Events are records of a source (a :class:`Record`, or a built-in :class:`Event` of the
``events`` source). Each is framed as the Kafka consumer frames it and grouped by the real
:class:`EventRouter` (its decoders read the record back from the frame), so every entity a
source feeds gets the event in the shard of its state key; the harness keys shard ``i`` by
``i``, owns every shard (one keyed subtask) and sends one subtask record per bundle, through
its wire format. Each shard's map state is a dict, its
timers a set; timers fire in time order when the watermark advances; a bundle ends after every
call and its rows are collected (sorted by state key within a bundle: Redis keeps no order).
:meth:`checkpoint` sends the checkpoint marker to every shard, as the sharding stage does, and
snapshots Flink's side (map states, timers, watermark); :meth:`restart` goes back to that
snapshot with a new operator (memory lost), as a restarted job does -- optionally with other
definitions, as a job resubmitted with changed definitions from a savepoint.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestream.udfs.contract.events import Event
from featurestream.udfs.definitions.defaults import default_definitions
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.features.layout import LAYOUT_ENTRY, ShardLayout
from featurestream.udfs.features.operator import FeatureShardOperator, OperatorCounters
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.features.point_in_time import ScoredEvents
from featurestream.udfs.features.processor import EntityState, FeatureProcessor, Row
from featurestream.udfs.features.routing import (
    EventRouter,
    ShardEvent,
    ShardGroup,
    SubtaskRecord,
    checkpoint_marker,
    decode_subtask_record,
    encode_subtask_record,
    subtask_record,
)
from featurestream.udfs.features.shard import CapturedRow, EntityShard, entity_of
from featurestream.udfs.telemetry.catalog import FlinkPath, Metric
from featurestream.udfs.wire.dead_letters import Problem
from featurestream.udfs.wire.frames import decode_source_frame, encode_source_frame

MIN_WATERMARK = -(2**63)
DAY = 86_400_000
EVENTS = "events"  # the built-in source's name (and, in the harness, its topic)


def user_definitions(windows: Iterable[str] = ("1m", "5m", "1h", "24h")) -> Definitions:
    """The built-in user features over ``windows`` (the built-in events on topic ``events``)."""
    return default_definitions(tuple(windows), EVENTS)


@dataclass(frozen=True)
class Record:
    """One event of a declared source: its fields as the source's decoder returns them."""

    source: str
    fields: Mapping[str, Any]


class PickleDecoder:
    """The in-memory decoder of every source: the record value is a pickled dict."""

    def decode(self, raw: bytes) -> dict[str, Any] | Problem:
        record = pickle.loads(raw)
        assert isinstance(record, dict)
        return record


def record_of(event: ShardEvent) -> dict[str, Any]:
    """The record a shard event came from (read back from its frame)."""
    value = pickle.loads(decode_source_frame(event.frame).value)
    assert isinstance(value, dict)
    return value


class MapState(dict[str, bytes]):
    """A shard's map state (the :class:`ShardState` port)."""

    def put(self, key: str, value: bytes) -> None:
        self[key] = value

    def put_all(self, entries: Iterable[tuple[str, bytes]]) -> None:
        self.update(entries)

    def remove(self, key: str) -> None:
        self.pop(key, None)


@dataclass
class HarnessTimers:
    """A shard's view of the harness's timers and watermark (the :class:`ShardTimers` port)."""

    harness: ShardHarness
    number: int

    def current_watermark(self) -> int:
        return self.harness.watermark

    def register_event_time_timer(self, timestamp: int) -> None:
        self.harness.timers.setdefault(self.number, set()).add(timestamp)


@dataclass
class RowList:
    """Rows as written at the end of each bundle, and the rows captured for scored events
    (the :class:`RowSink` port)."""

    rows: list[tuple[str, Row]] = field(default_factory=list)
    pending: list[tuple[str, Row]] = field(default_factory=list)
    captured: list[CapturedRow] = field(default_factory=list)

    def add(self, key: str, row: Row) -> None:
        self.pending.append((key, row))

    def add_captured(self, captured: CapturedRow) -> None:
        self.captured.append(captured)

    def flush(self) -> None:
        self.rows += sorted(self.pending, key=lambda key_row: key_row[0])
        self.pending.clear()


@dataclass
class DeadLetterList:
    """Rejected events with their problems (the :class:`DeadLetters` port)."""

    rejected: list[tuple[ShardEvent, Problem]] = field(default_factory=list)

    def reject(self, event: ShardEvent, problem: Problem) -> None:
        self.rejected.append((event, problem))


@dataclass
class Count:
    """A metric counter (the :class:`Counter` port)."""

    n: int = 0

    def inc(self, n: int = 1) -> None:
        self.n += n


@dataclass
class MetricsRecorder:
    """Every series registered, by its path and label values (the :class:`MetricGroup` port)."""

    counters: dict[tuple[FlinkPath, tuple[str, ...]], Count] = field(default_factory=dict)

    def counter(self, path: FlinkPath, values: Sequence[str]) -> Count:
        return self.counters.setdefault((path, tuple(values)), Count())

    def value(self, metric: Metric, series: int = 0, **labels: str) -> int:
        """The count of ``metric``'s ``series``-th series (0 if never registered) with these
        labels."""
        path = metric.flink_paths[series]
        found = self.counters.get((path, tuple(labels[key] for key in path.labels)))
        return 0 if found is None else found.n


@dataclass
class Snapshot:
    """Flink's side of a checkpoint: map states, timers and the watermark."""

    map_states: dict[int, MapState] = field(default_factory=dict)
    timers: dict[int, set[int]] = field(default_factory=dict)
    watermark: int = MIN_WATERMARK


@dataclass
class ShardHarness:
    definitions: Definitions
    lateness: int = DAY
    shard_count: int = 4
    scored: ScoredEvents | None = None  # whose rows the shards capture
    watermark: int = MIN_WATERMARK
    map_states: dict[int, MapState] = field(default_factory=dict)
    timers: dict[int, set[int]] = field(default_factory=dict)  # Flink's, per shard
    sink: RowList = field(default_factory=RowList)
    dead_letters: DeadLetterList = field(default_factory=DeadLetterList)
    metrics: MetricsRecorder = field(default_factory=MetricsRecorder)  # the operator's
    now_ms: int = 0  # the operator's clock (when rows are written)
    append_ms: int = 0  # the Kafka record timestamp of the frames
    snapshot: Snapshot = field(default_factory=Snapshot)
    failed: list[tuple[bytes, Problem]] = field(default_factory=list)  # undecodable frames
    operator: FeatureShardOperator = field(init=False)
    processors: dict[str, FeatureProcessor] = field(init=False)
    router: EventRouter = field(init=False)
    _offset: int = 0

    def __post_init__(self) -> None:
        self._start(self.definitions)

    @property
    def rows(self) -> list[tuple[str, Row]]:
        """Every row written, in order, with its state key ``<entity>:<id>``."""
        return self.sink.rows

    @property
    def rejected(self) -> list[tuple[ShardEvent, Problem]]:
        """Every event sent to the dead letters, with its problem."""
        return self.dead_letters.rejected

    @property
    def shards(self) -> Mapping[int, EntityShard]:
        """The operator's shards in memory, by shard number."""
        return self.operator.shards

    @property
    def stored(self) -> dict[int, dict[str, bytes]]:
        """The entity states in each shard's map state (shards without any left out)."""
        stored = {n: {k: b for k, b in m.items() if k != LAYOUT_ENTRY}
                  for n, m in self.map_states.items()}
        return {n: states for n, states in stored.items() if states}

    def layouts(self) -> dict[int, ShardLayout]:
        """The layout entry of each shard's map state that has one."""
        return {n: ShardLayout.from_bytes(m[LAYOUT_ENTRY]) for n, m in self.map_states.items()
                if LAYOUT_ENTRY in m}

    def process(self, event: Event | Record) -> None:
        """One event in a bundle of its own."""
        self.process_bundle([event])

    def process_bundle(self, events: Iterable[Event | Record]) -> None:
        """Events delivered in one bundle (rows coalesce per entity instance)."""
        groups, failed = self.router.group_by_shard([self.frame(e) for e in events])
        self.failed += failed
        if groups:
            self._deliver(subtask_record([ShardGroup(number, shard_events)
                                          for number, shard_events in groups.items()]))
        self.operator.end_bundle()

    def frame(self, event: Event | Record) -> bytes:
        """The source frame of ``event``, as the Kafka consumer would emit it."""
        if isinstance(event, Event):
            event = Record(EVENTS, event._asdict())
        source = next(s for s in self.definitions.sources if s.name == event.source)
        self._offset += 1
        return encode_source_frame(source.topic, 0, self._offset, self.append_ms,
                                   pickle.dumps(dict(event.fields)))

    def advance_watermark(self, watermark: int) -> None:
        """Fire every timer due at ``watermark`` in time order (one bundle)."""
        self.watermark = max(self.watermark, watermark)
        while True:
            due = [(t, n) for n, ts in self.timers.items() for t in ts if t <= self.watermark]
            if not due:
                break
            t, number = min(due)
            self.timers[number].discard(t)
            if not self.timers[number]:
                del self.timers[number]
            self.operator.on_timer(number, t, self._map_state(number), HarnessTimers(self, number))
        self.operator.end_bundle()

    def checkpoint(self) -> None:
        """Send every shard the checkpoint marker, then snapshot Flink's side."""
        self._deliver(checkpoint_marker(range(self.shard_count)))
        self.operator.end_bundle()
        self.snapshot = Snapshot(copy.deepcopy(self.map_states), copy.deepcopy(self.timers),
                                 self.watermark)

    def restart(self, definitions: Definitions | None = None) -> None:
        """Back to the last checkpoint: a new operator (memory lost), Flink's side restored;
        with ``definitions``, the job restarts running those instead."""
        self.map_states = copy.deepcopy(self.snapshot.map_states)
        self.timers = copy.deepcopy(self.snapshot.timers)
        self.watermark = self.snapshot.watermark
        self._start(definitions or self.definitions)

    def entities(self) -> dict[str, EntityState]:
        """Every entity instance held in memory, over all shards, by state key."""
        return {k: s for shard in self.operator.shards.values() for k, s in shard.entities.items()}

    def stored_states(self) -> dict[str, EntityState]:
        """Every entity instance in the map states (in the current definitions' layout)."""
        states = {}
        for m in self.stored.values():
            for key, data in m.items():
                processor = self.processors[entity_of(key)]
                state, windows = processor.from_bytes(data)
                assert state.layout == processor.layout_id, key
                processor.load_windows(state, windows)
                states[key] = state
        return states

    def state_bytes(self, states: Mapping[str, EntityState]) -> dict[str, bytes]:
        """``states`` in their stored form (comparable)."""
        return {k: self.processors[entity_of(k)].to_bytes(s) for k, s in states.items()}

    def latest_rows(self) -> dict[str, Row]:
        """The newest row written for each entity instance."""
        latest: dict[str, Row] = {}
        for key, row in self.rows:
            latest[key] = row
        return latest

    def _start(self, definitions: Definitions) -> None:
        self.definitions = definitions
        plans = compile_plans(definitions)
        self.processors = {name: FeatureProcessor(plan, self.lateness)
                           for name, plan in plans.items()}
        self.router = EventRouter(plans, {s.name: PickleDecoder() for s in definitions.sources},
                                  self.shard_count, scored=self.scored)
        self.operator = FeatureShardOperator(
            self.processors, self.shard_count, self.sink, self.dead_letters,
            OperatorCounters.register(self.metrics), clock=lambda: self.now_ms)

    def _map_state(self, number: int) -> MapState:
        return self.map_states.setdefault(number, MapState())

    def _deliver(self, record: SubtaskRecord) -> None:
        """``record`` over the wire, each group under its shard's key, as Flink scopes it."""
        for group in decode_subtask_record(encode_subtask_record(record)).groups:
            self.operator.process(group, self._map_state(group.key),
                                  HarnessTimers(self, group.key))


def as_of(row: Row) -> int:
    """A row's ``as_of`` (always an int)."""
    value = row["as_of"]
    assert isinstance(value, int)
    return value
