"""The feature job's keyed operator, free of Flink: :class:`FeatureShardOperator`.

The job keys its state by shard (``shard_of(user_id)``); this class holds every shard a worker
owns and does all of the keyed work: it loads a shard from its map state the first time the
shard is touched (refusing state written with another shard count), counts a shard record's
events into the shard's users, sends the rejected ones to the dead letters, keeps one
event-time timer per shard, stores the changed users when a checkpoint marker arrives, and at
the end of each bundle writes the changed users' rows.

It talks to the outside through small ports: the current shard's map state and timer service
(passed with each call, as Flink scopes them to the current key), a row sink, dead letters and
counters. ``MaterializeFeatures`` (``jobs/features/functions.py``) adapts PyFlink's to them;
the unit tests' harness (``tests/harness.py``) drives the same class with in-memory ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from featurestream.udfs.features.processor import FeatureProcessor, Row
from featurestream.udfs.features.routing import ShardEvent, decode_shard_record
from featurestream.udfs.features.shard import SHARD_COUNT_ENTRY, UserShard, shard_count_problem
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem


class ShardState(Protocol):
    """The current shard's map state: user id -> stored state, plus :data:`SHARD_COUNT_ENTRY`."""

    def items(self) -> Iterable[tuple[str, bytes]]: ...

    def put(self, key: str, value: bytes, /) -> None: ...

    def put_all(self, entries: Iterable[tuple[str, bytes]], /) -> None: ...

    def remove(self, key: str, /) -> None: ...


class ShardTimers(Protocol):
    """The current shard's event-time timers and the operator's watermark."""

    def current_watermark(self) -> int: ...

    def register_event_time_timer(self, timestamp: int, /) -> None: ...


class RowSink(Protocol):
    """Where feature rows go (Redis): buffered by ``add``, written by ``flush``."""

    def add(self, user_id: str, row: Row, /) -> None: ...

    def flush(self) -> None: ...


class DeadLetters(Protocol):
    """Where rejected events go (the DLQ), with the reason."""

    def reject(self, event: ShardEvent, problem: Problem, /) -> None: ...


class Counter(Protocol):
    """A monotonic metric."""

    def inc(self, n: int = 1, /) -> None: ...


@dataclass(frozen=True)
class OperatorCounters:
    """The operator's metrics (field names are the metric names)."""

    events_in: Counter
    late_events: Counter
    expired_events: Counter
    rows_written: Counter


class StoredLayoutMismatch(RuntimeError):
    """The stored state was written with another shard count: the job must not run on it."""


class FeatureShardOperator:
    """The shards of one keyed subtask: events and timers in, rows and dead letters out."""

    def __init__(self, processor: FeatureProcessor, shard_count: int, rows: RowSink,
                 dead_letters: DeadLetters, counters: OperatorCounters) -> None:
        self._processor = processor
        self._shard_count = shard_count
        self._rows = rows
        self._dead_letters = dead_letters
        self._counters = counters
        self._rejections = {ErrorClass.LATE_EVENT: counters.late_events,
                            ErrorClass.EXPIRED_EVENT: counters.expired_events}
        self._shards: dict[int, UserShard] = {}  # by shard key
        self._touched: set[int] = set()  # shard keys touched in this bundle

    @property
    def shards(self) -> Mapping[int, UserShard]:
        """The shards in memory, by shard key."""
        return self._shards

    def process(self, key: int, record: bytes, state: ShardState, timers: ShardTimers) -> None:
        """A shard record (``routing.encode_shard_record``) for the shard with key ``key``.

        Its events are counted (the rejected ones go to the dead letters), or, for a checkpoint
        marker, the users that events changed since the last one are stored and the users
        cleared since are removed.
        """
        shard = self._shard(key, state)
        shard_record = decode_shard_record(record)
        if shard_record.is_checkpoint_marker:
            states = shard.take_states()
            state.put_all(states.stored.items())
            for user_id in states.removed:
                state.remove(user_id)
            return
        self._counters.events_in.inc(len(shard_record.events))
        for event, problem in shard.add_events(shard_record.events, timers.current_watermark()):
            self._rejections[problem.error_class].inc()
            self._dead_letters.reject(event, problem)
        self._register_timer(shard, timers)

    def on_timer(self, key: int, timestamp: int, state: ShardState, timers: ShardTimers
                 ) -> None:
        """The shard's timer for ``timestamp`` fired: process the expiries now due."""
        shard = self._shard(key, state)
        shard.timer_fired(timestamp)
        shard.advance(max(timestamp, timers.current_watermark()))
        self._register_timer(shard, timers)

    def end_bundle(self) -> None:
        """The rows of the users changed in this bundle to the row sink, flushed."""
        rows = 0
        for key in self._touched:
            changed = self._shards[key].take_rows()
            rows += len(changed)
            for user_id, row in changed.items():
                self._rows.add(user_id, row)
        self._touched.clear()
        self._rows.flush()
        self._counters.rows_written.inc(rows)

    def _shard(self, key: int, state: ShardState) -> UserShard:
        """The shard of ``key``, loaded from ``state`` the first time."""
        self._touched.add(key)
        shard = self._shards.get(key)
        if shard is None:
            stored = dict(state.items())
            written_with = stored.pop(SHARD_COUNT_ENTRY, None)
            problem = shard_count_problem(written_with, self._shard_count)
            if problem is not None:
                raise StoredLayoutMismatch(problem)
            if written_with is None:
                state.put(SHARD_COUNT_ENTRY, str(self._shard_count).encode())
            shard = self._shards[key] = UserShard(self._processor)
            shard.restore(stored.items())
        return shard

    def _register_timer(self, shard: UserShard, timers: ShardTimers) -> None:
        timer = shard.timer_to_register()
        if timer is not None:
            timers.register_event_time_timer(timer)
