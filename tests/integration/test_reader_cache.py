"""The reader's cache invalidated by a real redis-server (client-side caching): a cached row
rewritten by HSET or by the feature job's Lua upsert is read fresh long before its TTL; the
tracking connection killed flushes the cache and tracking comes back; the data connection
killed, or Redis restarted, flushes it too; a Redis refusing tracking leaves the cache on its
TTL."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestream.settings import Settings
from featurestream.udfs.store.redis_layout import encode_value, user_key
from testing.reader_fixtures import (
    RedisProcess,
    feature_row,
    http,
    reader_in_thread,
    scrape,
    seed_rows,
    wait_until,
)

pytestmark = pytest.mark.redis

PREFIX = "fs:"
TTL_MS = 600_000  # far beyond every wait here: only an invalidation can refresh a cached row
INVALIDATIONS = "featurestream_reader_cache_invalidations_total"


def settings_for(server: RedisProcess, **changes: object) -> Settings:
    return Settings().replace(redis_url=server.url, redis_key_prefix=PREFIX,
                              cache_ttl_ms=TTL_MS, **changes)


def write(server: RedisProcess, clicks: int, version: int) -> None:
    """user-1's row as the feature job writes it (the Lua upsert)."""
    seed_rows(server.client(), PREFIX, {"user-1": feature_row(1_000 * version, version=version,
                                                              clicks_1h=clicks)},
              updated_at=1_000 * version)


def clicks(url: str) -> int:
    reply = http("GET", url + "/v1/features/user-1?names=clicks_1h")
    assert reply.status == 200, reply.body
    return int(reply.body["features"]["clicks_1h"])


def invalidations(url: str, kind: str) -> float:
    return scrape(url, INVALIDATIONS, kind=kind) or 0


def hits(url: str) -> float:
    return scrape(url, "featurestream_reader_cache_hits_total") or 0


def wait_cached(url: str) -> None:
    """Until a read of user-1 is answered from the cache (tracking is on, the row cached)."""
    def hit() -> bool:
        before = hits(url)
        clicks(url)
        return hits(url) > before

    wait_until(hit, 10, "user-1 to be answered from the cache")


def test_a_row_rewritten_by_hset_or_the_upsert_script_is_read_fresh(
        server: RedisProcess) -> None:
    write(server, clicks=1, version=1)
    with reader_in_thread(settings_for(server)) as url:
        wait_cached(url)
        assert clicks(url) == 1
        server.client().hset(user_key(PREFIX, "user-1"), "clicks_1h", encode_value(2))
        wait_until(lambda: clicks(url) == 2, 10, "the HSET to be read")
        wait_cached(url)
        write(server, clicks=3, version=2)
        wait_until(lambda: clicks(url) == 3, 10, "the upserted row to be read")
        wait_cached(url)
        assert clicks(url) == 3
        assert invalidations(url, "key") >= 2


def test_killed_tracking_connection_flushes_the_cache_and_tracking_comes_back(
        server: RedisProcess) -> None:
    write(server, clicks=1, version=1)
    client = server.client()
    with reader_in_thread(settings_for(server)) as url:
        wait_cached(url)
        flushes = invalidations(url, "flush")
        assert client.client_kill_filter(_type="pubsub") == 1
        wait_until(lambda: invalidations(url, "flush") > flushes, 10,
                   "the cache to be flushed")
        write(server, clicks=2, version=2)  # nobody listens now: the flush keeps it fresh
        assert clicks(url) == 2
        wait_cached(url)  # tracking is back, to a new listener
        assert len(client.client_list(_type="pubsub")) == 1
        write(server, clicks=3, version=3)
        wait_until(lambda: clicks(url) == 3, 10, "the row written after the reconnect")


def test_killed_data_connection_flushes_the_cache(server: RedisProcess) -> None:
    write(server, clicks=1, version=1)
    client = server.client()
    with reader_in_thread(settings_for(server)) as url:
        wait_cached(url)
        flushes = invalidations(url, "flush")
        assert client.client_kill_filter(_type="normal", skipme=True) >= 1
        wait_until(lambda: invalidations(url, "flush") > flushes, 10,
                   "the cache to be flushed")
        write(server, clicks=2, version=2)
        wait_until(lambda: http("GET", url + "/v1/features/user-1").status == 200, 10,
                   "the reader to reconnect")
        assert clicks(url) == 2
        wait_cached(url)
        write(server, clicks=3, version=3)
        wait_until(lambda: clicks(url) == 3, 10, "the row written after the reconnect")


def test_a_redis_restart_flushes_the_cache_and_tracking_comes_back(
        server: RedisProcess) -> None:
    write(server, clicks=1, version=1)
    with reader_in_thread(settings_for(server)) as url:
        wait_cached(url)
        server.stop()
        server.start()  # empty: no persistence
        write(server, clicks=2, version=2)
        wait_until(lambda: http("GET", url + "/v1/features/user-1").status == 200, 20,
                   "the reader to reconnect")
        assert clicks(url) == 2
        wait_cached(url)
        write(server, clicks=3, version=3)
        wait_until(lambda: clicks(url) == 3, 10, "the row written after the restart")


def test_a_redis_refusing_tracking_leaves_the_cache_on_its_ttl(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path, extra_args=("--rename-command", "CLIENT", '""'))
    server.start()
    try:
        write(server, clicks=1, version=1)
        with reader_in_thread(settings_for(server)) as url:
            wait_cached(url)
            write(server, clicks=2, version=2)
            assert clicks(url) == 1  # cached for the TTL: nothing invalidates it
    finally:
        server.stop()
