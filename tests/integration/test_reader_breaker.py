"""The Redis circuit breaker and the stale fallback of ``/v1/features``, over HTTP against a
real redis-server: stopped (connections refused) and frozen (SIGSTOP: calls time out), the
breaker opening after N failures, rows served from cache only when the caller allows
(``max_staleness_ms``), 503s without waiting while open, then the server back on the same port:
a probe, the breaker closed, fresh rows. Every state is read from ``/metrics``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest

from featurestream.settings import Settings
from featurestream.udfs.store.redis_layout import RowValue
from testing.reader_fixtures import (
    RedisProcess,
    Reply,
    feature_row,
    http,
    reader_in_thread,
    scrape,
    seed_rows,
    wait_until,
    write_item_definitions,
)

pytestmark = pytest.mark.redis

PREFIX = "fs:"
NOW = int(time.time() * 1000)
ROWS = {"user-1": feature_row(NOW - 2_000, clicks_1h=4), "user-2": feature_row(NOW - 9_000)}
ITEMS: dict[str, dict[str, RowValue]] = {"sku-1": {
    "as_of": NOW - 3_000, "version": 2, "views_1h": 7, "last_buyer": "user-1",
    "recent_buyers": ["user-1"], "buyers_24h": 1}}
FAILURES = 3  # breaker_failures in these tests
OPEN_MESSAGE = "circuit breaker open"


def seed(server: RedisProcess, clicks: int = 4) -> None:
    client = server.client()
    seed_rows(client, PREFIX, {**ROWS, "user-1": feature_row(NOW - 2_000, clicks_1h=clicks)},
              updated_at=NOW - 1_500)
    seed_rows(client, PREFIX, ITEMS, updated_at=NOW - 1_200, entity="item")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    redis = RedisProcess(tmp_path)
    redis.start()
    seed(redis)
    try:
        yield redis
    finally:
        redis.stop()


def settings_for(server: RedisProcess, tmp_path: Path, **changes: object) -> Settings:
    (tmp_path / "models").mkdir(exist_ok=True)  # no model: /metrics never reads Redis
    return Settings().replace(**{
        "redis_url": server.url, "redis_key_prefix": PREFIX, "redis_timeout_ms": 100,
        "models_dir": str(tmp_path / "models"), "cache_ttl_ms": 0,
        "definitions": str(write_item_definitions(tmp_path)),
        "breaker_failures": FAILURES, "breaker_reset_ms": 300, **changes})


def breaker_state(url: str) -> float | None:
    return scrape(url, "featurestream_reader_breaker_state", dependency="redis")


def transitions(url: str, state: str) -> float:
    return scrape(url, "featurestream_reader_breaker_transitions_total", dependency="redis",
                  state=state) or 0


def unavailable(reply: Reply) -> str:
    """The 503's message (failing the test on any other answer)."""
    assert reply.status == 503, reply.body
    assert reply.body["error"] == "redis_unavailable"
    assert reply.headers["retry-after"] == "1"
    return str(reply.body["message"])


def assert_stale(body: dict, max_staleness_ms: int) -> None:
    assert body["stale"] is True
    assert 0 <= body["cache_age_ms"] <= max_staleness_ms


def assert_documented(url: str, method: str, route: str, reply: Reply) -> None:
    """``reply`` is a 200 as the reader's own ``/openapi.json`` describes it."""
    doc = http("GET", url + "/openapi.json").body
    answer = doc["paths"][route][method]["responses"]["200"]["content"]["application/json"]
    jsonschema.validate(reply.body, {**answer["schema"], "components": doc["components"]},
                        cls=jsonschema.Draft202012Validator)


