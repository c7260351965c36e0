"""Drift against training: the bins training records, the scoring job's online counts split over
tasks, flushes and time buckets, summed back from Redis-shaped hashes into PSI, null and
out-of-range rates equal to a brute-force computation over the same scored vectors (own bin
search by plain comparisons, own PSI loop); the sidecar's JSON; the flush policy."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.udfs.contract.events import Event
from featurestream.udfs.scoring.drift_recorder import BackgroundFlush, DriftRecorder, ttl_seconds
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.scorer import ScoredBatch, ScoredVectors
from featurestream.udfs.scoring.vector import Row
from featurestream.udfs.telemetry.drift import (
    Bins,
    DriftCounts,
    TrainingDistribution,
    drift_key,
    drift_report,
    psi,
    window_keys,
)
from featurestream.udfs.wire.dead_letters import Problem
from testing.model_fixtures import CATALOG, FEATURES, metadata

NAN = math.nan

# Values with ties (small integers: counts), arbitrary floats and nulls.
values = st.one_of(st.just(NAN), st.integers(-3, 3).map(float),
                   st.floats(-50, 50, allow_nan=False, allow_infinity=False))
scores = st.floats(0, 1, allow_nan=False)


# -- the brute-force oracle: shares no code with drift.py

def oracle_bin(edges: Sequence[float], x: float) -> int:
    """Bin ``i`` holds the values with exactly ``i`` edges at or below them."""
    count = 0
    for edge in edges:
        if edge <= x:
            count += 1
    return count


def oracle_psi(expected: Sequence[float], observed: Sequence[float]) -> float:
    total = 0.0
    for e, o in zip(expected, observed, strict=True):
        e, o = max(e, 1e-4), max(o, 1e-4)
        total += (o - e) * math.log(o / e)
    return total


def oracle_feature(bins: Bins, column: Sequence[float]) -> tuple[float, float, float]:
    """PSI (bins and null), null rate and out-of-range rate of a column of live values."""
    n = len(column)
    counts = [0] * (len(bins.edges) + 1)
    nulls = out = 0
    for x in column:
        if math.isnan(x):
            nulls += 1
            continue
        counts[oracle_bin(bins.edges, x)] += 1
        if x < bins.minimum or x > bins.maximum:
            out += 1
    expected = [e * (1 - bins.null_rate) for e in bins.expected] + [bins.null_rate]
    observed = [c / n for c in counts] + [nulls / n]
    return oracle_psi(expected, observed), nulls / n, out / n


# -- training bins

@settings(max_examples=200, deadline=None)
@given(column=st.lists(values, min_size=1, max_size=300), k=st.integers(2, 12))
def test_bins_are_the_training_quantiles_with_their_fractions(column: list[float], k: int
                                                              ) -> None:
    bins = Bins.from_values(np.array(column), k)
    present = sorted(x for x in column if not math.isnan(x))
    assert bins.null_rate == pytest.approx(1 - len(present) / len(column))
    assert len(bins.expected) == len(bins.edges) + 1 <= k
    assert all(a < b for a, b in zip(bins.edges, bins.edges[1:], strict=False))
    if not present:
        assert bins.edges == () and bins.expected == (1.0,) and math.isnan(bins.minimum)
        return
    assert (bins.minimum, bins.maximum) == (present[0], present[-1])
    assert set(bins.edges) <= {float(np.quantile(present, q / k)) for q in range(1, k)}
    counts = [0] * len(bins.expected)
    for x in present:
        counts[oracle_bin(bins.edges, x)] += 1
    assert bins.expected == pytest.approx([c / len(present) for c in counts])
    if len(set(present)) >= k * 3 and len(present) >= 100:
        assert len(bins.edges) >= k // 2, "varied values get about k bins"


def test_a_continuous_feature_gets_deciles_and_a_constant_one_two_bins() -> None:
    rng = np.random.default_rng(0)
    deciles = Bins.from_values(rng.normal(size=10_000))
    assert len(deciles.edges) == 9 and deciles.expected == pytest.approx([0.1] * 10)
    zeros = Bins.from_values(np.array([0.0] * 95 + [1.0] * 5 + [NAN] * 100))
    assert zeros.edges == (0.0,) and zeros.expected == (0.0, 1.0) and zeros.null_rate == 0.5


# -- online counts, split over tasks, flushes and buckets, equal the brute force

@st.composite
def scenarios(draw: st.DrawFn) -> tuple[TrainingDistribution, list[tuple[int, np.ndarray,
                                                                          np.ndarray, int]]]:
    """A training distribution of 1-3 features, and live batches, each with the task that
    counts it and the bucket its flush lands in (a task may flush several times per bucket)."""
    width = draw(st.integers(1, 3))
    names = [f"f{j}" for j in range(width)]
    rows = draw(st.integers(1, 60))
    training = np.array(draw(st.lists(st.lists(values, min_size=width, max_size=width),
                                      min_size=rows, max_size=rows)))
    trained_scores = np.array(draw(st.lists(scores, min_size=rows, max_size=rows)))
    distribution = TrainingDistribution.from_training(names, training, trained_scores,
                                                      draw(st.integers(2, 10)))
    batches = []
    for _ in range(draw(st.integers(0, 6))):
        size = draw(st.integers(0, 40))
        matrix = np.array(draw(st.lists(st.lists(values, min_size=width, max_size=width),
                                        min_size=size, max_size=size))).reshape(size, width)
        live = np.array(draw(st.lists(scores, min_size=size, max_size=size)))
        batches.append((draw(st.integers(0, 1)), matrix, live, draw(st.integers(0, 4))))
    return distribution, batches


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios())
def test_online_drift_equals_brute_force_psi_over_the_scored_vectors(
        scenario: tuple[TrainingDistribution, list[tuple[int, np.ndarray, np.ndarray, int]]]
        ) -> None:
    distribution, batches = scenario
    names = list(distribution.features)
    tasks = [DriftCounts(names, distribution), DriftCounts(names, distribution)]
    redis: dict[bytes, dict[bytes, bytes]] = {}  # HINCRBY, as HGETALL returns it
    for task, matrix, live, bucket in batches:
        tasks[task].add(matrix, live)
        key = drift_key("fs:", "m", 1, bucket * 10_000).encode()
        for name, count in tasks[task].take().items():
            assert count > 0, "only non-zero fields are written"
            hash_ = redis.setdefault(key, {})
            hash_[name.encode()] = str(int(hash_.get(name.encode(), b"0")) + count).encode()
    keys = window_keys("fs:", "m", 1, now_ms=49_999, window_ms=50_000, bucket_ms=10_000)
    assert len(keys) == 5 and sorted(keys) == sorted(drift_key("fs:", "m", 1, b * 10_000)
                                                     for b in range(5))
    report = drift_report("m", 1, distribution, [redis.get(k.encode(), {}) for k in keys],
                          50_000)

    rows = [row for _, matrix, _, _ in batches for row in matrix.tolist()]
    live_scores = [s for _, _, live, _ in batches for s in live.tolist()]
    assert report.samples == len(rows) == len(live_scores)
    assert [f.feature for f in report.features] == names
    if not rows:
        assert report.score_psi is None and all(
            f.psi is None and f.null_rate is None and f.out_of_range_rate is None
            for f in report.features)
        return
    for j, drift in enumerate(report.features):
        expected_psi, null_rate, out_of_range = oracle_feature(
            distribution.features[drift.feature], [row[j] for row in rows])
        assert drift.psi == pytest.approx(expected_psi, rel=1e-9, abs=1e-12)
        assert drift.null_rate == pytest.approx(null_rate)
        assert drift.out_of_range_rate == pytest.approx(out_of_range)
    score_bins = distribution.score
    counts = [0] * len(score_bins.expected)
    for s in live_scores:
        counts[oracle_bin(score_bins.edges, s)] += 1
    observed = [c / len(live_scores) for c in counts]
    assert report.score_psi == pytest.approx(oracle_psi(score_bins.expected, observed),
                                             rel=1e-9, abs=1e-12)
    assert report.score.observed == pytest.approx(observed)
    assert report.score.expected == score_bins.expected
    assert report.score.edges == score_bins.edges


def test_psi_is_zero_for_the_training_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(1)
    bins = Bins.from_values(rng.normal(size=20_000))
    counts = DriftCounts(["x"], TrainingDistribution({"x": bins}, bins))
    same = rng.normal(size=20_000)
    counts.add(same[:, None], same)
    steady = drift_report("m", 1, TrainingDistribution({"x": bins}, bins), [counts.take()], 1)
    shifted = rng.normal(loc=1.0, size=20_000)
    counts.add(shifted[:, None], shifted)
    moved = drift_report("m", 1, TrainingDistribution({"x": bins}, bins), [counts.take()], 1)
    assert steady.features[0].psi is not None and steady.features[0].psi < 0.01
    assert moved.features[0].psi is not None and moved.features[0].psi > 0.2
    assert psi([0.5, 0.5], [0, 0]) != psi([0.5, 0.5], [0, 0]), "nothing observed: NaN"
    assert psi([1.0, 0.0], [0, 10]) == pytest.approx(oracle_psi([1.0, 0.0], [0.0, 1.0]))


def test_counts_name_their_fields_and_hand_them_out_once() -> None:
    bins = Bins((0.0, 1.0), (0.5, 0.25, 0.25), 0.0, -1.0, 2.0)
    counts = DriftCounts(["a"], TrainingDistribution({"a": bins}, bins))
    counts.add(np.array([[-5.0], [0.0], [0.5], [NAN], [3.0]]), np.array([0.1, 0.2, 1.5, 1.0,
                                                                          -2.0]))
    assert counts.take() == {"n": 5, "a|0": 1, "a|1": 2, "a|2": 1, "a|null": 1, "a|oor": 2,
                             "score|0": 1, "score|1": 2, "score|2": 2}
    assert counts.take() == {}
    with pytest.raises(ValueError, match="'score'"):
        DriftCounts(["score"], TrainingDistribution({"score": bins}, bins))


def test_window_keys_cover_the_window_newest_first() -> None:
    keys = window_keys("fs:", "risk", 3, now_ms=1_000_005_000, window_ms=300_000,
                       bucket_ms=10_000)
    assert keys[0] == "fs:_drift:risk:3:1000000000" and len(keys) == 30
    assert keys[-1] == "fs:_drift:risk:3:999710000"


# -- JSON: the sidecar

@settings(max_examples=100, deadline=None)
@given(columns=st.lists(st.lists(values, min_size=1, max_size=50), min_size=1, max_size=3))
def test_training_distribution_round_trips_through_json(columns: list[list[float]]) -> None:
    distribution = TrainingDistribution(
        {f"f{j}": Bins.from_values(np.array(c)) for j, c in enumerate(columns)},
        Bins.from_values(np.array(columns[0])))
    text = json.dumps(distribution.to_json(), allow_nan=False)
    assert TrainingDistribution.from_json(json.loads(text)).to_json() == distribution.to_json()


def test_sidecars_carry_the_distribution_and_old_ones_still_load() -> None:
    recorded = metadata(1)
    assert recorded.training_distribution is not None and recorded.no_distribution() is None
    again = ModelMetadata.from_json(recorded.to_json())
    assert again == recorded and again.training_distribution is not None
    assert set(again.training_distribution.features) == set(FEATURES)
    old = json.loads(recorded.to_json())
    del old["training_distribution"]
    loaded = ModelMetadata.from_json(json.dumps(old))
    assert loaded.training_distribution is None
    assert loaded.no_distribution() == ("no training distribution recorded for version 1; "
                                        "retrain with featurestream train")
    assert "training_distribution" not in json.loads(loaded.to_json())
    wrong = json.loads(recorded.to_json())
    wrong["training_distribution"]["features"].pop("amount")
    with pytest.raises(ValueError, match="training_distribution"):
        ModelMetadata.from_json(json.dumps(wrong))


# -- the scorer's vectors: NaN exactly where a default was used

@settings(max_examples=300)
@given(user=st.none() | st.dictionaries(st.sampled_from(["purchases_5m", "spend_1h"]),
                                        st.none() | st.integers(0, 5) | st.floats(0, 9)),
       amount=st.none() | st.floats(0, 100),
       defaults=st.dictionaries(st.sampled_from(["amount", "purchases_5m", "spend_1h"]),
                                st.floats(-1, 1)))
def test_vectors_with_nulls_mark_exactly_the_values_that_took_a_default(
        user: Row | None, amount: float | None, defaults: dict[str, float]) -> None:
    plan = CATALOG.plan(FEATURES)
    event = Event("e1", "u-1", "purchase", None, amount, 1_700_000_000_000, None)
    rows = {} if user is None else {"user": user}
    filled = plan.assemble(defaults, event, rows, plan.entity_ids(event))
    marked = plan.fast(defaults, nulls=True)(event, rows)
    if isinstance(filled, Problem):
        assert marked is None
        return
    assert marked is not None
    raw = {"amount": amount, "hour_of_day": 22,
           **{name: (user or {}).get(name) for name in ("purchases_5m", "spend_1h")}}
    for name, value, with_nulls in zip(FEATURES, filled, marked, strict=True):
        if raw[name] is None:
            assert math.isnan(with_nulls) and value == defaults[name]
        else:
            assert with_nulls == value


# -- the flush policy

class Sink:
    def __init__(self) -> None:
        self.writes: list[tuple[dict[str, dict[str, int]], int]] = []

    def add_counts(self, counts: Mapping[str, Mapping[str, int]], ttl_seconds: int) -> None:
        self.writes.append(({k: dict(v) for k, v in counts.items()}, ttl_seconds))


class Clocks:
    def __init__(self) -> None:
        self.wall_ms = 1_000_004_000
        self.monotonic = 100.0

    def advance(self, seconds: float) -> None:
        self.wall_ms += int(seconds * 1000)
        self.monotonic += seconds


def batch_of(version_metadata: ModelMetadata, rows: int) -> ScoredBatch:
    vectors = np.tile(np.array([[20.0, 3.0, NAN, 1.0]]), (rows, 1))
    batch = ScoredBatch([])
    batch.scored.append(ScoredVectors(version_metadata, "latest", vectors,
                                      np.full(rows, 0.5)))
    return batch


def recorder() -> tuple[DriftRecorder, Sink, Clocks]:
    sink, clocks = Sink(), Clocks()
    return (DriftRecorder("fs:", sink, 300_000, 10_000, clock_ms=lambda: clocks.wall_ms,
                          monotonic=lambda: clocks.monotonic), sink, clocks)


def test_counts_are_flushed_at_most_once_a_second_into_the_current_bucket() -> None:
    drift, sink, clocks = recorder()
    v1, v2 = metadata(1), metadata(2)
    drift.record(batch_of(v1, 3))
    clocks.advance(0.5)
    drift.record(batch_of(v2, 2))
    assert sink.writes == [], "not before a second has passed"
    clocks.advance(0.6)
    drift.record(batch_of(v1, 1))
    assert len(sink.writes) == 1
    written, ttl = sink.writes[0]
    assert ttl == ttl_seconds(300_000, 10_000) == 320
    assert set(written) == {"fs:_drift:purchase_risk:1:1000000000",
                            "fs:_drift:purchase_risk:2:1000000000"}
    assert written["fs:_drift:purchase_risk:1:1000000000"]["n"] == 4
    assert written["fs:_drift:purchase_risk:1:1000000000"]["purchases_5m|null"] == 4
    assert written["fs:_drift:purchase_risk:2:1000000000"]["n"] == 2
    clocks.advance(0.2)
    drift.record(batch_of(v1, 1))
    assert len(sink.writes) == 1
    clocks.advance(9.0)
    drift.record(ScoredBatch([]))  # a batch with nothing scored still lets the flush happen
    assert [(key, fields["n"]) for key, fields in sink.writes[1][0].items()] == [
        ("fs:_drift:purchase_risk:1:1000010000", 1)], "the bucket of the flush's time"
    drift.flush()
    assert len(sink.writes) == 2, "nothing new: nothing written"
    drift.record(batch_of(v2, 5))
    drift.flush()  # at close
    assert [(key, fields["n"]) for key, fields in sink.writes[2][0].items()] == [
        ("fs:_drift:purchase_risk:2:1000010000", 5)]


def test_versions_without_a_training_distribution_are_not_counted() -> None:
    drift, sink, clocks = recorder()
    drift.record(batch_of(metadata(1, with_distribution=False), 3))
    clocks.advance(2)
    drift.record(batch_of(metadata(1, with_distribution=False), 3))
    drift.flush()
    assert sink.writes == []


class FailingOnce(Sink):
    """Raises on the first write (Redis away), then records like :class:`Sink`."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False
        self.written = threading.Event()

    def add_counts(self, counts: Mapping[str, Mapping[str, int]], ttl_seconds: int) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("redis away")
        super().add_counts(counts, ttl_seconds)
        self.written.set()


def test_the_background_flush_writes_a_burst_followed_by_silence_and_survives_a_failure() -> None:
    sink, clocks = FailingOnce(), Clocks()
    drift = DriftRecorder("fs:", sink, 300_000, 10_000, clock_ms=lambda: clocks.wall_ms,
                          monotonic=lambda: clocks.monotonic)
    flusher = BackgroundFlush(drift, interval_s=0.005)
    try:
        drift.record(batch_of(metadata(1), 3))  # not due: no batch after it flushes it
        clocks.advance(1.5)
        deadline = time.monotonic() + 10
        while not sink.failed and time.monotonic() < deadline:
            time.sleep(0.005)
        assert sink.failed, "the thread never flushed the burst"
        drift.record(batch_of(metadata(1), 2))  # not due yet either
        assert sink.writes == []
        clocks.advance(1.5)
        assert sink.written.wait(10), "the thread stopped after a failed write"
    finally:
        flusher.stop()
    [(written, _)] = sink.writes
    assert [fields["n"] for fields in written.values()] == [2], "the failed write's counts dropped"
