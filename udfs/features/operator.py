"""The feature job's keyed operator, free of Flink: :class:`FeatureShardOperator`.

The job keys its state by shard (``shard_of(entity key)``); this class holds every shard a
worker owns and does all of the keyed work: it loads a shard from its map state the first time
the shard is touched (reconciling the stored layout with the definitions, or refusing what
cannot be carried over: :mod:`udfs.features.layout`), counts a shard group's events into the
shard's entities, sends the rejected ones to the dead letters, keeps one event-time timer per
shard, stores the changed entities when a checkpoint marker arrives, and at the end of each
bundle writes the changed entities' rows and the rows captured for scored events
(:mod:`udfs.features.point_in_time`).

It talks to the outside through small ports: the current shard's map state and timer service
(passed with each call, as Flink scopes them to the current key), a row sink, dead letters,
counters and a clock. Its metrics are the catalog's (:mod:`udfs.telemetry.catalog`): events
in, dead letters by reason, rows written, and the freshness of each counted event, observed
once its row is written at the end of the bundle (:mod:`udfs.telemetry.freshness`).
``MaterializeFeatures`` (``jobs/features/functions.py``) adapts PyFlink's to them; the unit
tests' harness (``tests/harness.py``) drives the same class with in-memory ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

from featurestream.udfs.features.layout import LAYOUT_ENTRY, ShardLayout, reconcile
from featurestream.udfs.features.processor import FeatureProcessor, Row
from featurestream.udfs.features.routing import ShardEvent, ShardGroup
from featurestream.udfs.features.shard import CapturedRow, EntityShard, entity_of
from featurestream.udfs.telemetry.catalog import CAPTURED_ROWS, EVENTS_IN, ROWS_WRITTEN
from featurestream.udfs.telemetry.freshness import Freshness, wall_clock_ms
from featurestream.udfs.telemetry.metrics import Counter, DeadLetterCounters, MetricGroup, counter
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage
from featurestream.udfs.wire.frames import source_timestamps

# What the operator rejects (the sharding stage rejects the rest of the feature job's).
REJECTIONS = ((Stage.WINDOW, ErrorClass.LATE_EVENT), (Stage.WINDOW, ErrorClass.EXPIRED_EVENT))


class ShardState(Protocol):
    """The current shard's map state: state key -> stored state, plus :data:`LAYOUT_ENTRY`."""

    def items(self) -> Iterable[tuple[str, bytes]]: ...

    def put(self, key: str, value: bytes, /) -> None: ...

    def put_all(self, entries: Iterable[tuple[str, bytes]], /) -> None: ...

    def remove(self, key: str, /) -> None: ...


class ShardTimers(Protocol):
    """The current shard's event-time timers and the operator's watermark."""

    def current_watermark(self) -> int: ...

    def register_event_time_timer(self, timestamp: int, /) -> None: ...


class RowSink(Protocol):
    """Where feature rows go (Redis): buffered by ``add`` under the entity's state key
    (``<entity>:<id>``), with the rows captured for scored events by ``add_captured``; written
    by ``flush``."""

    def add(self, key: str, row: Row, /) -> None: ...

    def add_captured(self, captured: CapturedRow, /) -> None: ...

    def flush(self) -> None: ...


class DeadLetters(Protocol):
    """Where rejected events go (the DLQ), with the reason."""

    def reject(self, event: ShardEvent, problem: Problem, /) -> None: ...


@dataclass(frozen=True)
class OperatorCounters:
    """The operator's metrics."""

    events_in: Counter
    rows_written: Counter
    captured_rows: Counter
    dead_letters: DeadLetterCounters
    freshness: Freshness

    @classmethod
    def register(cls, group: MetricGroup) -> OperatorCounters:
        """Register the operator's metrics (the catalog's entries) in ``group``."""
        return cls(counter(group, EVENTS_IN), counter(group, ROWS_WRITTEN),
                   counter(group, CAPTURED_ROWS), DeadLetterCounters(group, REJECTIONS),
                   Freshness.register(group))


