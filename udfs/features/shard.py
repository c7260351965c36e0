"""The users of one state shard: their windows, their expiries, and what changed since the
last bundle (:class:`udfs.features.operator.FeatureShardOperator` keeps one per shard).

The feature job keys its state by shard (``shard_of(user_id)``), not by user, and one
event-time timer per shard drives every user's expiries. A :class:`UserShard` keeps its users in
memory; Flink's state (a map user id -> :meth:`UserState.to_bytes` per shard) is written from
:meth:`UserShard.take_states` only when a checkpoint is coming (the checkpoint marker, see
``FrameBatcher.java``) and read back with :meth:`UserShard.restore` after a restart: a user is
pickled once per checkpoint, not once per bundle, and a bundle makes no state requests at all.

Rows are built once per changed user per bundle (:meth:`UserShard.take_rows`, coalesced): the
newest row is the only one Redis keeps, and building a row costs more than counting an event.

A user's state is stored when an event changed it (or it is cleared), not when it only aged:
expiry depends on nothing but the stored state and event time, so a restored shard replays it
(the stored ``expiry`` is due again at the restored watermark) and reaches the same state.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from featurestream.udfs.features.processor import FeatureProcessor, Row, UserState
from featurestream.udfs.features.routing import ShardEvent
from featurestream.udfs.wire.dead_letters import Problem

SHARD_COUNT_ENTRY = ""  # the map entry recording the shard count (user ids are never empty)


def shard_count_problem(written_with: bytes | None, shards: int) -> str | None:
    """Why a shard's stored state cannot be used with ``shards`` shards, if it cannot.

    Users are assigned to shards by ``crc32(user_id) % shards``: another count would look
    for every user in the wrong shard and silently start its windows from nothing.
    """
    if written_with is None or int(written_with) == shards:
        return None
    return (f"this state was written with {int(written_with)} state shards, but "
            f"FEATURESTREAM_STATE_SHARDS is {shards}: set it back to {int(written_with)} (the "
            "shard count is fixed for the life of the state)")


@dataclass
class ShardStates:
    """What to write to Flink state: states to store, users whose state is gone."""

    stored: dict[str, bytes]
    removed: list[str]


class UserShard:
    """The users of one shard, their pending expiries and the shard's event-time timers."""

    def __init__(self, processor: FeatureProcessor) -> None:
        self._processor = processor
        self.users: dict[str, UserState] = {}
        self._expiries: list[tuple[int, str]] = []  # (expiry, user); stale entries skipped
        self._changed: set[str] = set()  # rows to build at the end of the bundle
        self._dirty: set[str] = set()  # states to store (changed by an event) or remove
        self._final_rows: dict[str, Row] = {}  # last rows of users cleared in this bundle
        self.timers: set[int] = set()  # registered with Flink and not yet fired

    def restore(self, stored: Iterable[tuple[str, bytes]]) -> None:
        """Load the users of this shard from Flink state (after a start or restore)."""
        for user_id, data in stored:
            state = UserState.from_bytes(data)
            self.users[user_id] = state
            if state.expiry is not None:
                self._expiries.append((state.expiry, user_id))
        heapq.heapify(self._expiries)

    def add_events(self, events: Sequence[ShardEvent], watermark: int
                   ) -> list[tuple[ShardEvent, Problem]]:
        """Count each event for its user; returns the events rejected (late or expired)."""
        accept = self._processor.accept
        users = self.users
        rejected = []
        for event in events:
            user_id = event.user_id
            state = accept(users.get(user_id), event.ts, event.type_index, event.amount,
                           event.item_id, watermark)
            if isinstance(state, Problem):
                rejected.append((event, state))
                continue
            users[user_id] = state
            self._changed.add(user_id)
            self._dirty.add(user_id)
            self._schedule(user_id, state)
        return rejected

    def advance(self, watermark: int) -> None:
        """Process every expiry due at ``watermark``: age buckets out, clear idle users.

        A user with several expiries due goes through each in order (its ``as_of`` ends at the
        last one), as a timer per user would; only its final row is built.
        """
        processor = self._processor
        expiries = self._expiries
        while expiries and expiries[0][0] <= watermark:
            due, user_id = heapq.heappop(expiries)
            state = self.users.get(user_id)
            if state is None or state.expiry != due:
                continue  # superseded by a later schedule, or the user is gone
            if processor.is_empty(state) and due >= processor.cleanup_time(state):
                self._clear(user_id, state)
                continue
            if processor.advance(state, due):
                self._changed.add(user_id)
            self._schedule(user_id, state)

    def next_expiry(self) -> int | None:
        """The earliest pending expiry of any user of the shard, or None."""
        expiries = self._expiries
        while expiries:
            due, user_id = expiries[0]
            state = self.users.get(user_id)
            if state is not None and state.expiry == due:
                return due
            heapq.heappop(expiries)
        return None

    def timer_to_register(self) -> int | None:
        """The event-time timer to register now (recorded as registered), if any is needed.

        None when no user has a pending expiry or a registered timer fires no later than the
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
        """The rows of the users changed since the last call (the end of the last bundle)."""
        rows, self._final_rows = self._final_rows, {}
        for user_id in self._changed:
            rows[user_id] = self._processor.row(self.users[user_id])
        self._changed.clear()
        return rows

    def take_states(self) -> ShardStates:
        """The states events changed since the last call (the last checkpoint), and the users
        cleared since."""
        stored: dict[str, bytes] = {}
        removed: list[str] = []
        for user_id in self._dirty:
            state = self.users.get(user_id)
            if state is None:
                removed.append(user_id)
            else:
                stored[user_id] = state.to_bytes()
        self._dirty.clear()
        return ShardStates(stored, removed)

    def _schedule(self, user_id: str, state: UserState) -> None:
        due = self._processor.next_expiry(state)
        if due != state.expiry:
            state.expiry = due
            heapq.heappush(self._expiries, (due, user_id))

    def _clear(self, user_id: str, state: UserState) -> None:
        if user_id in self._changed:  # its last row (windows just emptied) is still unwritten
            self._final_rows[user_id] = self._processor.row(state)
            self._changed.discard(user_id)
        del self.users[user_id]
        self._dirty.add(user_id)
