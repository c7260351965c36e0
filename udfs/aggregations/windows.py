"""Sliding windows as hop-sized buckets of partial aggregates, and the lifetime window.

A window of length ``W`` has a hop ``h = W / 60`` and keeps one bucket per hop: bucket ``k``
holds the events with ``k*h <= ts < (k+1)*h``. As of event time ``A`` the window covers the
buckets ``k`` with ``A//h - 59 <= k <= A//h``, i.e. the events with

    (A//h + 1) * h - W  <=  ts  <=  A

so the trailing edge is rounded to the hop (it lies in ``(A - W, A - W + h]``); the leading edge
is exact. Bucket ``k`` leaves the window when event time reaches ``(k + 60) * h``: its expiry.

The lifetime window has one bucket (index 0) that never expires.
"""

from __future__ import annotations

from dataclasses import dataclass

from featurestream.udfs.durations import parse_duration_ms

BUCKETS_PER_WINDOW = 60
LIFETIME = "lifetime"
LIFETIME_BUCKET = 0


@dataclass(frozen=True)
class WindowSpec:
    """A window: its name (``1h``, ``lifetime``) and length in ms (None: lifetime)."""

    name: str
    length_ms: int | None

    @property
    def hop_ms(self) -> int | None:
        """The bucket width: the window length / 60 (None for lifetime)."""
        return None if self.length_ms is None else self.length_ms // BUCKETS_PER_WINDOW

    @classmethod
    def parse(cls, name: str) -> WindowSpec:
        """``5m``, ``24h``, ``7d`` (whole minutes) or ``lifetime``."""
        if name == LIFETIME:
            return cls(name, None)
        length = parse_duration_ms(name)
        if length < 60_000 or length % 60_000:
            raise ValueError(f"window {name!r} must be a whole number of minutes")
        return cls(name, length)

    def bucket(self, ts: int) -> int:
        """The bucket of an event at ``ts``."""
        hop = self.hop_ms
        return LIFETIME_BUCKET if hop is None else ts // hop

    def first_live_bucket(self, as_of: int) -> int | None:
        """The oldest bucket still in the window as of ``as_of`` (None: nothing expires)."""
        hop = self.hop_ms
        return None if hop is None else as_of // hop - BUCKETS_PER_WINDOW + 1

    def expiry_of(self, bucket: int) -> int | None:
        """The event time at which ``bucket`` leaves the window (None: never)."""
        hop = self.hop_ms
        return None if hop is None else (bucket + BUCKETS_PER_WINDOW) * hop
