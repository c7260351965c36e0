"""What the status page and ``featurestream status`` say about a running job, computed from two
snapshots of its cumulative counters (pure: no Flink, no clock, no I/O).

Flink's metrics are cumulative per subtask, and the JobManager sums them over the subtasks; a
rate needs two such snapshots. The freshness histogram is a classic Prometheus histogram (one
cumulative counter per upper bound ``le``), so its recent shape is the difference of two
snapshots and its quantiles follow Prometheus' ``histogram_quantile`` (linear interpolation in
the bucket holding the rank), which is what the Grafana dashboard and the alert rules compute:
the page and the alerts agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from featurestream.udfs.telemetry import catalog

Labels = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name."""

Series = tuple[str, Labels]
"""A metric name and its labels: one cumulative counter (or gauge)."""


def series(name: str, **labels: str) -> Series:
    """The series ``name{labels}`` (labels sorted, so equal series compare equal)."""
    return name, tuple(sorted(labels.items()))


@dataclass(frozen=True)
class Snapshot:
    """A job's metric values at one moment: ``taken_s`` on a monotonic clock, in seconds."""

    taken_s: float
    values: Mapping[Series, float]

    def total(self, name: str, **labels: str) -> float:
        """The sum of every series called ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and wanted <= set(ls))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """The series called ``name`` summed per value of ``label`` (other labels summed out)."""
        sums: dict[str, float] = {}
        for (n, labels), value in self.values.items():
            found = dict(labels).get(label)
            if n == name and found is not None:
                sums[found] = sums.get(found, 0.0) + value
        return sums


def increase(previous: float, current: float) -> float:
    """How much a counter grew; a counter that went down was reset (a restart) and counts from
    0, as Prometheus' ``increase`` assumes."""
    return current - previous if current >= previous else current


def rate(previous: Snapshot | None, current: Snapshot, name: str, **labels: str) -> float | None:
    """Per-second increase of the sum of ``name{labels}`` between the snapshots (None without a
    previous one or with no time between them)."""
    if previous is None or current.taken_s <= previous.taken_s:
        return None
    grown = increase(previous.total(name, **labels), current.total(name, **labels))
    return grown / (current.taken_s - previous.taken_s)


def rates_by_label(previous: Snapshot | None, current: Snapshot, name: str,
                   label: str) -> dict[str, float]:
    """Per-second increase of ``name`` per value of ``label`` (empty without a previous
    snapshot); a value absent before counted from 0."""
    if previous is None or current.taken_s <= previous.taken_s:
        return {}
    seconds = current.taken_s - previous.taken_s
    before = previous.by_label(name, label)
    return {value: increase(before.get(value, 0.0), now) / seconds
            for value, now in sorted(current.by_label(name, label).items())}


Bucket = tuple[float, float]
"""An upper bound (``le``, math.inf for +Inf) and the cumulative count of observations <= it."""


def parse_le(text: str) -> float:
    """A Prometheus ``le`` label value as a float (``+Inf`` -> inf)."""
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text)


def cumulative_buckets(snapshot: Snapshot, name: str,
                       bounds: Sequence[float] = ()) -> list[Bucket]:
    """The histogram ``name``'s cumulative buckets by ascending ``le``, summed over its other
    labels (e.g. every subtask), with each of ``bounds`` (and +Inf) that the snapshot lacks at
    0: PyFlink reports a counter only once it was incremented, and a bucket never incremented
    has counted nothing (were it below a counted one, it would have been incremented too)."""
    counts = {parse_le(le): count for le, count in snapshot.by_label(name, "le").items()}
    for bound in (*bounds, math.inf) if bounds else ():
        counts.setdefault(bound, 0.0)
    return sorted(counts.items())


def recent_buckets(previous: Snapshot | None, current: Snapshot, name: str,
                   bounds: Sequence[float] = ()) -> list[Bucket]:
    """The cumulative buckets of what was observed between the snapshots (since the start
    without a previous snapshot; after a reset, since the reset); ``bounds`` as in
    :func:`cumulative_buckets`."""
    now = cumulative_buckets(current, name, bounds)
    if previous is None:
        return now
    before = dict(cumulative_buckets(previous, name, bounds))
    if any(count < before.get(le, 0.0) for le, count in now):
        return now  # a counter went back: the job restarted, and counts from 0
    return [(le, count - before.get(le, 0.0)) for le, count in now]


def bucket_counts(buckets: Sequence[Bucket]) -> list[Bucket]:
    """Cumulative buckets -> the count in each bucket alone (for bars)."""
    below = 0.0
    counts = []
    for le, cumulative in buckets:
        counts.append((le, max(cumulative - below, 0.0)))
        below = max(below, cumulative)
    return counts


