"""The scoring job's drift counts: each scored batch's vectors and scores counted into the served
version's training bins (:class:`udfs.telemetry.drift.DriftCounts`), flushed to time buckets
(:func:`udfs.telemetry.drift.drift_key`) at most once per ``flush_interval_s`` and at close.

Counting is per batch and vectorized; the flush is one pipelined write. The flush policy runs
after a batch is counted (a task that receives nothing has nothing new to flush), so the last
second's counts before traffic stops wait for the next batch or the task's close. Counts go to
the bucket of the flush's wall-clock time, so a bucket holds what was flushed during it. A
version without a training distribution (an older sidecar) is not counted; nor is the shadow.
Replayed records after a restart are counted again: drift is telemetry, at least once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from featurestream.udfs.scoring.scorer import Clock, ScoredBatch, wall_clock_ms
from featurestream.udfs.telemetry.drift import DriftCounts, bucket_start, drift_key

FLUSH_INTERVAL_S = 1.0


class DriftSink(Protocol):
    """Port: adds counts to time-bucket hashes (Redis: ``HINCRBY``, then ``EXPIRE``)."""

    def add_counts(self, counts: Mapping[str, Mapping[str, int]], ttl_seconds: int) -> None:
        """Add each key's field counts and make the key expire ``ttl_seconds`` from now."""
        ...


def ttl_seconds(window_ms: int, bucket_ms: int) -> int:
    """How long a bucket is kept: the window, plus two buckets of margin (the current one is
    still being filled, and readers' clocks differ a little)."""
    return math.ceil((window_ms + 2 * bucket_ms) / 1000)


class DriftRecorder:
    """Counts scored batches per served model version and flushes the counts."""

    def __init__(self, prefix: str, sink: DriftSink, window_ms: int, bucket_ms: int,
                 clock_ms: Clock = wall_clock_ms,
                 monotonic: Callable[[], float] = time.monotonic,
                 flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._prefix = prefix
        self._sink = sink
        self._bucket_ms = bucket_ms
        self._ttl_seconds = ttl_seconds(window_ms, bucket_ms)
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._flush_interval_s = flush_interval_s
        self._next_flush = monotonic() + flush_interval_s
        self._counts: dict[tuple[str, int], DriftCounts | None] = {}  # None: no distribution

    def record(self, batch: ScoredBatch) -> None:
        """Count ``batch``'s scored vectors; flush if the interval has passed."""
        for scored in batch.scored:
            metadata = scored.metadata
            key = (metadata.name, metadata.version)
            if key not in self._counts:
                distribution = metadata.training_distribution
                self._counts[key] = (None if distribution is None
                                     else DriftCounts(metadata.features, distribution))
            counts = self._counts[key]
            if counts is not None:
                counts.add(scored.vectors, scored.scores)
        if self._monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Write the counts so far into the current bucket (nothing when there are none)."""
        self._next_flush = self._monotonic() + self._flush_interval_s
        start = bucket_start(self._clock_ms(), self._bucket_ms)
        writes = {}
        for (model, version), counts in self._counts.items():
            fields = counts.take() if counts is not None else None
            if fields:
                writes[drift_key(self._prefix, model, version, start)] = fields
        if writes:
            self._sink.add_counts(writes, self._ttl_seconds)
