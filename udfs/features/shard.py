"""The entities of one state shard: their windows, their expiries, and what changed since the
last bundle (:class:`udfs.features.operator.FeatureShardOperator` keeps one per shard).

The feature job keys its state by shard (``shard_of(entity key)``), not by entity, and one
event-time timer per shard drives every entity's expiries. An :class:`EntityShard` keeps its
entities in memory under their state keys (``<entity>:<id>``, also their Redis key after the
prefix); Flink's state (a map state key -> :meth:`FeatureProcessor.to_bytes` per shard) is written
from :meth:`EntityShard.take_states` only when a checkpoint is coming (the checkpoint marker, see
``FrameBatcher.java``) and read back with :meth:`EntityShard.restore` after a restart: an
entity is pickled once per checkpoint, not once per bundle, and a bundle makes no state
requests at all.

Rows are built once per changed entity per bundle (:meth:`EntityShard.take_rows`, coalesced):
the newest row is the only one Redis keeps, and building a row costs more than counting an event.

An entity's state is stored when an event changed it (or it is cleared), not when it only aged:
expiry depends on nothing but the stored state and event time, so a restored shard replays it
(the stored ``expiry`` is due again at the restored watermark) and reaches the same state.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from featurestream.udfs.features.layout import ShardLayout, convert, warming
from featurestream.udfs.features.point_in_time import row_before
from featurestream.udfs.features.processor import EntityState, FeatureProcessor, Row
from featurestream.udfs.features.routing import PROBE, ShardEvent
from featurestream.udfs.wire.dead_letters import Problem


def entity_of(key: str) -> str:
    """The entity name of a state key ``<entity>:<id>``."""
    return key[:key.index(":")]


@dataclass(frozen=True, slots=True)
class CapturedRow:
    """The row of an entity for a scored event, captured before the event counted
    (:mod:`udfs.features.point_in_time`); None: no row. ``late``: the event arrived behind the
    watermark, whose expiries may already have moved the row past its time."""

    key: str  # the entity's state key ``<entity>:<id>``
    event_id: str
    ts: int
    row: Row | None
    late: bool = False


@dataclass
class ShardStates:
    """What to write to Flink state: states to store, entities whose state is gone."""

    stored: dict[str, bytes]
    removed: list[str]


class EntityShard:
    """The entities of one shard, their pending expiries and the shard's event-time timers."""

    def __init__(self, processors: Mapping[str, FeatureProcessor], layout: ShardLayout) -> None:
        self._processors = processors
        self.layout = layout
        self.layout_changed = False  # a pending start was recorded: store the layout again
        self._warming = {name: warming(p.plan, layout.entities[name].since)
                         for name, p in processors.items()}
        self._pending = {name for name, entity in layout.entities.items()
                         if None in entity.since.values()}
        self.entities: dict[str, EntityState] = {}
        self._expiries: list[tuple[int, str]] = []  # (expiry, key); stale entries skipped
        self._changed: set[str] = set()  # rows to build at the end of the bundle
        self._dirty: set[str] = set()  # states to store (changed by an event) or remove
        self._final_rows: dict[str, Row] = {}  # last rows of entities cleared in this bundle
        self._captured: list[CapturedRow] = []  # for scored events, since the last bundle
        self.timers: set[int] = set()  # registered with Flink and not yet fired

    def restore(self, stored: Iterable[tuple[str, tuple[EntityState, list]]]) -> None:
        """Load the entities of this shard from Flink state (after a start or restore); states
        in an older layout are carried over (:func:`udfs.features.layout.convert`) and stored
        again at the next checkpoint."""
        for key, (state, windows) in stored:
            processor = self._processors[entity_of(key)]
            if state.layout != processor.layout_id:
                from_layout = self.layout.entities[entity_of(key)].layouts[state.layout]
                windows = convert(windows, from_layout, processor.plan,
                                  processor.empty_stored())
                state.layout = processor.layout_id
                self._dirty.add(key)
            processor.load_windows(state, windows)
            self.entities[key] = state
            if key in self._dirty:
                state.expiry = None
                self._schedule(key, state, processor)
            elif state.expiry is not None:
                self._expiries.append((state.expiry, key))
        heapq.heapify(self._expiries)

    def add_events(self, events: Sequence[ShardEvent], watermark: int
                   ) -> list[tuple[ShardEvent, Problem]]:
        """Count each event for its entity; returns the events rejected (late or expired).
        A scored event's row is captured first, whether or not it then counts."""
        processors = self._processors
        entities = self.entities
        pending = self._pending
        rejected = []
        for event in events:
            key = event.key
            processor = processors[event.entity]
            if event.scored is not None:
                before = row_before(processor, entities.get(key), event.ts)
                self._captured.append(CapturedRow(key, event.scored, event.ts, before,
                                                  event.ts < watermark))
                if event.source == PROBE:
                    continue
            if pending and event.entity in pending:
                self._start(event.entity, event.ts)
            state = processor.accept(entities.get(key), event.ts, event.source, event.values,
                                     watermark)
            if isinstance(state, Problem):
                rejected.append((event, state))
                continue
            entities[key] = state
            self._changed.add(key)
            self._dirty.add(key)
            self._schedule(key, state, processor)
        return rejected

    def advance(self, watermark: int) -> None:
        """Process every expiry due at ``watermark``: age buckets out, clear idle entities.

        An entity with several expiries due goes through each in order (its ``as_of`` ends at
        the last one), as a timer per entity would; only its final row is built.
        """
        expiries = self._expiries
        while expiries and expiries[0][0] <= watermark:
            due, key = heapq.heappop(expiries)
            state = self.entities.get(key)
            if state is None or state.expiry != due:
                continue  # superseded by a later schedule, or the entity is gone
            processor = self._processors[entity_of(key)]
            if processor.is_empty(state) and due >= processor.cleanup_time(state):
                self._clear(key, state, processor)
                continue
            if processor.advance(state, due):
                self._changed.add(key)
            self._schedule(key, state, processor)

    def next_expiry(self) -> int | None:
        """The earliest pending expiry of any entity of the shard, or None."""
        expiries = self._expiries
        while expiries:
            due, key = expiries[0]
            state = self.entities.get(key)
            if state is not None and state.expiry == due:
                return due
            heapq.heappop(expiries)
        return None

    def timer_to_register(self) -> int | None:
        """The event-time timer to register now (recorded as registered), if any is needed.

        None when no entity has a pending expiry or a registered timer fires no later than the
        earliest one (it will fire, advance the shard and ask again).
        """
        due = self.next_expiry()
        if due is None or (self.timers and min(self.timers) <= due):
            return None
        self.timers.add(due)
        return due

    def timer_fired(self, timestamp: int) -> None:
        """Flink fired the timer registered for ``timestamp``."""
        self.timers.discard(timestamp)

    def take_rows(self) -> dict[str, Row]:
        """The rows of the entities changed since the last call (the end of the last bundle),
        by state key."""
        rows, self._final_rows = self._final_rows, {}
        for key in self._changed:
            rows[key] = self._row(key, self.entities[key])
        self._changed.clear()
        return rows

    def rewrite_rows(self) -> None:
        """Build the row of every entity at the end of the bundle, changed or not (the online
        store rewritten from state)."""
        self._changed.update(self.entities)

    def drop_rows(self) -> None:
        """Forget the changes since the last bundle without building rows (a replay that
        needs no online store)."""
        self._changed.clear()
        self._final_rows.clear()

    def take_captured(self) -> list[CapturedRow]:
        """The rows captured for scored events since the last call, in event order."""
        captured, self._captured = self._captured, []
        return captured

    def take_states(self) -> ShardStates:
        """The states events changed since the last call (the last checkpoint), and the
        entities cleared since."""
        stored: dict[str, bytes] = {}
        removed: list[str] = []
        for key in self._dirty:
            state = self.entities.get(key)
            if state is None:
                removed.append(key)
            else:
                stored[key] = self._processors[entity_of(key)].to_bytes(state)
        self._dirty.clear()
        return ShardStates(stored, removed)

    def _start(self, entity: str, ts: int) -> None:
        """The shard's first event after a change: pending accumulators count from ``ts``."""
        self.layout.entities[entity].start_pending(ts)
        self._warming[entity] = warming(self._processors[entity].plan,
                                        self.layout.entities[entity].since)
        self._pending.discard(entity)
        self.layout_changed = True

    def _row(self, key: str, state: EntityState) -> Row:
        entity = entity_of(key)
        row = self._processors[entity].row(state)
        warm = self._warming[entity]
        if warm:
            pending = {name: until for name, until in warm
                       if until is None or until > state.as_of}
            if pending:
                row["warming_up"] = pending
        return row

    def _schedule(self, key: str, state: EntityState, processor: FeatureProcessor) -> None:
        due = processor.next_expiry(state)
        if due != state.expiry:
            state.expiry = due
            if due is not None:
                heapq.heappush(self._expiries, (due, key))

    def _clear(self, key: str, state: EntityState, processor: FeatureProcessor) -> None:
        if key in self._changed:  # its last row (windows just emptied) is still unwritten
            self._final_rows[key] = self._row(key, state)
            self._changed.discard(key)
        del self.entities[key]
        self._dirty.add(key)
