"""A keyed-operator harness: drives :class:`FeatureShardOperator` -- the class the Flink job runs
-- through in-memory ports, the way Flink drives it.

Events go to shards by :func:`shard_of` (the harness keys shard ``i`` by ``i``), one shard
record per shard per bundle; each shard's map state is a dict, its timers a set; timers fire in
time order when the watermark advances; a bundle ends after every call and its rows are
collected (sorted by user within a bundle: Redis keeps no order). :meth:`checkpoint` sends the
checkpoint marker to every shard, as the sharding stage does, and snapshots Flink's side (map
states, timers, watermark); :meth:`restart` goes back to that snapshot with a new operator
(memory lost), as a restarted job does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.operator import FeatureShardOperator, OperatorCounters
from featurestream.udfs.features.processor import FeatureProcessor, Row, UserState
from featurestream.udfs.features.routing import (
    ShardEvent,
    checkpoint_marker,
    encode_shard_record,
    shard_of,
    shard_record,
)
from featurestream.udfs.features.shard import SHARD_COUNT_ENTRY, UserShard
from featurestream.udfs.features.windows import TYPE_INDEX
from featurestream.udfs.wire.dead_letters import Problem

MIN_WATERMARK = -(2**63)


def shard_event(event: Event) -> ShardEvent:
    """What the sharding stage sends for ``event`` (its frame: the event id)."""
    return ShardEvent(event.user_id, event.ts, TYPE_INDEX[event.event_type], event.amount,
                      event.item_id, event.event_id.encode())


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
    """Rows as written at the end of each bundle (the :class:`RowSink` port)."""

    rows: list[tuple[str, Row]] = field(default_factory=list)
    pending: list[tuple[str, Row]] = field(default_factory=list)

    def add(self, user_id: str, row: Row) -> None:
        self.pending.append((user_id, row))

    def flush(self) -> None:
        self.rows += sorted(self.pending, key=lambda user_row: user_row[0])
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
class Snapshot:
    """Flink's side of a checkpoint: map states, timers and the watermark."""

    map_states: dict[int, MapState] = field(default_factory=dict)
    timers: dict[int, set[int]] = field(default_factory=dict)
    watermark: int = MIN_WATERMARK


@dataclass
class ShardHarness:
    processor: FeatureProcessor
    shard_count: int = 4
    watermark: int = MIN_WATERMARK
    map_states: dict[int, MapState] = field(default_factory=dict)
    timers: dict[int, set[int]] = field(default_factory=dict)  # Flink's, per shard
    sink: RowList = field(default_factory=RowList)
    dead_letters: DeadLetterList = field(default_factory=DeadLetterList)
    counts: dict[str, Count] = field(default_factory=lambda: {  # the operator's metrics
        f.name: Count() for f in fields(OperatorCounters)})
    snapshot: Snapshot = field(default_factory=Snapshot)
    operator: FeatureShardOperator = field(init=False)

    def __post_init__(self) -> None:
        self.operator = self._new_operator()

    @property
    def rows(self) -> list[tuple[str, Row]]:
        """Every row written, in order."""
        return self.sink.rows

    @property
    def rejected(self) -> list[tuple[ShardEvent, Problem]]:
        """Every event sent to the dead letters, with its problem."""
        return self.dead_letters.rejected

    @property
    def shards(self) -> Mapping[int, UserShard]:
        """The operator's shards in memory, by shard number."""
        return self.operator.shards

    @property
    def stored(self) -> dict[int, dict[str, bytes]]:
        """The users in each shard's map state (shards without users left out)."""
        stored = {n: {u: b for u, b in m.items() if u != SHARD_COUNT_ENTRY}
                  for n, m in self.map_states.items()}
        return {n: users for n, users in stored.items() if users}

    def process(self, event: Event) -> None:
        """One event in a bundle of its own."""
        self.process_bundle([event])

    def process_bundle(self, events: Iterable[Event]) -> None:
        """Events delivered in one bundle (rows coalesce per user)."""
        by_shard: dict[int, list[ShardEvent]] = {}
        for event in events:
            by_shard.setdefault(shard_of(event.user_id, self.shard_count), []).append(
                shard_event(event))
        for number, shard_events in by_shard.items():
            self._deliver(number, encode_shard_record(shard_record(number, shard_events)))
        self.operator.end_bundle()

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
        for number in range(self.shard_count):
            self._deliver(number, encode_shard_record(checkpoint_marker(number)))
        self.operator.end_bundle()
        self.snapshot = Snapshot(copy.deepcopy(self.map_states), copy.deepcopy(self.timers),
                                 self.watermark)

    def restart(self) -> None:
        """Back to the last checkpoint: a new operator (memory lost), Flink's side restored."""
        self.map_states = copy.deepcopy(self.snapshot.map_states)
        self.timers = copy.deepcopy(self.snapshot.timers)
        self.watermark = self.snapshot.watermark
        self.operator = self._new_operator()

    def users(self) -> dict[str, UserState]:
        """Every user held in memory, over all shards."""
        return {u: s for shard in self.operator.shards.values() for u, s in shard.users.items()}

    def stored_users(self) -> dict[str, UserState]:
        """Every user in the map states, over all shards."""
        return {u: UserState.from_bytes(b) for m in self.stored.values() for u, b in m.items()}

    def latest_rows(self) -> dict[str, Row]:
        """The newest row written for each user."""
        latest: dict[str, Row] = {}
        for key, row in self.rows:
            latest[key] = row
        return latest

    def _new_operator(self) -> FeatureShardOperator:
        return FeatureShardOperator(self.processor, self.shard_count, self.sink,
                                    self.dead_letters, OperatorCounters(**self.counts))

    def _map_state(self, number: int) -> MapState:
        return self.map_states.setdefault(number, MapState())

    def _deliver(self, number: int, record: bytes) -> None:
        self.operator.process(number, record, self._map_state(number), HarnessTimers(self, number))


def as_of(row: Row) -> int:
    """A row's ``as_of`` (always an int)."""
    value = row["as_of"]
    assert isinstance(value, int)
    return value
