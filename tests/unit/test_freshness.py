"""The freshness histograms' arithmetic against a brute-force count: cumulative buckets per
``le`` (an age counts when it is at most the bound), the count, and the two origins."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from featurestream.udfs.telemetry.catalog import FRESHNESS_BUCKETS_S
from featurestream.udfs.telemetry.freshness import (
    LE_LABELS,
    Freshness,
    HistogramCounters,
    cumulative_counts,
)
from tests.harness import Count

AGES_MS = st.lists(st.one_of(st.integers(-5_000, 120_000),
                             st.sampled_from([50, 51, 100, 250, 999, 1_000, 1_001, 60_000])),
                   max_size=300)


def brute_force(ages_ms: list[int]) -> list[int]:
    """Per ``le`` label: how many ages, in exact seconds, are at most the bound."""
    bounds = [Fraction(label) for label in LE_LABELS[:-1]]
    return [sum(1 for age in ages_ms if Fraction(age, 1000) <= bound) for bound in bounds] + [
        len(ages_ms)]


def histogram() -> HistogramCounters:
    return HistogramCounters(tuple(Count() for _ in LE_LABELS), Count())


def counts(h: HistogramCounters) -> list[int]:
    return [c.n for c in h.buckets if isinstance(c, Count)]


def test_the_labels_are_the_bounds_then_inf() -> None:
    assert [float(label) for label in LE_LABELS[:-1]] == list(FRESHNESS_BUCKETS_S)
    assert LE_LABELS[-1] == "+Inf" and float(LE_LABELS[-1]) == float("inf")


@given(AGES_MS)
def test_cumulative_counts_equal_a_brute_force_count(ages: list[int]) -> None:
    assert cumulative_counts(np.array(ages, dtype=np.int64)) == brute_force(ages)


@given(st.lists(AGES_MS, max_size=5))
def test_observations_accumulate_over_bundles(bundles: list[list[int]]) -> None:
    h = histogram()
    for ages in bundles:
        h.observe(np.array(ages, dtype=np.int64))
    everything = [age for ages in bundles for age in ages]
    assert counts(h) == brute_force(everything)
    assert isinstance(h.count, Count) and h.count.n == len(everything)


def test_an_empty_bundle_touches_nothing() -> None:
    h = histogram()
    h.observe(np.array([], dtype=np.int64))
    assert counts(h) == [0] * len(LE_LABELS) and isinstance(h.count, Count) and h.count.n == 0


@given(st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 100_000)), max_size=50),
       st.integers(100_000, 200_000))
def test_each_origin_measures_from_its_own_time(times: list[tuple[int, int]], now: int) -> None:
    freshness = Freshness(histogram(), histogram())
    freshness.observe([t for t, _ in times], [a for _, a in times], now)
    assert counts(freshness.event_time) == brute_force([now - t for t, _ in times])
    assert counts(freshness.append_time) == brute_force([now - a for _, a in times])
