"""The last value read of each key and when, so a reader can answer from it while its source
is down (labelled, and only as old as the caller allows)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

_Value = TypeVar("_Value")


@dataclass(frozen=True, slots=True)
class Recalled(Generic[_Value]):
    """A remembered value and its age: ms since it was last read from the source."""

    value: _Value
    age_ms: int


class LastKnown(Generic[_Value]):
    """At most ``max_entries`` values, least recently read dropped first (LRU).

    Why read time and not the row's write time: at the moment it was read the value *was* the
    source's, so ``now - read time`` bounds how far it can lag the source (a write time would
    also age rows that are current but simply not updated lately).
    """

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, _Value]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, key: Hashable, value: _Value) -> None:
        """``value`` was just read for ``key``: keep it (as the newest), evicting the oldest."""
        entries = self._entries
        entries[key] = (self._clock(), value)
        entries.move_to_end(key)
        if len(entries) > self._max_entries:
            entries.popitem(last=False)

    def recall(self, key: Hashable, max_age_ms: int) -> Recalled[_Value] | None:
        """The value last read for ``key`` if read at most ``max_age_ms`` ago, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age_ms = int((self._clock() - entry[0]) * 1000)
        return Recalled(entry[1], age_ms) if age_ms <= max_age_ms else None
