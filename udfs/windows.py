"""Sliding windows as hop-sized buckets of partial aggregates.

A window of length ``W`` has a hop ``h = W / 60`` and keeps one bucket per hop: bucket ``k``
holds the events with ``k*h <= ts < (k+1)*h``. As of event time ``A`` the window covers the
buckets ``k`` with ``A//h - 59 <= k <= A//h``, i.e. the events with

    (A//h + 1) * h - W  <=  ts  <=  A

so the trailing edge is rounded to the hop (it lies in ``(A - W, A - W + h]``); the leading edge
is exact. Bucket ``k`` leaves the window when event time reaches ``(k + 60) * h``: its expiry.

Each bucket holds counts per event type, the purchase amount sum, and (only for windows that
need distinct counts) a multiset of item ids. Window totals are kept incrementally: adding an
event touches one bucket per window; expiring a bucket subtracts it. Amount sums are rebuilt
from the remaining buckets on expiry so no floating-point drift accumulates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from udfs.durations import parse_duration_ms
from udfs.events import EVENT_TYPES

BUCKETS_PER_WINDOW = 60
TYPE_INDEX = {event_type: i for i, event_type in enumerate(EVENT_TYPES)}
AMOUNT = len(EVENT_TYPES)  # index of the purchase amount sum in a bucket's measures
PURCHASE = TYPE_INDEX["purchase"]


@dataclass(frozen=True)
class WindowSpec:
    """A sliding window: its name (e.g. ``1h``), length and hop in ms."""

    name: str
    length_ms: int
    track_items: bool = False

    @property
    def hop_ms(self) -> int:
        """The bucket width: the window length / 60."""
        return self.length_ms // BUCKETS_PER_WINDOW

    @classmethod
    def parse(cls, name: str, track_items: bool = False) -> WindowSpec:
        """Build a spec from a name such as ``5m`` or ``24h`` (whole minutes)."""
        length = parse_duration_ms(name)
        if length < 60_000 or length % 60_000:
            raise ValueError(f"window {name!r} must be a whole number of minutes")
        return cls(name, length, track_items)


class Window:
    """One user's buckets and running totals for one :class:`WindowSpec`.

    ``oldest`` caches the smallest bucket index, so the per-event checks (does anything expire?
    when is the next expiry?) never scan the buckets; only an actual expiry does.
    """

    __slots__ = ("buckets", "items", "oldest", "totals")

    def __init__(self, track_items: bool) -> None:
        # bucket index -> [n_view, n_click, n_add_to_cart, n_purchase, amount_sum, items|None]
        self.buckets: dict[int, list] = {}
        self.totals: list[float] = [0, 0, 0, 0, 0.0]
        self.items: dict[str, int] | None = {} if track_items else None
        self.oldest: int | None = None

    def add(self, bucket_index: int, type_index: int, amount: float | None,
            item_id: str | None) -> None:
        """Count one event into bucket ``bucket_index``."""
        bucket = self.buckets.get(bucket_index)
        if bucket is None:
            bucket = [0, 0, 0, 0, 0.0, {} if self.items is not None else None]
            self.buckets[bucket_index] = bucket
            if self.oldest is None or bucket_index < self.oldest:
                self.oldest = bucket_index
        bucket[type_index] += 1
        self.totals[type_index] += 1
        if amount is not None and type_index == PURCHASE:
            bucket[AMOUNT] += amount
            self.totals[AMOUNT] += amount
        if self.items is not None and item_id is not None:
            bucket_items = bucket[5]
            bucket_items[item_id] = bucket_items.get(item_id, 0) + 1
            self.items[item_id] = self.items.get(item_id, 0) + 1

    def expire_before(self, first_live: int) -> bool:
        """Drop buckets with index < ``first_live``; True if any was dropped."""
        if self.oldest is None or self.oldest >= first_live:
            return False
        for k in [k for k in self.buckets if k < first_live]:
            bucket = self.buckets.pop(k)
            for i in range(AMOUNT):
                self.totals[i] -= bucket[i]
            if self.items is not None:
                for item_id, n in bucket[5].items():
                    left = self.items[item_id] - n
                    if left:
                        self.items[item_id] = left
                    else:
                        del self.items[item_id]
        self.totals[AMOUNT] = math.fsum(b[AMOUNT] for b in self.buckets.values())
        self.oldest = min(self.buckets) if self.buckets else None
        return True

    def to_plain(self) -> tuple:
        """The window as builtins only (fast to pickle): buckets, totals, items."""
        return self.buckets, self.totals, self.items

    @classmethod
    def from_plain(cls, plain: tuple) -> Window:
        """Inverse of :meth:`to_plain`."""
        window = cls.__new__(cls)
        window.buckets, window.totals, window.items = plain
        window.oldest = min(window.buckets) if window.buckets else None
        return window
