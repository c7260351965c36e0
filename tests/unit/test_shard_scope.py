"""The keyed adapter's shard ports switch PyFlink's current key only when the operator touches
state or registers a timer, always before it does, and end on the record's key."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pyflink.common import Row

from featurestream.jobs.features.shard_scope import ShardScope


class Backend:
    """Records what the scope asks of PyFlink's keyed state backend, map state and timers."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def set_current_key(self, key: Row) -> None:
        self.calls.append(("key", key[0]))

    def put(self, key: str, value: bytes) -> None:
        self.calls.append(("put", key))

    def put_all(self, entries: Any) -> None:
        self.calls.append(("put_all", dict(entries)))

    def remove(self, key: str) -> None:
        self.calls.append(("remove", key))

    def items(self) -> list[tuple[str, bytes]]:
        self.calls.append(("items",))
        return []

    def register_event_time_timer(self, timestamp: int) -> None:
        self.calls.append(("timer", timestamp))

    def current_watermark(self) -> int:
        return 42


def test_the_key_switches_before_state_or_timers_are_touched_and_only_then() -> None:
    backend = Backend()
    scope = ShardScope(SimpleNamespace(_keyed_state_backend=backend), backend, backend, 7)
    scope.select(7)
    scope.put("user:a", b"x")  # the record's own key: PyFlink set it already
    scope.select(9)
    assert scope.current_watermark() == 42  # the operator's, not a shard's
    scope.select(11)
    assert list(scope.items()) == []
    scope.put_all([("user:b", b"y")])
    scope.remove("user:c")
    scope.register_event_time_timer(60_000)
    scope.select(13)
    scope.register_event_time_timer(120_000)
    scope.restore()
    assert backend.calls == [("put", "user:a"), ("key", 11), ("items",),
                             ("put_all", {"user:b": b"y"}), ("remove", "user:c"),
                             ("timer", 60_000), ("key", 13), ("timer", 120_000), ("key", 7)]


def test_a_record_that_touches_nothing_never_switches() -> None:
    backend = Backend()
    scope = ShardScope(SimpleNamespace(_keyed_state_backend=backend), backend, backend, 7)
    for key in (7, 9, 11):
        scope.select(key)
    scope.restore()
    assert backend.calls == []
