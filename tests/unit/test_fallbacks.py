"""Serving while Redis is down: the last known rows (bounds, age) and the store's fallback."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream.serving.contract import MAX_STALENESS_MS, ReaderContract
from featurestream.serving.metrics import Metrics
from featurestream.serving.redis_client import RedisUnavailable
from featurestream.serving.responses import ApiError
from featurestream.serving.shaping import (
    Row,
    batch_body,
    entity_batch_body,
    entity_body,
    features_body,
)
from featurestream.serving.store import FeatureStore, ServedRow
from featurestream.serving.validation import (
    parse_batch,
    parse_entity_batch,
    parse_max_staleness,
)
from featurestream.udfs.resilience.last_known import LastKnown
from featurestream.udfs.store.redis_layout import encode_value


class FakeClock:
    """Seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the last known rows --------------------------------------------------------------------

@given(st.integers(1, 5), st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers()),
                                   max_size=40))
def test_last_known_keeps_the_most_recently_read_keys_like_an_lru(
        bound: int, reads: list[tuple[str, int]]) -> None:
    oracle: OrderedDict[str, int] = OrderedDict()
    known: LastKnown[int] = LastKnown(bound)
    for key, value in reads:
        known.remember(key, value)
        oracle[key] = value
        oracle.move_to_end(key)
        while len(oracle) > bound:
            oracle.popitem(last=False)
        assert len(known) == len(oracle)
    for key in "abcdefgh":
        recalled = known.recall(key, 10**9)
        assert (recalled and recalled.value) == oracle.get(key)


def test_last_known_recalls_only_within_the_age_asked_for() -> None:
    clock = FakeClock()
    known: LastKnown[str | None] = LastKnown(10, clock)
    known.remember("a", "row")
    known.remember("gone", None)  # "no row" is worth remembering too
    clock.now += 0.250
    recalled = known.recall("a", 250)
    assert recalled is not None and (recalled.value, recalled.age_ms) == ("row", 250)
    assert known.recall("a", 249) is None
    gone = known.recall("gone", 1_000)
    assert gone is not None and gone.value is None
    assert known.recall("never", 1_000) is None
    known.remember("a", "newer")  # a new read resets the age
    again = known.recall("a", 0)
    assert again is not None and again.value == "newer"


def test_last_known_needs_room() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        LastKnown(0)


# --- the store's fallback -------------------------------------------------------------------

class FlakyRedis:
    """Answers HGETALL from a dict of hashes, or fails while ``down``."""

    def __init__(self, hashes: dict[str, dict[str, str]]) -> None:
        self.hashes = hashes
        self.down = False

    async def execute(self, commands: list[tuple[str, ...]]) -> list[list[str]]:
        if self.down:
            raise RedisUnavailable("connection", "connection refused")
        return [[x for kv in self.hashes.get(c[1], {}).items() for x in kv] for c in commands]


def _store(clock: FakeClock) -> tuple[FlakyRedis, FeatureStore]:
    redis = FlakyRedis({"fs:user:a": {"n": encode_value(1), "updated_at": encode_value(5)}})
    store = FeatureStore(redis, "fs:", None, Metrics(),  # type: ignore[arg-type]
                         LastKnown(100, clock))
    return redis, store


def test_rows_come_from_redis_while_it_answers() -> None:
    _, store = _store(FakeClock())
    served = asyncio.run(store.rows_with_fallback("user", ["a", "b"], 1_000))
    assert served == [ServedRow({"n": 1, "updated_at": 5}, "redis", None),
                      ServedRow(None, "redis", None)]


