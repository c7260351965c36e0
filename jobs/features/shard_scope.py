"""PyFlink's map state and timer service as the ports of one shard at a time, switching
PyFlink's current key to that shard's only when the operator touches them.

A keyed subtask's record holds the groups of all the shards it owns (one per key group by
default: dozens). The operator touches Flink only to load a shard, at checkpoint markers and to
register a timer; most groups do none of these, so switching the key for every group would cost
a key encoding per group for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyflink.datastream import RuntimeContext

from featurestream.jobs import pyflink_compat


class ShardScope:
    """The ``ShardState`` and ``ShardTimers`` ports of the shard :meth:`select` names."""

    def __init__(self, runtime_context: RuntimeContext, users: Any, timers: Any,
                 current: int) -> None:
        """``users``: the map state; ``timers``: the timer service; ``current``: the key
        PyFlink set for the record."""
        self._runtime_context = runtime_context
        self._users = users
        self._timers = timers
        self._record_key = self._current = current
        self._selected = current

    def select(self, key: int) -> None:
        """Work on the shard with Flink key ``key`` (PyFlink's key follows on first use)."""
        self._selected = key

    def restore(self) -> None:
        """Back to the record's key, as PyFlink set it."""
        self._selected = self._record_key
        self._enter()

    def _enter(self) -> None:
        if self._current != self._selected:
            pyflink_compat.switch_key(self._runtime_context, self._selected)
            self._current = self._selected

    def items(self) -> Iterable[tuple[str, bytes]]:
        self._enter()
        return self._users.items()

    def put(self, key: str, value: bytes, /) -> None:
        self._enter()
        self._users.put(key, value)

    def put_all(self, entries: Iterable[tuple[str, bytes]], /) -> None:
        self._enter()
        self._users.put_all(entries)

    def remove(self, key: str, /) -> None:
        self._enter()
        self._users.remove(key)

    def current_watermark(self) -> int:
        return self._timers.current_watermark()

    def register_event_time_timer(self, timestamp: int, /) -> None:
        self._enter()
        self._timers.register_event_time_timer(timestamp)