def test_stopped_redis_opens_the_breaker_serves_stale_rows_if_allowed_then_recovers(
        server: RedisProcess, tmp_path: Path) -> None:
    with reader_in_thread(settings_for(server, tmp_path)) as url:
        fresh = http("GET", url + "/v1/features/user-1")
        assert fresh.status == 200 and "stale" not in fresh.body
        assert http("POST", url + "/v1/features/batch", {"user_ids": ["user-1", "nobody"]}
                    ).status == 200
        assert http("GET", url + "/v1/features/item/sku-1").status == 200
        assert http("POST", url + "/v1/features/item/batch", {"ids": ["sku-1"]}).status == 200
        assert breaker_state(url) == 0

        server.stop()
        messages = [unavailable(http("GET", url + "/v1/features/user-1"))
                    for _ in range(FAILURES + 2)]
        assert all("cannot reach Redis" in m for m in messages[:FAILURES]), messages
        assert all(OPEN_MESSAGE in m for m in messages[FAILURES:]), messages
        assert OPEN_MESSAGE in unavailable(http("GET", url + "/v1/scores/user-1"))
        assert OPEN_MESSAGE in unavailable(http("GET", url + "/readyz"))
        assert breaker_state(url) == 2 and transitions(url, "open") == 1

        allow = 60_000
        single = http("GET", url + f"/v1/features/user-1?max_staleness_ms={allow}")
        assert single.status == 200, single.body
        assert_stale(single.body, allow)
        assert single.body["features"] == fresh.body["features"]
        assert single.body["staleness_ms"] >= fresh.body["staleness_ms"]  # now - as_of, still
        batch = http("POST", url + "/v1/features/batch",
                     {"user_ids": ["nobody", "user-1"], "max_staleness_ms": allow})
        assert batch.status == 200, batch.body
        missing, found = batch.body["results"]
        assert missing == {"user_id": "nobody", "found": False, "stale": True,
                           "cache_age_ms": missing["cache_age_ms"]}
        assert_stale(found, allow)
        assert found["features"]["clicks_1h"] == 4
        item = http("GET", url + f"/v1/features/item/sku-1?max_staleness_ms={allow}")
        assert item.status == 200 and item.body["features"]["views_1h"] == 7
        assert_stale(item.body, allow)
        items = http("POST", url + "/v1/features/item/batch",
                     {"ids": ["sku-1"], "max_staleness_ms": allow})
        assert items.status == 200
        assert_stale(items.body["results"][0], allow)
        for method, route, reply in (("get", "/v1/features/{user_id}", single),
                                     ("post", "/v1/features/batch", batch),
                                     ("get", "/v1/features/{entity}/{id}", item),
                                     ("post", "/v1/features/{entity}/batch", items)):
            assert_documented(url, method, route, reply)
        # rows never read, or read longer ago than allowed: the 503 stands
        unavailable(http("GET", url + f"/v1/features/user-2?max_staleness_ms={allow}"))
        unavailable(http("POST", url + "/v1/features/batch",
                         {"user_ids": ["user-1", "user-2"], "max_staleness_ms": allow}))
        time.sleep(0.01)
        unavailable(http("GET", url + "/v1/features/user-1?max_staleness_ms=0"))
        for route in ("/v1/features/{user_id}", "/v1/features/batch",
                      "/v1/features/{entity}/{id}", "/v1/features/{entity}/batch"):
            assert scrape(url, "featurestream_reader_fallbacks_total", route=route,
                          level="cached_row") == 1, route

        server.start()  # same port, empty; written again with a newer value
        seed(server, clicks=9)

        def fresh_again() -> bool:
            reply = http("GET", url + f"/v1/features/user-1?max_staleness_ms={allow}")
            return reply.status == 200 and "stale" not in reply.body

        wait_until(fresh_again, 10, "a fresh row after Redis is back")
        assert http("GET", url + "/v1/features/user-1").body["features"]["clicks_1h"] == 9
        assert breaker_state(url) == 0
        assert transitions(url, "half_open") >= 1 and transitions(url, "closed") == 1


def test_frozen_redis_opens_the_breaker_after_timeouts_probes_half_open_and_closes(
        server: RedisProcess, tmp_path: Path) -> None:
    timeout_ms = 1_000  # a probe stays out this long: long enough to see half-open
    settings = settings_for(server, tmp_path, redis_timeout_ms=timeout_ms, breaker_reset_ms=500)
    with reader_in_thread(settings) as url:
        assert http("GET", url + "/v1/features/user-1").status == 200
        server.freeze()
        with ThreadPoolExecutor(FAILURES * 2) as pool:
            messages = list(pool.map(
                lambda _: unavailable(http("GET", url + "/v1/features/user-1")),
                range(FAILURES * 2)))
        assert all(f"did not answer within {timeout_ms} ms" in m for m in messages), messages
        assert breaker_state(url) == 2
        assert OPEN_MESSAGE in unavailable(http("GET", url + "/v1/features/user-1"))
        stale = http("GET", url + "/v1/features/user-1?max_staleness_ms=60000")
        assert stale.status == 200 and stale.body["stale"] is True

        time.sleep(0.5)  # the reset: the next call is the probe, and waits out a timeout
        with ThreadPoolExecutor(1) as pool:
            probe = pool.submit(http, "GET", url + "/v1/features/user-1")
            wait_until(lambda: breaker_state(url) == 1, 5, "the breaker half-open")
            # while the probe is out, the others are refused (or served stale) at once
            assert OPEN_MESSAGE in unavailable(http("GET", url + "/v1/features/user-2"))
            assert http("GET", url + "/v1/features/user-1?max_staleness_ms=60000"
                        ).body["stale"] is True
            assert "did not answer" in unavailable(probe.result())
        assert breaker_state(url) == 2 and transitions(url, "open") == 2

        server.thaw()
        wait_until(lambda: http("GET", url + "/v1/features/user-1").status == 200, 10,
                   "the breaker closed after Redis thawed")
        assert breaker_state(url) == 0
        assert transitions(url, "half_open") >= 2 and transitions(url, "closed") == 1
        assert http("GET", url + "/readyz").status == 200


def test_a_key_of_the_wrong_type_is_an_error_for_its_caller_only(server: RedisProcess,
                                                                 tmp_path: Path) -> None:
    server.client().set(f"{PREFIX}user:broken", "not a hash")  # HGETALL: WRONGTYPE
    with reader_in_thread(settings_for(server, tmp_path)) as url:
        for _ in range(FAILURES + 2):
            reply = http("GET", url + "/v1/features/broken")
            assert "WRONGTYPE" in unavailable(reply)
        assert breaker_state(url) == 0, "Redis answered: the breaker stays closed"
        assert http("GET", url + "/v1/features/user-1").status == 200
