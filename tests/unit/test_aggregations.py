"""The aggregation library against a brute-force oracle (:mod:`tests.aggregation_oracle`).

A :class:`Driver` does what the engine does: it keeps ``as_of`` at the latest event time seen,
expires the buckets that left the window before adding, drops nothing (the generated events are
never older than the trailing edge) and feeds every accumulator the same events. After every
step each accumulator's result must equal the oracle's value over the events the window covers.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestream.udfs.aggregations.accumulators import (
    Accumulator,
    ApproxDistinct,
    Count,
    Distinct,
    FloatSum,
    IntSum,
    LastN,
    Max,
    Min,
)
from featurestream.udfs.aggregations.windows import WindowSpec
from tests import aggregation_oracle as oracle
from tests.aggregation_oracle import Event

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def accumulators() -> dict[str, Accumulator]:
    """One of each, named by the oracle function it must agree with."""
    return {
        "count": Count(), "sum_int": IntSum(), "sum_float": FloatSum(),
        "min": Min(), "max": Max(), "distinct": Distinct(), "approx": ApproxDistinct(10),
        "last": LastN(1, single=True), "last_3": LastN(3), "ts_max": Max(),
    }


def expected(name: str, events: Sequence[Event], as_of: int) -> Any:
    """What accumulator ``name`` must give over the covered ``events``."""
    if name == "count":
        return oracle.count(events)
    if name == "sum_int":
        return sum(oracle.values(events))
    if name == "sum_float":
        return oracle.total(events)
    if name == "min":
        return oracle.minimum(events)
    if name == "max":
        return oracle.maximum(events)
    if name in ("distinct", "approx"):  # at most 41 values: HLL is exact there
        return oracle.distinct(events)
    if name == "last":
        return oracle.last(events)
    if name == "last_3":
        return oracle.last_n(events, 3)
    assert name == "ts_max"
    return oracle.time_since_last(events, as_of)


def is_plain(value: Any) -> bool:
    """Builtins only, what Flink can store without our classes."""
    if isinstance(value, dict):
        return all(is_plain(k) and is_plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(is_plain(v) for v in value)
    return value is None or isinstance(value, int | float | str | bytes)


def round_trip(acc: Accumulator, state: Any) -> Any:
    plain = acc.dump(state)
    assert is_plain(plain)
    return acc.load(pickle.loads(pickle.dumps(plain)))


@dataclass
class Driver:
    """The engine's use of the accumulators for one entity and one window."""

    window: WindowSpec
    accs: dict[str, Accumulator] = field(default_factory=accumulators)
    states: dict[str, Any] = field(init=False)
    as_of: int | None = None
    events: list[Event] = field(default_factory=list)  # accepted, in arrival order
    live: set[int] = field(default_factory=set)  # buckets holding events

    def __post_init__(self) -> None:
        self.states = {name: acc.initialize() for name, acc in self.accs.items()}

    def advance(self, to: int) -> None:
        """Event time reaches ``to``: expire the buckets that left (and one never used)."""
        self.as_of = to if self.as_of is None else max(self.as_of, to)
        first = self.window.first_live_bucket(self.as_of)
        if first is None:
            return
        gone = sorted(k for k in self.live if k < first)
        self.live.difference_update(gone)
        absent = [first - 1] if first - 1 not in gone else []
        for name, acc in self.accs.items():
            acc.expire(self.states[name], gone + absent)

    def add(self, ts: int, value: Any) -> None:
        self.advance(ts)
        bucket = self.window.bucket(ts)
        self.live.add(bucket)
        self.events.append((ts, value))
        for name, acc in self.accs.items():
            item = ts if name == "ts_max" else (ts, value) if isinstance(acc, LastN) else value
            acc.add(self.states[name], bucket, item)

    def round_trip(self) -> None:
        self.states = {name: round_trip(acc, self.states[name])
                       for name, acc in self.accs.items()}

    def result(self, name: str) -> Any:
        value = self.accs[name].result(self.states[name])
        if name == "ts_max":
            return None if value is None else self.as_of - value
        return value

    def check(self) -> None:
        assert self.as_of is not None
        inside = oracle.covered(self.events, self.as_of, self.window.length_ms)
        for name in self.accs:
            assert self.result(name) == expected(name, inside, self.as_of), name
        if "sum_float" in self.accs and "count" in self.accs:  # a mean is these two
            n = self.result("count")
            assert (self.result("sum_float") / n if n else None) == oracle.mean(inside)


