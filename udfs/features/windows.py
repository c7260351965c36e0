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

Buckets live in flat dicts of numbers (bucket index -> count, per measure), not in an object
per bucket: such dicts are invisible to Python's cycle collector, so a worker holding millions
of buckets does not spend its time in garbage collections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from featurestream.udfs.contract.events import EVENT_TYPES
from featurestream.udfs.durations import parse_duration_ms

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

    ``sizes`` maps each live bucket to its event count, ``counts[t]`` to its count of event
    type ``t``, ``amounts`` to its purchase amount sum and ``bucket_items`` (windows with
    distinct counts only) to its item multiset; ``totals`` and ``items`` sum them up.
    ``oldest`` caches the smallest live bucket index, so the per-event checks (does anything
    expire? when is the next expiry?) never scan the buckets; only an actual expiry does.
    """

    __slots__ = ("amounts", "bucket_items", "counts", "items", "oldest", "sizes", "totals")

    def __init__(self, track_items: bool) -> None:
        self.sizes: dict[int, int] = {}
        self.counts: tuple[dict[int, int], ...] = tuple({} for _ in EVENT_TYPES)
        self.amounts: dict[int, float] = {}
        self.bucket_items: dict[int, dict[str, int]] | None = {} if track_items else None
        self.totals: list[float] = [0, 0, 0, 0, 0.0]
        self.items: dict[str, int] | None = {} if track_items else None
        self.oldest: int | None = None

    def add(self, bucket_index: int, type_index: int, amount: float | None,
            item_id: str | None) -> None:
        """Count one event into bucket ``bucket_index``."""
        sizes = self.sizes
        size = sizes.get(bucket_index)
        if size is None:
            sizes[bucket_index] = 1
            if self.oldest is None or bucket_index < self.oldest:
                self.oldest = bucket_index
        else:
            sizes[bucket_index] = size + 1
        counts = self.counts[type_index]
        counts[bucket_index] = counts.get(bucket_index, 0) + 1
        self.totals[type_index] += 1
        if amount is not None and type_index == PURCHASE:
            self.amounts[bucket_index] = self.amounts.get(bucket_index, 0.0) + amount
            self.totals[AMOUNT] += amount
        items, bucket_items = self.items, self.bucket_items
        if items is not None and bucket_items is not None and item_id is not None:
            in_bucket = bucket_items.setdefault(bucket_index, {})
            in_bucket[item_id] = in_bucket.get(item_id, 0) + 1
            items[item_id] = items.get(item_id, 0) + 1

    def expire_before(self, first_live: int) -> bool:
        """Drop buckets with index < ``first_live``; True if any was dropped."""
        if self.oldest is None or self.oldest >= first_live:
            return False
        totals, items, bucket_items = self.totals, self.items, self.bucket_items
        for k in [k for k in self.sizes if k < first_live]:
            del self.sizes[k]
            for t, counts in enumerate(self.counts):
                totals[t] -= counts.pop(k, 0)
            self.amounts.pop(k, None)
            if items is not None and bucket_items is not None:
                for item_id, n in bucket_items.pop(k, {}).items():
                    left = items[item_id] - n
                    if left:
                        items[item_id] = left
                    else:
                        del items[item_id]
        totals[AMOUNT] = math.fsum(self.amounts.values())
        self.oldest = min(self.sizes) if self.sizes else None
        return True

    def to_plain(self) -> tuple:
        """The window as builtins only (fast to pickle)."""
        return (self.sizes, self.counts, self.amounts, self.bucket_items, self.totals,
                self.items)

    @classmethod
    def from_plain(cls, plain: tuple) -> Window:
        """Inverse of :meth:`to_plain`."""
        window = cls.__new__(cls)
        (window.sizes, window.counts, window.amounts, window.bucket_items, window.totals,
         window.items) = plain
        window.oldest = min(window.sizes) if window.sizes else None
        return window
