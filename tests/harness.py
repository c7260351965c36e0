"""A tiny keyed-operator harness: drives :class:`UserShard` objects like the Flink job does.

It routes events to shards by :func:`shard_of`, keeps the Flink side of each shard -- its
registered event-time timers and its map state (user id -> stored bytes) -- fires timers in
time order when the watermark advances, and ends a bundle after every call, collecting the
rows. :meth:`ShardHarness.checkpoint` stores the changed states as the checkpoint marker makes
``MaterializeFeatures`` do and snapshots the timers and the watermark; :meth:`restart` goes back
to that snapshot with empty memory, as a restarted job does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.processor import FeatureProcessor, Rejection, Row, UserState
from featurestream.udfs.features.routing import ShardEvent, shard_of
from featurestream.udfs.features.shard import UserShard
from featurestream.udfs.features.windows import TYPE_INDEX

MIN_WATERMARK = -(2**63)


def shard_event(event: Event) -> ShardEvent:
    """The tuple the sharding stage sends for ``event`` (its frame: the event id)."""
    return (event.user_id, event.ts, TYPE_INDEX[event.event_type], event.amount,
            event.item_id, event.event_id.encode())


@dataclass
class ShardHarness:
    processor: FeatureProcessor
    shard_count: int = 4
    watermark: int = MIN_WATERMARK
    shards: dict[int, UserShard] = field(default_factory=dict)
    timers: dict[int, set[int]] = field(default_factory=dict)  # Flink's, per shard
    stored: dict[int, dict[str, bytes]] = field(default_factory=dict)  # the map state
    rows: list[tuple[str, Row]] = field(default_factory=list)
    rejected: list[tuple[ShardEvent, Rejection]] = field(default_factory=list)
    snapshot: tuple[dict[int, set[int]], int] = field(  # timers, watermark
        default_factory=lambda: ({}, MIN_WATERMARK))

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
            shard = self._shard(number)
            self.rejected += shard.add_events(shard_events, self.watermark)
            self._register(number, shard)
        self._end_bundle()

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
            shard = self._shard(number)
            shard.timer_fired(t)
            shard.advance(self.watermark)
            self._register(number, shard)
        self._end_bundle()

    def checkpoint(self) -> None:
        """Store what the checkpoint marker stores; snapshot Flink's timers and watermark."""
        for number, shard in self.shards.items():
            states = shard.take_states()
            stored = self.stored.setdefault(number, {})
            stored.update(states.stored)
            for user_id in states.removed:
                stored.pop(user_id, None)
            if not stored:
                del self.stored[number]
        self.snapshot = ({n: set(ts) for n, ts in self.timers.items()}, self.watermark)

    def restart(self) -> None:
        """Back to the last checkpoint: memory lost, Flink's timers and watermark restored."""
        self.shards.clear()
        timers, self.watermark = self.snapshot
        self.timers = {n: set(ts) for n, ts in timers.items()}

    def users(self) -> dict[str, UserState]:
        """Every user held in memory, over all shards."""
        return {u: s for shard in self.shards.values() for u, s in shard.users.items()}

    def stored_users(self) -> dict[str, UserState]:
        """Every user in the map state, over all shards."""
        return {u: UserState.from_bytes(b) for m in self.stored.values() for u, b in m.items()}

    def latest_rows(self) -> dict[str, Row]:
        latest: dict[str, Row] = {}
        for key, row in self.rows:
            latest[key] = row
        return latest

    def _shard(self, number: int) -> UserShard:
        shard = self.shards.get(number)
        if shard is None:
            shard = self.shards[number] = UserShard(self.processor)
            shard.restore(self.stored.get(number, {}).items())
        return shard

    def _register(self, number: int, shard: UserShard) -> None:
        timer = shard.timer_to_register()
        if timer is not None:
            self.timers.setdefault(number, set()).add(timer)

    def _end_bundle(self) -> None:
        rows: list[tuple[str, Row]] = []
        for shard in self.shards.values():
            rows += shard.take_rows().items()
        self.rows += sorted(rows, key=lambda user_row: user_row[0])