# An op: ("event", hops, offset, value) at the start of the bucket ``hops`` after as_of's, plus
# offset ms (clamped up to the trailing edge); ("advance", hops, offset) moves as_of there;
# ("round_trip",) stores and reloads every state. Offsets 0, 1 and -1 put events and as_of on
# and next to bucket boundaries (as_of on a boundary is a bucket's expiry); the clamp puts
# many events exactly on the trailing edge.
OFFSETS = st.sampled_from([0, 1, -1, 1234])
EVENT = st.tuples(st.just("event"), st.integers(-70, 2), OFFSETS, st.integers(-20, 20))
ADVANCE = st.tuples(st.just("advance"), st.integers(0, 30), OFFSETS)
OPS = st.lists(st.one_of(EVENT, EVENT, ADVANCE, st.just(("round_trip",))), max_size=60)
WINDOWS = [WindowSpec.parse("1m"), WindowSpec.parse("5m"), WindowSpec.parse("lifetime")]


def on_grid(as_of: int, hop: int, hops: int, offset: int) -> int:
    return (as_of // hop + hops) * hop + offset


def run(driver: Driver, start: int, ops: Sequence[tuple], check: bool = True) -> None:
    hop = driver.window.hop_ms or 1000
    for op in ops:
        as_of = start if driver.as_of is None else driver.as_of
        if op[0] == "event":
            ts = on_grid(as_of, hop, op[1], op[2])
            edge = oracle.trailing_edge(as_of, driver.window.length_ms)
            driver.add(ts if edge is None or ts > as_of else max(ts, edge), op[3])
        elif op[0] == "advance":
            driver.advance(on_grid(as_of, hop, op[1], op[2]))
        else:
            driver.round_trip()
        if check and driver.as_of is not None:
            driver.check()


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: w.name)
@FAST
@given(start=st.integers(-400_000, 400_000), ops=OPS)
def test_every_accumulator_matches_the_oracle_at_every_step(
        window: WindowSpec, start: int, ops: list[tuple]) -> None:
    run(Driver(window), start, ops)


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: w.name)
@FAST
@given(start=st.integers(-400_000, 400_000), ops=OPS, split=st.lists(st.booleans(), max_size=60))
def test_merge_of_a_split_equals_all_events(
        window: WindowSpec, start: int, ops: list[tuple], split: list[bool]) -> None:
    """Events dealt to two drivers (each expiring at its own pace) merge into what one driver
    of all of them gives, once expired at the later ``as_of``. ``merge`` counts the other
    state's events as later arrivals (ties in ``last`` go to them)."""
    one, other = Driver(window), Driver(window)
    for i, op in enumerate(ops):
        run(other if i < len(split) and split[i] else one, start, [op], check=False)
    for name, acc in one.accs.items():
        acc.merge(one.states[name], other.states[name])
    one.events += other.events
    one.live |= other.live
    as_of = max((d.as_of for d in (one, other) if d.as_of is not None), default=None)
    if as_of is not None:
        one.advance(as_of)
        one.check()


def test_the_max_leaves_and_the_next_max_is_right() -> None:
    """1m window, hop 1 s. The max 9 (bucket 0) leaves at 60 s: the next is 8 (bucket 2), not
    the 7 of bucket 1; the min 1 leaves with bucket 1 at 61 s: the next is 5."""
    driver = Driver(WindowSpec.parse("1m"))
    for ts, value in [(0, 9), (1000, 7), (1500, 1), (2000, 5), (2999, 8)]:
        driver.add(ts, value)
    assert (driver.result("max"), driver.result("min")) == (9, 1)
    driver.advance(59_999)
    assert (driver.result("max"), driver.result("min")) == (9, 1)
    driver.advance(60_000)  # bucket 0 leaves
    assert (driver.result("max"), driver.result("min")) == (8, 1)
    driver.advance(61_000)  # bucket 1 (7 and 1) leaves
    assert (driver.result("max"), driver.result("min")) == (8, 5)
    driver.advance(63_000)
    assert (driver.result("max"), driver.result("min")) == (None, None)
    driver.check()


