"""Freshness as a classic Prometheus histogram: how long after an event (by its event time, and
by its Kafka record timestamp) its entity's row was written to Redis.

The feature job observes each counted event once, at the end of the bundle that wrote its row
(``udfs/features/operator.py``), so the cost per event is two integers into an array and the
bucket arithmetic runs once per bundle, vectorized. A histogram is one cumulative counter per
upper bound (``le``, in seconds, :data:`LE_LABELS`) and a count, the shape ``histogram_quantile``
reads; Flink's Python counters are integers, so there is no ``_sum``. Ages are whole
milliseconds (event times and Kafka timestamps are epoch milliseconds): an age counts in a
bucket when it is at most the bound, as Prometheus' ``le`` says.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featurestream.udfs.telemetry.catalog import (
    APPEND_FRESHNESS,
    EVENT_FRESHNESS,
    FRESHNESS_BUCKETS_S,
    Metric,
)
from featurestream.udfs.telemetry.metrics import Counter, MetricGroup

BOUNDS_MS = np.array([round(bound * 1000) for bound in FRESHNESS_BUCKETS_S], dtype=np.int64)
LE_LABELS = (*(repr(float(bound)) for bound in FRESHNESS_BUCKETS_S), "+Inf")
"""The ``le`` label of each bucket, the last one +Inf."""


def cumulative_counts(ages_ms: np.ndarray) -> list[int]:
    """How many ``ages_ms`` are at most each bound of :data:`BOUNDS_MS`, then how many in all
    (the +Inf bucket): one entry per :data:`LE_LABELS`."""
    slots = np.searchsorted(BOUNDS_MS, ages_ms, side="left")  # first bound >= age
    counts: list[int] = np.bincount(slots, minlength=len(BOUNDS_MS) + 1).cumsum().tolist()
    return counts


@dataclass(frozen=True)
class HistogramCounters:
    """One histogram's counters: ``buckets[i]`` for ``le=LE_LABELS[i]``, and the count."""

    buckets: tuple[Counter, ...]
    count: Counter

    @classmethod
    def register(cls, group: MetricGroup, metric: Metric) -> HistogramCounters:
        """The counters of ``metric``, a job's histogram in the catalog."""
        bucket, count = metric.flink_paths
        return cls(tuple(group.counter(bucket, [le]) for le in LE_LABELS),
                   group.counter(count, []))

    def observe(self, ages_ms: np.ndarray) -> None:
        """Add the observations (a bucket with nothing new is not touched)."""
        if not len(ages_ms):
            return
        for counter, n in zip(self.buckets, cumulative_counts(ages_ms), strict=True):
            if n:
                counter.inc(n)
        self.count.inc(len(ages_ms))


def wall_clock_ms() -> int:
    """Now, in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Freshness:
    """The feature job's two freshness histograms: since the event time, and since the Kafka
    record timestamp (CreateTime, or the broker's append time on a LogAppendTime topic)."""

    event_time: HistogramCounters
    append_time: HistogramCounters

    @classmethod
    def register(cls, group: MetricGroup) -> Freshness:
        """Both histograms' counters."""
        return cls(HistogramCounters.register(group, EVENT_FRESHNESS),
                   HistogramCounters.register(group, APPEND_FRESHNESS))

    def observe(self, event_times_ms: Sequence[int], append_times_ms: Sequence[int],
                now_ms: int) -> None:
        """Rows written at ``now_ms`` for events with these times (two parallel sequences)."""
        self.event_time.observe(now_ms - np.asarray(event_times_ms, dtype=np.int64))
        self.append_time.observe(now_ms - np.asarray(append_times_ms, dtype=np.int64))
