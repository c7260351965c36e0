"""The reader's cache: LRU order, TTL expiry on a fake clock, the bound, invalidation and its
race guard, pause and resume; every sequence of operations against a brute-force model
of an LRU with a TTL (a list of (key, value, expiry), least recently used first); and every
interleaving of reads, writes and replies in invalidated mode never serves a stale value."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.serving.cache import MISS, Miss, TTLCache

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_hit_makes_the_key_most_recent_so_the_least_recently_used_goes() -> None:
    cache = TTLCache(ttl_ms=1_000, max_entries=2, clock=Clock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now b is the least recently used
    cache.put("c", 3)
    assert [cache.get(k) for k in "abc"] == [1, MISS, 3]


def test_entries_expire_after_the_ttl_each_from_its_own_put() -> None:
    clock = Clock()
    cache = TTLCache(ttl_ms=500, max_entries=10, clock=clock)
    cache.put("a", {"x": 1})
    clock.now += 0.3
    cache.put("b", None)  # "known absent" is a value too
    clock.now += 0.3
    assert cache.get("a") is MISS and cache.get("b") is None
    assert cache.get("a") is MISS  # a hit does not extend the TTL
    clock.now += 0.2
    assert cache.get("b") is MISS


def test_a_put_lets_go_of_expired_entries_at_the_least_recent_end() -> None:
    clock = Clock()
    cache = TTLCache(ttl_ms=1_000, max_entries=10, clock=clock)
    for key in "abc":
        cache.put(key, 1)
    clock.now += 1.5
    cache.put("d", 2)
    # not observable through get (an expired entry is a miss anyway): the memory is freed
    assert list(cache._entries) == ["d"]


def test_the_bound_holds_whatever_is_put() -> None:
    cache = TTLCache(ttl_ms=1_000, max_entries=3, clock=Clock())
    for i in range(10):
        cache.put(i, i)
    assert [cache.get(i) for i in range(10)] == [MISS] * 7 + [7, 8, 9]


def test_invalidate_and_clear_forget_keys() -> None:
    cache = TTLCache(ttl_ms=1_000, max_entries=10, clock=Clock())
    for key in "abc":
        cache.put(key, key.upper())
    cache.invalidate(["a", "z"])
    assert [cache.get(k) for k in "abc"] == [MISS, "B", "C"]
    cache.clear()
    assert [cache.get(k) for k in "bc"] == [MISS, MISS]


def test_invalidated_cache_serves_nothing_until_tracking_is_on() -> None:
    cache = TTLCache(ttl_ms=1_000, max_entries=10, clock=Clock(), invalidated=True)
    assert not cache.serving
    assert cache.get("a") is MISS
    cache.put("a", 1)
    assert cache.get("a") is MISS
    cache.resume()
    miss = cache.get("a")
    assert isinstance(miss, Miss)
    cache.put("a", 1, miss)
    assert cache.get("a") == 1


def test_a_value_read_while_its_key_was_invalidated_is_not_cached() -> None:
    cache = TTLCache(ttl_ms=1_000, max_entries=10, clock=Clock(), invalidated=True)
    cache.resume()
    miss = cache.get("a")  # the read starts
    assert isinstance(miss, Miss)
    cache.invalidate(["a"])  # a newer row was written before the reply arrived
    cache.put("a", "old", miss)
    again = cache.get("a")
    assert isinstance(again, Miss)
    cache.put("a", "new", again)  # this read started after the invalidation
    assert cache.get("a") == "new"


def test_a_read_from_before_an_invalidation_is_not_cached_under_a_later_reads_miss() -> None:
    """Two reads of one key in flight, an invalidation between their starts: the older reply
    (stale) arriving last must not be cached because the newer read left a placeholder."""
    cache = TTLCache(ttl_ms=1_000, max_entries=10, clock=Clock(), invalidated=True)
    cache.resume()
    older = cache.get("a")
    cache.invalidate(["a"])
    newer = cache.get("a")
    assert isinstance(older, Miss) and isinstance(newer, Miss) and older is not newer
    cache.put("a", "stale", older)
    assert isinstance(cache.get("a"), Miss)
    newest = cache.get("a")
    cache.put("a", "fresh", newest)
    assert cache.get("a") == "fresh"


def test_a_put_without_its_miss_is_not_cached_when_invalidated() -> None:
    cache = TTLCache(ttl_ms=1_000, max_entries=10, clock=Clock(), invalidated=True)
    cache.resume()
    cache.put("a", 1)
    assert isinstance(cache.get("a"), Miss)


def test_pause_flushes_and_reads_in_flight_stay_uncached() -> None:
    cache = TTLCache(ttl_ms=1_000, max_entries=10, clock=Clock(), invalidated=True)
    cache.resume()
    cache.put("a", 1, cache.get("a"))
    in_flight = cache.get("b")  # when tracking is lost
    cache.pause()
    assert not cache.serving and cache.get("a") is MISS
    cache.resume()
    cache.put("b", 2, in_flight)
    assert isinstance(cache.get("a"), Miss) and isinstance(cache.get("b"), Miss)


@settings(max_examples=1_000, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["read", "write", "reply", "serve"]),
                          st.integers(0, 1), st.integers(0, 3)), max_size=40))
def test_no_interleaving_of_reads_writes_and_replies_serves_a_stale_value(
        steps: list[tuple[str, int, int]]) -> None:
    """The oracle is Redis itself (a version per key): whatever the order in which reads start,
    writes invalidate and replies arrive, a value the cache serves is the key's latest."""
    cache = TTLCache(ttl_ms=1_000, max_entries=10, clock=Clock(), invalidated=True)
    cache.resume()
    redis = {0: 0, 1: 0}
    in_flight: list[tuple[int, int, Any]] = []  # (key, the version read, the miss)
    for action, key, pick in steps:
        if action == "read":
            got = cache.get(key)
            if isinstance(got, Miss):
                in_flight.append((key, redis[key], got))
        elif action == "write":
            redis[key] += 1
            cache.invalidate([key])
        elif action == "reply" and in_flight:
            read_key, version, miss = in_flight.pop(pick % len(in_flight))
            cache.put(read_key, version, miss)
        elif action == "serve":
            got = cache.get(key)
            if not isinstance(got, Miss):
                assert got == redis[key]