@given(n=st.integers(1, 4), times=st.lists(st.integers(0, 5), max_size=30))
def test_last_n_keeps_at_most_n_entries_a_bucket(n: int, times: list[int]) -> None:
    """What Flink stores stays bounded: a bucket keeps its n latest events, no more."""
    acc = LastN(n)
    state = acc.initialize()
    for i, ts in enumerate(times):
        acc.add(state, ts // 3, (ts, i))
    events = [(ts, i) for i, ts in enumerate(times)]
    assert all(len(entries) <= n for entries in acc.dump(state)[0].values())
    assert acc.result(state) == oracle.last_n(events, n)


# 5m window: hop h = 5 s, 60 buckets. As of A it covers (A//5 + 1)*5 - 300 <= t <= A (seconds):
# the trailing edge moves in 5 s steps, so an event leaves up to 5 s before it is 300 s old.
#
#   t(s)     0   4 5        9 10                     299 300     304 305        310
#   events   a   b c          d
#   buckets [0-------)[5------)[10---- ... ----)[295-----)[300-------)[305------)
#
#   as of A   covers          events      why
#   299       [0, 299]        a b c d     A//5 = 59: edge (59+1)*5 - 300 = 0
#   300       [5, 300]        c d         bucket [0, 5) left at 300: b is only 296 s old
#   304       [5, 304]        c d         edge still 5 (a plain 300 s window would start at 4)
#   305       [10, 305]       d           c left at 305, exactly 300 s old
#   309       [10, 309]       d           d (t=10) is on the trailing edge: still in
#   310       [15, 310]       -           d left
SCENARIO = [(0, "a"), (4, "b"), (5, "c"), (10, "d")]


@pytest.mark.parametrize(("as_of", "inside"), [
    (299, "abcd"), (300, "cd"), (304, "cd"), (305, "d"), (309, "d"), (310, ""),
])
def test_five_minute_window_trailing_edge_is_rounded_to_the_hop(as_of: int, inside: str) -> None:
    events = [(t * 1000, v) for t, v in SCENARIO]
    assert "".join(oracle.values(oracle.covered(events, as_of * 1000, 300_000))) == inside
    driver = Driver(WindowSpec.parse("5m"), {"count": Count(), "last_3": LastN(3)})
    for ts, value in events:
        driver.add(ts, value)
    driver.advance(as_of * 1000)
    assert driver.result("count") == len(inside)
    assert driver.result("last_3") == list(reversed(inside))[:3]


@given(length_min=st.sampled_from([1, 5, 60, 1440]), as_of=st.integers(-10**9, 10**9),
       ts=st.integers(-10**9, 10**9))
def test_window_spec_buckets_agree_with_the_trailing_edge(length_min: int, as_of: int,
                                                          ts: int) -> None:
    window = WindowSpec.parse(f"{length_min}m")
    edge = oracle.trailing_edge(as_of, window.length_ms)
    bucket = window.bucket(ts)
    first = window.first_live_bucket(as_of)
    expiry = window.expiry_of(bucket)
    assert first is not None and expiry is not None and edge is not None
    assert (bucket >= first) == (ts >= edge)  # a live bucket holds exactly the covered events
    assert (as_of < expiry) == (bucket >= first)  # a bucket leaves when as_of reaches expiry_of


def test_lifetime_window_never_expires() -> None:
    window = WindowSpec.parse("lifetime")
    assert (window.bucket(-5), window.bucket(10**15)) == (0, 0)
    assert window.first_live_bucket(10**15) is None and window.expiry_of(0) is None


# Float sums. The running total is ``+=`` on add and ``math.fsum`` of the buckets' partial sums
# (themselves ``+=``) on every expiry. So, exactly: on a dyadic grid (every partial sum
# representable) the result is the exact sum at every step; and right after an expiry, when each
# live bucket holds one event, it is fsum of the live values (correctly rounded). Otherwise only
# approximately: within (n + 2) ulps of sum(|v|) for n live events.
FLOATS = st.one_of(st.floats(-1e12, 1e12, allow_nan=False),
                   st.floats(-1e300, 1e300, allow_nan=False),
                   st.integers(-2**20, 2**20).map(lambda i: i / 8))


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: w.name)
@FAST
@given(start=st.integers(0, 400_000), events=st.lists(
    st.tuples(st.integers(-70, 2), OFFSETS, FLOATS), max_size=60))
def test_float_sum_exact_where_it_can_be_and_bounded_elsewhere(
        window: WindowSpec, start: int, events: list[tuple[int, int, float]]) -> None:
    driver = Driver(window, {"sum": FloatSum()})
    hop = window.hop_ms or 1000
    for hops, offset, value in events:
        as_of = start if driver.as_of is None else driver.as_of
        ts = on_grid(as_of, hop, hops, offset)
        edge = oracle.trailing_edge(as_of, window.length_ms)
        ts = ts if edge is None or ts > as_of else max(ts, edge)
        driver.advance(ts)
        if window.length_ms and len(driver.live) == len(inside_values(driver)):
            assert driver.result("sum") == math.fsum(inside_values(driver))  # one per bucket
        driver.add(ts, value)
        inside, got = inside_values(driver), driver.result("sum")
        exact = math.fsum(inside)
        if all(v % 0.125 == 0 and abs(v) <= 2**20 for v in inside):
            assert got == exact  # every partial sum is representable
        assert abs(got - exact) <= (len(inside) + 2) * 2**-52 * math.fsum(map(abs, inside))


def inside_values(driver: Driver) -> list[Any]:
    assert driver.as_of is not None
    return oracle.values(oracle.covered(driver.events, driver.as_of, driver.window.length_ms))


