"""The scoring job's drift counts: each scored batch's vectors and scores counted into the served
version's training bins (:class:`udfs.telemetry.drift.DriftCounts`), flushed to time buckets
(:func:`udfs.telemetry.drift.drift_key`) at most once per ``flush_interval_s`` and at close.

Counting is per batch and vectorized; the flush is one pipelined write. A flush is due once the
interval has passed: checked after each batch, and every interval by a :class:`BackgroundFlush`
thread, so the counts of a burst followed by silence reach Redis within a second instead of
waiting for the next batch. Counts go to the bucket of the flush's wall-clock time, so a bucket
holds what was flushed during it. A version without a training distribution (an older sidecar)
is not counted; nor is the shadow. Replayed records after a restart are counted again: drift is
telemetry, at least once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from featurestream.udfs.scoring.scorer import Clock, ScoredBatch, wall_clock_ms
from featurestream.udfs.telemetry.drift import DriftCounts, bucket_start, drift_key

FLUSH_INTERVAL_S = 1.0

log = logging.getLogger(__name__)


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
        self._lock = threading.Lock()  # the task's thread counts, the background one flushes

    def record(self, batch: ScoredBatch) -> None:
        """Count ``batch``'s scored vectors; flush if the interval has passed."""
        with self._lock:
            self._count(batch)
        try:
            self.flush_if_due()
        except Exception as exc:  # telemetry: never fail the job (BackgroundFlush does the same)
            log.warning("drift counts not written (dropped): %s", exc)

    def _count(self, batch: ScoredBatch) -> None:
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

    def flush_if_due(self) -> None:
        """Flush if the interval has passed since the last flush."""
        if self._monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Write the counts so far into the current bucket (nothing when there are none)."""
        with self._lock:
            self._next_flush = self._monotonic() + self._flush_interval_s
            start = bucket_start(self._clock_ms(), self._bucket_ms)
            writes = {}
            for (model, version), counts in self._counts.items():
                fields = counts.take() if counts is not None else None
                if fields:
                    writes[drift_key(self._prefix, model, version, start)] = fields
        if writes:
            self._sink.add_counts(writes, self._ttl_seconds)


class BackgroundFlush:
    """A daemon thread calling :meth:`DriftRecorder.flush_if_due` every interval until
    :meth:`stop`. A failed write (Redis away) is logged and its counts dropped -- drift is
    telemetry and must not restart the job; the next flush writes what was counted since."""

    def __init__(self, recorder: DriftRecorder, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._recorder = recorder
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                self._recorder.flush_if_due()
            except Exception as exc:  # any sink failure: log, keep going
                log.warning("drift counts not written (dropped): %s", exc)

    def stop(self) -> None:
        """Stop the thread and wait for it (at most one flush in flight)."""
        self._stopped.set()
        self._thread.join()