def test_resume_without_invalidation_is_a_plain_ttl_cache() -> None:
    cache = TTLCache(ttl_ms=1_000, max_entries=10, clock=Clock(), invalidated=True)
    cache.resume(invalidated=False)
    cache.put("a", 1)
    assert cache.get("a") == 1


# --- against a brute-force model --------------------------------------------------------------

READING = "<reading>"  # the model's placeholders: (READING, the miss's number)


class Model:
    """An LRU with a TTL as a list of [key, value, expiry], least recently used first."""

    def __init__(self, ttl: float, max_entries: int, invalidated: bool) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self.entries: list[list[Any]] = []
        self.guarded, self.serving = invalidated, not invalidated
        self.misses = 0

    def find(self, key: str) -> list[Any] | None:
        return next((e for e in self.entries if e[0] == key), None)

    def add(self, key: str, value: Any, now: float) -> None:
        """As the most recent; then the least recent go while over the bound or expired."""
        self.entries = [e for e in self.entries if e[0] != key] + [[key, value, now + self.ttl]]
        while len(self.entries) > self.max_entries or self.entries[0][2] <= now:
            self.entries.pop(0)

    def get(self, key: str, now: float) -> tuple[Any, int | None]:
        """The value or MISS, and the number of the miss (its placeholder) if one was left."""
        entry = self.find(key)
        if entry is not None and entry[2] > now and not is_reading(entry[1]):
            self.entries.remove(entry)
            self.entries.append(entry)
            return entry[1], None
        self.entries = [e for e in self.entries if e[0] != key]
        if self.guarded and self.serving:
            self.misses += 1
            self.add(key, (READING, self.misses), now)
            return MISS, self.misses
        return MISS, None

    def put(self, key: str, value: Any, now: float, miss: int | None) -> None:
        entry = self.find(key)
        if self.serving and (not self.guarded
                             or (entry is not None and entry[1] == (READING, miss))):
            self.add(key, value, now)


    def invalidate(self, keys: list[str]) -> None:
        self.entries = [e for e in self.entries if e[0] not in keys]


def is_reading(value: Any) -> bool:
    return isinstance(value, tuple) and value[0] == READING


KEYS = st.sampled_from("abcd")
ARGUMENTS = {
    "get": st.tuples(KEYS), "put": st.tuples(KEYS, st.integers(0, 9)),
    "invalidate": st.tuples(st.lists(KEYS, max_size=2)), "tick": st.tuples(st.integers(0, 1)),
    "clear": st.tuples(), "pause": st.tuples(), "resume": st.tuples(st.booleans()),
}
# reads and puts most often: the LRU order and the TTL matter between them
KINDS = st.sampled_from(["get"] * 6 + ["put"] * 6 + ["invalidate", "tick", "tick", "clear",
                                                     "pause", "resume"])
OPERATION = KINDS.flatmap(lambda kind: ARGUMENTS[kind].map(lambda args: (kind, *args)))


@settings(max_examples=1_000, deadline=None)
@given(ttl_s=st.integers(1, 4), max_entries=st.integers(1, 3), invalidated=st.booleans(),
       operations=st.lists(OPERATION, min_size=10, max_size=60))
def test_the_cache_behaves_as_the_brute_force_model(ttl_s: int, max_entries: int,
                                                    invalidated: bool,
                                                    operations: list[tuple[Any, ...]]) -> None:
    clock = Clock()
    cache = TTLCache(ttl_ms=ttl_s * 1_000, max_entries=max_entries, clock=clock,
                     invalidated=invalidated)
    model = Model(float(ttl_s), max_entries, invalidated)
    cache.resume(invalidated)  # serving from the start (tracking on), as is typical
    model.serving = True
    misses: dict[str, tuple[Miss, int | None]] = {}  # each key's latest miss (the caller's)
    for op, *args in operations:
        if op == "get":
            got, (want, number) = cache.get(args[0]), model.get(args[0], clock.now)
            if want is MISS:
                assert isinstance(got, Miss), (op, args)
                misses[args[0]] = (got, number)
            else:
                assert got == want, (op, args)
        elif op == "put":
            miss, number = misses.get(args[0], (MISS, None))
            cache.put(args[0], args[1], miss)
            model.put(args[0], args[1], clock.now, number)
        elif op == "invalidate":
            cache.invalidate(args[0])
            model.invalidate(args[0])
        elif op == "tick":
            clock.now += args[0]
        elif op in ("clear", "pause"):
            getattr(cache, op)()
            model.entries = []
            model.serving = model.serving and op == "clear"
        else:
            cache.resume(invalidated=args[0])
            model.entries, model.guarded, model.serving = [], args[0], True
        assert cache.serving == model.serving