def test_float_sum_what_is_exact_and_what_is_not() -> None:
    """Partial sums inside a bucket are plain ``+=``: 1e16 + 1 - 1e16 is 0 there. Across
    buckets an expiry rebuilds the total with fsum, which is exact over the partials."""
    same, spread = FloatSum(), FloatSum()
    s1, s2 = same.initialize(), spread.initialize()
    for i, value in enumerate([1e16, 1.0, -1e16]):
        same.add(s1, 5, value)
        spread.add(s2, 5 + i, value)
    assert same.result(s1) == 0.0 and spread.result(s2) == 0.0  # the running total rounds
    spread.add(s2, 0, 2.5)
    spread.expire(s2, [0])  # drops 2.5: the total is rebuilt as fsum(1e16, 1.0, -1e16)
    assert spread.result(s2) == 1.0
    same.add(s1, 0, 2.5)
    same.expire(s1, [0])  # the partial of bucket 5 already lost the 1.0
    assert same.result(s1) == 0.0


@pytest.mark.parametrize(("values", "total"), [
    ([1e308, 1e308], math.inf), ([math.inf, -math.inf], math.nan), ([math.inf, 1.0], math.inf)])
def test_float_sum_past_the_float_range_is_what_plus_gives(values: list[float],
                                                           total: float) -> None:
    """``math.fsum`` raises on these; an expiry must not, and gives what ``+=`` gives."""
    acc = FloatSum()
    state = acc.initialize()
    for k, value in enumerate(values):
        acc.add(state, k + 1, value)
    acc.expire(state, [0])
    other = acc.initialize()
    acc.merge(other, state)
    for result in (acc.result(state), acc.result(other)):
        assert result == total or (math.isnan(result) and math.isnan(total))


# ApproxDistinct (HyperLogLog, lg_k registers 2**lg_k). Exact while the sketches keep coupons
# (up to 8 values at any lg_k); otherwise within 3 relative standard errors, 1.04 / 2**(lg_k/2).
@pytest.mark.parametrize("lg_k", [4, 8, 10, 12])
@settings(max_examples=40, deadline=None)
@given(values=st.sets(st.text(max_size=8), max_size=8), buckets=st.lists(st.integers(0, 59)))
def test_approx_distinct_is_exact_for_tiny_sets(lg_k: int, values: set[str],
                                                buckets: list[int]) -> None:
    acc = ApproxDistinct(lg_k)
    state = acc.initialize()
    for i, value in enumerate(sorted(values)):
        acc.add(state, buckets[i] if i < len(buckets) else i, value)
        acc.add(state, 0, value)  # a repeat is not a new value
    assert acc.result(state) == len(values)
    assert acc.result(round_trip(acc, state)) == len(values)


@pytest.mark.parametrize("lg_k", [10, 12])
@pytest.mark.parametrize("cardinality", [10, 1000, 50_000])
def test_approx_distinct_within_three_standard_errors_across_expiry(lg_k: int,
                                                                    cardinality: int) -> None:
    """1h window (hop 60 s): value i at buckets i % 120 and (i + 7) % 120, so a value leaves
    when its later occurrence does; checked as the window slides over buckets 0..119."""
    window = WindowSpec.parse("1h")
    hop = window.hop_ms
    assert hop is not None
    driver = Driver(window, {"approx": ApproxDistinct(lg_k)})
    by_bucket: dict[int, list[str]] = {}
    for i in range(cardinality):
        for k in (i % 120, (i + 7) % 120):
            by_bucket.setdefault(k, []).append(f"user-{i}")
    tolerance = 3 * 1.04 / math.sqrt(2**lg_k)
    for k in range(120):
        for value in by_bucket.get(k, []):
            driver.add(k * hop, value)
        if k % 20 == 19:
            assert driver.as_of is not None
            true = oracle.distinct(oracle.covered(driver.events, driver.as_of, window.length_ms))
            got = driver.result("approx")
            assert abs(got - true) <= tolerance * true, (k, got, true)
            assert driver.accs["approx"].result(round_trip(driver.accs["approx"],
                                                           driver.states["approx"])) == got


@pytest.mark.parametrize("cardinality", [10, 1000, 50_000])
def test_approx_distinct_merge_of_a_split_is_within_error(cardinality: int) -> None:
    acc = ApproxDistinct(10)
    parts = [acc.initialize(), acc.initialize()]
    for i in range(cardinality):
        acc.add(parts[i % 2], i % 60, f"item-{i}")
        acc.add(parts[(i + 1) % 2], (i * 7) % 60, f"item-{i}")
    acc.merge(parts[0], parts[1])
    got = acc.result(parts[0])
    assert abs(got - cardinality) <= 3 * 1.04 / math.sqrt(2**10) * cardinality
    if cardinality <= 10:
        assert got == cardinality