def histogram_quantile(q: float, buckets: Sequence[Bucket]) -> float | None:
    """The ``q``-quantile (0 <= q <= 1) of cumulative ``buckets`` as Prometheus computes it.

    None when Prometheus answers NaN: no +Inf bucket, fewer than two buckets, or no
    observations. The rank ``q * total`` falls in the first bucket whose count reaches it; the
    answer interpolates linearly between that bucket's bounds (the first bucket starts at 0
    unless its bound is <= 0), and a rank in the +Inf bucket answers the largest finite bound.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    monotonic: list[Bucket] = []
    for le, count in ordered:  # as Prometheus: a count below its predecessor's is raised to it
        monotonic.append((le, max(count, monotonic[-1][1]) if monotonic else count))
    total = monotonic[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(monotonic) if count >= rank)
    if index == len(monotonic) - 1:
        return monotonic[-2][0]
    upper, count = monotonic[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = monotonic[index - 1] if index else (0.0, 0.0)
    inside = count - below
    if inside <= 0:
        return lower
    return lower + (upper - lower) * ((rank - below) / inside)  # Prometheus' order of operations



@dataclass(frozen=True)
class JobMetricNames:
    """Which of a job's metrics mean what, named as :func:`rest_name` names them."""

    events_in: str | None  # counter: records read (None: the job has none)
    output: str  # counter: rows written (features) or scores written (scoring)
    dead_letters: str  # counter labelled ``reason`` (and ``stage``)
    freshness: Mapping[str, str]  # histograms (bucket counters with ``le``) by what they time
    lag: str  # gauge: records behind the log end (the Kafka source's pendingRecords)


def rest_name(metric: catalog.Metric) -> str:
    """A job metric's name in a :class:`Snapshot`: its plain group (a histogram's) and the
    metric, as Prometheus names a histogram's series (``event_freshness_seconds_bucket``); a
    Flink built-in's as Flink registers it (``pendingRecords``)."""
    if metric.flink is None:
        return metric.name.removeprefix(catalog.TASK_OPERATOR)
    return "_".join(filter(None, (metric.flink.group, metric.flink.metric)))


JOB_NAMES = {"features": "featurestream-features", "scoring": "featurestream-scoring"}
"""The jobs' Flink names, as ``featurestream.jobs.JOB_NAMES`` (the reader may not import the
jobs; a unit test checks they agree)."""

FEATURE_JOB = JobMetricNames(
    events_in=rest_name(catalog.SOURCE_EVENTS), output=rest_name(catalog.ROWS_WRITTEN),
    dead_letters=rest_name(catalog.DEAD_LETTERS),
    freshness={"append": rest_name(catalog.APPEND_FRESHNESS),
               "event": rest_name(catalog.EVENT_FRESHNESS)},
    lag=rest_name(catalog.PENDING_RECORDS))
SCORING_JOB = JobMetricNames(
    events_in=None, output=rest_name(catalog.SCORES),
    dead_letters=rest_name(catalog.DEAD_LETTERS), freshness={},
    lag=rest_name(catalog.PENDING_RECORDS))


@dataclass(frozen=True)
class Freshness:
    """A freshness histogram over the interval between two snapshots (``recent``) or since the
    job started: the count per bucket (not cumulative) by ascending ``le``, and its quantiles
    (None without observations)."""

    buckets: tuple[Bucket, ...]
    recent: bool
    p50_s: float | None
    p99_s: float | None


def freshness(previous: Snapshot | None, current: Snapshot, name: str) -> Freshness:
    """The histogram ``name`` between the snapshots, every bucket of
    :data:`catalog.FRESHNESS_BUCKETS_S` shown; since the start without ``previous``, or when
    nothing was observed between them (an idle job still shows how fresh it has been)."""
    cumulative = recent_buckets(previous, current, name, catalog.FRESHNESS_BUCKETS_S)
    if previous is not None and cumulative and not cumulative[-1][1]:
        return freshness(None, current, name)
    return Freshness(tuple(bucket_counts(cumulative)), previous is not None,
                     histogram_quantile(0.5, cumulative), histogram_quantile(0.99, cumulative))


@dataclass(frozen=True)
class JobStats:
    """One job between two snapshots: totals since it started, rates over the interval (None
    without a previous snapshot), freshness, and the lag (None when not reported)."""

    events_in: float | None
    events_per_s: float | None
    output: float
    output_per_s: float | None
    dead_letters: Mapping[str, float]  # by reason, since the start (reasons counted so far)
    dead_letters_per_s: Mapping[str, float]  # by reason, over the interval (the same reasons)
    freshness: Mapping[str, Freshness]
    lag: float | None


def job_stats(previous: Snapshot | None, current: Snapshot, names: JobMetricNames) -> JobStats:
    """The job's :class:`JobStats` from ``current`` and, for rates, ``previous``."""
    lag_series = [v for (n, _), v in current.values.items() if n == names.lag]
    # the jobs register a counter per known reason: the ones that never counted are left out
    dead = {reason: count for reason, count in
            current.by_label(names.dead_letters, "reason").items() if count}
    return JobStats(
        events_in=None if names.events_in is None else current.total(names.events_in),
        events_per_s=None if names.events_in is None else rate(previous, current,
                                                               names.events_in),
        output=current.total(names.output),
        output_per_s=rate(previous, current, names.output),
        dead_letters=dead,
        dead_letters_per_s={reason: per_s for reason, per_s in
                            rates_by_label(previous, current, names.dead_letters, "reason").items()
                            if reason in dead},
        freshness={what: freshness(previous, current, name)
                   for what, name in names.freshness.items()},
        lag=sum(lag_series) if lag_series else None,
    )