def test_while_redis_is_down_the_last_rows_read_are_served_within_the_staleness() -> None:
    clock = FakeClock()
    redis, store = _store(clock)
    asyncio.run(store.rows_with_fallback("user", ["a", "b"], None))
    redis.down = True
    clock.now += 0.4
    served = asyncio.run(store.rows_with_fallback("user", ["b", "a"], 400))
    assert served == [ServedRow(None, "cache", 400),
                      ServedRow({"n": 1, "updated_at": 5}, "cache", 400)]
    with pytest.raises(RedisUnavailable):  # older than allowed
        asyncio.run(store.rows_with_fallback("user", ["a"], 399))
    with pytest.raises(RedisUnavailable):  # no fallback asked for
        asyncio.run(store.rows_with_fallback("user", ["a"], None))
    with pytest.raises(RedisUnavailable):  # one row never read: the whole batch fails
        asyncio.run(store.rows_with_fallback("user", ["a", "c"], 10_000))


# --- max_staleness_ms: checks and the stale answers ------------------------------------------

@pytest.mark.parametrize("raw", ["", "-1", "1.5", "abc", "1e3", str(MAX_STALENESS_MS + 1),
                                 "٣", "9" * 5_000])  # ٣: isdigit, but not ASCII
def test_a_bad_max_staleness_query_is_a_400_naming_the_rule(raw: str) -> None:
    with pytest.raises(ApiError) as error:
        parse_max_staleness(raw)
    assert error.value.status == 400
    assert error.value.body.error == "invalid_max_staleness_ms"
    assert f"0 to {MAX_STALENESS_MS}" in error.value.body.message


def test_a_max_staleness_query_is_whole_milliseconds() -> None:
    assert parse_max_staleness(None) is None
    assert parse_max_staleness("0") == 0
    assert parse_max_staleness(" 2500 ") == 2500
    assert parse_max_staleness(str(MAX_STALENESS_MS)) == MAX_STALENESS_MS


@pytest.mark.parametrize("value", ["5", -1, 1.5, True, MAX_STALENESS_MS + 1])
def test_a_bad_max_staleness_in_a_batch_body_is_a_400(value: object) -> None:
    contract = ReaderContract({"user": ("clicks_1h",), "item": ("views_1h",)}, 10)
    for parse, ids in ((lambda b: parse_batch(b, contract), "user_ids"),
                       (lambda b: parse_entity_batch(b, contract.entities["item"], 10), "ids")):
        body = msgspec.json.encode({ids: ["a"], "max_staleness_ms": value})
        with pytest.raises(ApiError) as error:
            parse(body)
        assert (error.value.status, error.value.body.error) == (400, "invalid_max_staleness_ms")


def test_a_batch_body_may_allow_a_staleness() -> None:
    contract = ReaderContract({"user": ("clicks_1h",)}, 10)
    assert parse_batch(b'{"user_ids": ["a"], "max_staleness_ms": 500}',
                       contract).max_staleness_ms == 500
    assert parse_batch(b'{"user_ids": ["a"]}', contract).max_staleness_ms is None


ROW: Row = {"as_of": 10_000, "updated_at": 10_500, "clicks_1h": 3}


def test_only_rows_served_from_cache_say_stale_and_how_old() -> None:
    fresh = msgspec.to_builtins(features_body("u", ROW, None, 12_000))
    assert "stale" not in fresh and "cache_age_ms" not in fresh
    stale = msgspec.to_builtins(features_body("u", ROW, None, 12_000, cache_age_ms=700))
    assert stale == {**fresh, "stale": True, "cache_age_ms": 700}
    assert stale["staleness_ms"] == 2_000  # still now - as_of
    entity = msgspec.to_builtins(entity_body("item", "i", ROW, None, 12_000, cache_age_ms=0))
    assert (entity["stale"], entity["cache_age_ms"]) == (True, 0)
    batch = msgspec.to_builtins(batch_body(
        ["a", "b"], [ServedRow(ROW, "cache", 5), ServedRow(None, "cache", 6)], None, 12_000))
    assert [(r["found"], r["cache_age_ms"]) for r in batch["results"]] == [(True, 5), (False, 6)]
    entities = msgspec.to_builtins(entity_batch_body(
        "item", ["a"], [ServedRow(ROW, "redis", None)], None, 12_000))
    assert "stale" not in entities["results"][0]
