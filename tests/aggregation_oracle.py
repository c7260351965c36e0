"""A brute-force oracle for the aggregation library, written without ``udfs``.

Events are ``(ts, value)`` pairs in arrival order. A window of ``length`` ms (a whole number
of minutes) as of event time ``as_of`` covers the events with ``edge <= ts <= as_of``, where
``edge`` is the first multiple of the hop (``length / 60``) after ``as_of - length``: the
trailing edge is rounded to the hop, the leading edge is exact. ``length=None`` is the lifetime
window: every event with ``ts <= as_of``.

Ties in event time go to the later arrival: it is the "last" value and comes first in the last
``n`` values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Event = tuple[int, Any]  # (ts, value)


def trailing_edge(as_of: int, length: int | None) -> int | None:
    """The oldest event time the window covers as of ``as_of`` (None: no edge, lifetime)."""
    if length is None:
        return None
    hop = length // 60
    edge = as_of - length + 1
    return edge + (-edge) % hop  # round up to a multiple of the hop


def covered(events: Sequence[Event], as_of: int, length: int | None) -> list[Event]:
    """The events the window covers as of ``as_of``, in arrival order."""
    edge = trailing_edge(as_of, length)
    return [e for e in events if e[0] <= as_of and (edge is None or e[0] >= edge)]


def values(events: Sequence[Event]) -> list[Any]:
    return [v for _, v in events]


def count(events: Sequence[Event]) -> int:
    return len(events)


def total(events: Sequence[Event]) -> float:
    """The correctly rounded sum (``math.fsum``)."""
    return math.fsum(values(events))


def mean(events: Sequence[Event]) -> float | None:
    return total(events) / len(events) if events else None


def minimum(events: Sequence[Event]) -> Any:
    return min(values(events), default=None)


def maximum(events: Sequence[Event]) -> Any:
    return max(values(events), default=None)


def distinct(events: Sequence[Event]) -> int:
    return len(set(values(events)))


def newest_first(events: Sequence[Event]) -> list[Any]:
    """Values by event time, newest first; equal times: the later arrival first."""
    order = sorted(range(len(events)), key=lambda i: (events[i][0], i), reverse=True)
    return [events[i][1] for i in order]


def last(events: Sequence[Event]) -> Any:
    newest = newest_first(events)
    return newest[0] if newest else None


def last_n(events: Sequence[Event], n: int) -> list[Any]:
    return newest_first(events)[:n]


def time_since_last(events: Sequence[Event], as_of: int) -> int | None:
    return as_of - max(ts for ts, _ in events) if events else None