class FeatureShardOperator:
    """The shards of one keyed subtask: events and timers in, rows and dead letters out.

    ``rewrite_restored``: a shard loaded from state also writes the row of every entity it
    restores, changed or not (``featurestream rematerialize``: Redis lost its rows). A shard
    whose stored layout the definitions changed does so too: every row then shows the added
    features (warming up) at once, not only at each entity's next event.
    """

    def __init__(self, processors: Mapping[str, FeatureProcessor], shard_count: int,
                 rows: RowSink, dead_letters: DeadLetters, counters: OperatorCounters,
                 clock: Callable[[], int] = wall_clock_ms, rewrite_restored: bool = False
                 ) -> None:
        self._processors = processors
        self._rewrite_restored = rewrite_restored  # rows of every restored entity, once
        self._plans = {name: p.plan for name, p in processors.items()}
        self._shard_count = shard_count
        self._rows = rows
        self._dead_letters = dead_letters
        self._counters = counters
        self._clock = clock  # epoch ms, for freshness
        self._shards: dict[int, EntityShard] = {}  # by shard key
        self._touched: set[int] = set()  # shard keys touched in this bundle
        self._counted: list[Sequence[ShardEvent]] = []  # this bundle's events, but rejected

    @property
    def shards(self) -> Mapping[int, EntityShard]:
        """The shards in memory, by shard key."""
        return self._shards

    def process(self, group: ShardGroup, state: ShardState, timers: ShardTimers) -> None:
        """A shard group (of a ``routing.SubtaskRecord``): events for the shard with key
        ``group.key``, or its checkpoint marker.

        Its events are counted (the rejected ones go to the dead letters), or, for a checkpoint
        marker, the entities that events changed since the last one are stored and the entities
        cleared since are removed. Either way the shard's timer is registered if it needs one
        (a marker may be the first to touch a shard whose states changed definitions
        rescheduled).
        """
        shard = self._shard(group.key, state)
        if group.is_checkpoint_marker:
            if shard.layout_changed:
                state.put(LAYOUT_ENTRY, shard.layout.to_bytes())
                shard.layout_changed = False
            states = shard.take_states()
            state.put_all(states.stored.items())
            for gone in states.removed:
                state.remove(gone)
            self._register_timer(shard, timers)
            return
        events = group.events
        self._counters.events_in.inc(len(events))
        rejected = shard.add_events(events, timers.current_watermark())
        for event, problem in rejected:
            self._counters.dead_letters.count(problem)
            self._dead_letters.reject(event, problem)
        if rejected:
            refused = {id(event) for event, _ in rejected}
            events = [event for event in events if id(event) not in refused]
        self._counted.append(events)
        self._register_timer(shard, timers)

    def open_shard(self, key: int, state: ShardState) -> None:
        """Load the shard with key ``key`` now, not at its first event: state it cannot carry
        over (:mod:`udfs.features.layout`) is refused before any row of another shard is
        written from empty state."""
        self._shard(key, state)

    def on_timer(self, key: int, timestamp: int, state: ShardState, timers: ShardTimers
                 ) -> None:
        """The shard's timer for ``timestamp`` fired: process the expiries now due."""
        shard = self._shard(key, state)
        shard.timer_fired(timestamp)
        shard.advance(max(timestamp, timers.current_watermark()))
        self._register_timer(shard, timers)

    def end_bundle(self) -> None:
        """The rows of the entities changed in this bundle to the row sink, flushed; then the
        freshness of the bundle's counted events, whose rows are now written."""
        rows = captured_rows = 0
        for shard_key in self._touched:
            shard = self._shards[shard_key]
            changed = shard.take_rows()
            rows += len(changed)
            for key, row in changed.items():
                self._rows.add(key, row)
            for captured in shard.take_captured():
                self._rows.add_captured(captured)
                captured_rows += 1
        self._touched.clear()
        self._rows.flush()
        self._counters.rows_written.inc(rows)
        self._counters.captured_rows.inc(captured_rows)
        if self._counted:
            events = list(chain.from_iterable(self._counted))
            self._counted.clear()
            self._counters.freshness.observe([e.ts for e in events],
                                             source_timestamps(e.frame for e in events),
                                             self._clock())

    def _shard(self, key: int, state: ShardState) -> EntityShard:
        """The shard of ``key``, loaded from ``state`` the first time."""
        self._touched.add(key)
        shard = self._shards.get(key)
        if shard is None:
            stored = dict(state.items())
            entry = stored.pop(LAYOUT_ENTRY, None)
            old = None if entry is None else ShardLayout.from_bytes(entry)
            states = {k: self._processors[entity_of(k)].from_bytes(data)
                      for k, data in stored.items() if entity_of(k) in self._processors}
            removed = [k for k in stored if k not in states]
            latest = max((s.as_of for s, _ in states.values()), default=None)
            layout = reconcile(old, self._plans, self._shard_count, latest)
            encoded = layout.to_bytes()
            if encoded != entry:
                state.put(LAYOUT_ENTRY, encoded)
            for gone in removed:
                state.remove(gone)
            shard = self._shards[key] = EntityShard(self._processors, layout)
            shard.restore(states.items())
            if self._rewrite_restored or (entry is not None and encoded != entry):
                shard.rewrite_rows()
        return shard

    def _register_timer(self, shard: EntityShard, timers: ShardTimers) -> None:
        timer = shard.timer_to_register()
        if timer is not None:
            timers.register_event_time_timer(timer)
