"""The status page's arithmetic against brute force over raw observations: histogram quantiles
(Prometheus' interpolation) fall in the bucket of the true quantile, rates and recent buckets
equal counts recomputed from the events themselves."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream import jobs
from featurestream.udfs.telemetry.pipeline_stats import (
    FEATURE_JOB,
    JOB_NAMES,
    SCORING_JOB,
    Snapshot,
    bucket_counts,
    histogram_quantile,
    job_stats,
    rate,
    rates_by_label,
    recent_buckets,
    series,
)

BOUNDS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)
NAMES = FEATURE_JOB
HISTOGRAM = "append_freshness_seconds_bucket"

observations = st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1,
                        max_size=300)
quantiles = st.floats(min_value=0.001, max_value=1)


def le_text(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else str(bound)


def histogram(values: list[float]) -> list[tuple[float, float]]:
    """Cumulative buckets counted one observation at a time."""
    return [(b, float(sum(1 for v in values if v <= b))) for b in BOUNDS]


def snapshot(at: float, values: list[float], **counters: float) -> Snapshot:
    """A job's snapshot: the freshness histogram of ``values`` split over two label sets (as
    two subtasks would report it), and plain counters."""
    metrics = {series(name): value for name, value in counters.items()}
    halves = (values[::2], values[1::2])
    for origin, half in zip(("event", "kafka"), halves, strict=True):
        for bound, count in histogram(half):
            metrics[series(HISTOGRAM, le=le_text(bound), origin=origin)] = count
    return Snapshot(at, metrics)


@given(observations, quantiles)
def test_quantile_falls_in_the_bucket_of_the_true_quantile(values: list[float], q: float) -> None:
    estimate = histogram_quantile(q, histogram(values))
    assert estimate is not None
    ordered = sorted(values)
    true = ordered[max(math.ceil(q * len(ordered)) - 1, 0)]  # the k-th smallest, k = ceil(qn)
    upper = next(b for b in BOUNDS if true <= b)
    if math.isinf(upper):  # Prometheus answers the largest finite bound
        assert estimate == BOUNDS[-2]
    else:
        lower = max([0.0, *(b for b in BOUNDS if b < upper)])
        slack = 1e-12 * upper  # the interpolation's float rounding (0.05000000000000001)
        assert lower - slack <= estimate <= upper + slack


@given(observations, quantiles, quantiles)
def test_quantiles_are_monotonic(values: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    a, b = histogram_quantile(low, histogram(values)), histogram_quantile(high, histogram(values))
    assert a is not None and b is not None and a <= b


def test_quantile_interpolates_as_prometheus() -> None:
    # 10 observations in (0, 1], 10 in (1, 2]: the median is the first bucket's top, p75 halfway
    # through the second; a rank in +Inf answers the largest finite bound.
    buckets = [(1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)]
    assert histogram_quantile(0.5, buckets) == 1.0
    assert histogram_quantile(0.75, buckets) == 1.5
    assert histogram_quantile(0.25, buckets) == 0.5
    assert histogram_quantile(1.0, [(1.0, 1.0), (math.inf, 2.0)]) == 1.0
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, [(1.0, 3.0)]) is None  # no +Inf bucket
    assert histogram_quantile(0.5, [(-1.0, 4.0), (math.inf, 4.0)]) == -1.0
    with pytest.raises(ValueError):
        histogram_quantile(1.5, buckets)


@given(observations, observations, st.floats(min_value=0.1, max_value=10))
def test_recent_buckets_count_only_the_new_observations(before: list[float], after: list[float],
                                                        seconds: float) -> None:
    first = snapshot(0.0, before)
    second = snapshot(seconds, before + after)
    recent = recent_buckets(first, second, HISTOGRAM)
    assert recent == histogram(after)
    per_bucket = dict(bucket_counts(recent))
    for i, bound in enumerate(BOUNDS):
        lower = BOUNDS[i - 1] if i else -math.inf
        assert per_bucket[bound] == sum(1 for v in after if lower < v <= bound)
    assert recent_buckets(None, second, HISTOGRAM) == histogram(before + after)


def test_a_reset_counts_from_zero() -> None:
    first = snapshot(0.0, [1.0, 2.0, 3.0], source_events=100)
    restarted = snapshot(2.0, [0.5], source_events=10)
    assert recent_buckets(first, restarted, HISTOGRAM) == histogram([0.5])
    assert rate(first, restarted, "source_events") == 5.0


@given(st.lists(st.tuples(st.sampled_from(["LateEvent", "MalformedRecord", "ExpiredEvent"]),
                          st.floats(min_value=0, max_value=20, allow_nan=False)),
                max_size=200),
       st.floats(min_value=0.5, max_value=19.5))
def test_rates_equal_events_counted_in_the_interval(events: list[tuple[str, float]],
                                                    split: float) -> None:
    def at(t: float) -> Snapshot:
        values = {}
        for reason in {r for r, _ in events}:
            for stage in ("decode", "window"):  # both stages count; the rate sums them
                count = sum(1 for r, ts in events if r == reason and ts <= t) / 2
                values[series("dead_letters", reason=reason, stage=stage)] = count
        return Snapshot(t, values)

    got = rates_by_label(at(split), at(20.0), "dead_letters", "reason")
    for reason, value in got.items():
        inside = sum(1 for r, ts in events if r == reason and split < ts <= 20.0)
        assert value == pytest.approx(inside / (20.0 - split))
    assert set(got) == {r for r, _ in events}
    assert rates_by_label(None, at(20.0), "dead_letters", "reason") == {}


def test_job_stats() -> None:
    first = snapshot(10.0, [0.2] * 10, source_events=1000, rows_written=500, pendingRecords=3)
    metrics = dict(snapshot(12.0, [0.2] * 10 + [0.7] * 20, source_events=1400,
                            rows_written=600, pendingRecords=7).values)
    metrics[series("dead_letters", reason="LateEvent", stage="window")] = 4
    metrics[series("dead_letters", reason="FutureEvent", stage="decode")] = 0  # registered
    stats = job_stats(first, Snapshot(12.0, metrics), NAMES)
    assert stats.events_in == 1400 and stats.events_per_s == 200
    assert stats.output == 600 and stats.output_per_s == 50
    assert stats.dead_letters == {"LateEvent": 4} and stats.dead_letters_per_s == {"LateEvent": 2}
    append = stats.freshness["append"]
    assert dict(append.buckets)[0.75] == 20 and sum(c for _, c in append.buckets) == 20
    assert append.recent and stats.lag == 7
    assert append.p50_s == pytest.approx(0.625)
    alone = job_stats(None, first, NAMES).freshness["append"]
    assert not alone.recent and sum(c for _, c in alone.buckets) == 10
    assert job_stats(None, first, NAMES).events_per_s is None and alone.p99_s is not None
    empty = job_stats(None, Snapshot(0.0, {}), NAMES)
    assert empty.lag is None and empty.freshness["event"].p50_s is None
    assert [le for le, _ in empty.freshness["event"].buckets] == list(BOUNDS)
    assert all(count == 0 for _, count in empty.freshness["event"].buckets)
    scoring = job_stats(None, first, SCORING_JOB)
    assert scoring.events_in is None and scoring.freshness == {}
    idle = job_stats(first, Snapshot(13.0, dict(first.values)), NAMES).freshness["append"]
    assert not idle.recent and idle == alone, "nothing new: the histogram since the start"


@given(observations)
def test_buckets_never_incremented_count_nothing(values: list[float]) -> None:
    # PyFlink reports a counter only once incremented: the buckets below the first observation
    # are absent, and the quantiles must be those of the whole histogram.
    whole = histogram(values)
    reported = {series(HISTOGRAM, le=le_text(b)): c for b, c in whole if c}
    stats = job_stats(None, Snapshot(0.0, reported), NAMES).freshness["append"]
    assert stats.buckets == tuple(bucket_counts(whole))
    assert stats.p50_s == histogram_quantile(0.5, whole)


def test_names_follow_the_catalog() -> None:
    assert NAMES.freshness["append"] == "append_freshness_seconds_bucket"
    assert NAMES.events_in == "source_events" and NAMES.lag == "pendingRecords"
    assert SCORING_JOB.output == "scores"


def test_job_names_are_the_jobs() -> None:
    assert JOB_NAMES == jobs.JOB_NAMES
