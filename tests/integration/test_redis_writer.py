"""The feature job's Redis writer against a real redis-server: many rows per script call,
exact values, newest row wins under replay (whatever the row dict's order), TTL refreshed; the
upsert script replaces the whole hash (a field the newer row lacks, e.g. warming_up, goes)."""

from __future__ import annotations

import pytest

from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.udfs.store.redis_layout import (
    ROWS_PER_UPSERT,
    UPSERT_ROWS_LUA,
    RowValue,
    decode_row,
    entity_key,
    upsert_rows_args,
    user_key,
)
from testing.reader_fixtures import RedisProcess

pytestmark = pytest.mark.redis


def row(as_of: int, version: int, events: int) -> dict:
    return {"as_of": as_of, "version": version, "events_1m": events, "spend_1m": events / 3,
            "avg_spend_1h": None if events % 2 else 0.1 + 0.2}


def test_rows_are_written_exactly_across_script_calls(server: RedisProcess) -> None:
    writer = RedisRowWriter(RedisTarget(server.url, "t:", 60, 10_000))
    users = [f"u{i}" for i in range(2 * ROWS_PER_UPSERT + 7)]
    for i, user in enumerate(users):
        writer.add(f"user:{user}", row(1_000 + i, 1, i))
    writer.flush()
    client = server.client()
    for i, user in enumerate(users):
        stored = decode_row(client.hgetall(user_key("t:", user)))
        updated_at = stored.pop("updated_at")
        assert isinstance(updated_at, int) and updated_at > 0
        assert stored == row(1_000 + i, 1, i)
        assert 0 < client.ttl(user_key("t:", user)) <= 60
    writer.close()


def test_an_older_row_never_replaces_a_newer_one(server: RedisProcess) -> None:
    writer = RedisRowWriter(RedisTarget(server.url, "t:", 60, 10_000))
    client = server.client()

    def write_and_read(new: dict) -> RowValue:
        writer.add("user:u", new)
        writer.flush()
        return decode_row(client.hgetall(user_key("t:", "u")))["events_1m"]

    assert write_and_read(row(2_000, 5, 1)) == 1
    assert write_and_read(row(1_999, 9, 2)) == 1  # older as_of: ignored
    assert write_and_read(row(2_000, 4, 3)) == 1  # same as_of, older version: ignored
    assert write_and_read(row(2_000, 5, 4)) == 4  # the same row again (a replay): written
    assert write_and_read(row(2_001, 1, 5)) == 5  # newer as_of: written
    writer.close()


def test_the_comparison_does_not_depend_on_where_the_row_puts_as_of_and_version(
        server: RedisProcess) -> None:
    writer = RedisRowWriter(RedisTarget(server.url, "t:", 60, 10_000))
    client = server.client()

    def write_and_read(new: dict) -> dict:
        writer.add("user:u", new)
        writer.flush()
        return decode_row(client.hgetall(user_key("t:", "u")))

    def meta_last(as_of: int, version: int, events: int) -> dict:
        fields = row(as_of, version, events)
        return {**{k: v for k, v in fields.items() if k not in ("as_of", "version")},
                "version": version, "as_of": as_of}

    assert write_and_read(meta_last(2_000, 5, 1))["events_1m"] == 1
    assert write_and_read(meta_last(1_999, 9, 2))["events_1m"] == 1  # older as_of: ignored
    assert write_and_read(meta_last(2_000, 4, 3))["events_1m"] == 1  # older version: ignored
    stored = write_and_read(meta_last(2_001, 1, 5))
    assert (stored["as_of"], stored["version"], stored["events_1m"]) == (2_001, 1, 5)
    writer.close()


def test_a_newer_row_replaces_the_hash_and_an_older_one_leaves_it(server: RedisProcess) -> None:
    """A row is the whole truth: once nothing warms up, the stored warming_up must go, as must
    any field the newer row no longer has; an older row changes nothing, not even the TTL."""
    client = server.client()
    upsert = client.register_script(UPSERT_ROWS_LUA)
    key = entity_key("t:", "item", "sku|9")

    def write(new: dict, ttl: int = 60) -> int:
        return int(upsert(keys=[key], args=upsert_rows_args([new], 7, ttl)))

    warming = {"views_1h": 5_000, "buyers_24h": None}
    assert write({"as_of": 1_000, "version": 1, "views_1h": 1, "last_buyer": "u-1",
                  "recent": ["u-1"], "warming_up": warming}) == 1
    assert decode_row(client.hgetall(key)) == {
        "as_of": 1_000, "version": 1, "updated_at": 7, "views_1h": 1, "last_buyer": "u-1",
        "recent": ["u-1"], "warming_up": warming}
    assert write({"as_of": 2_000, "version": 1, "views_1h": 2, "warming_up": {}}, 600) == 1
    assert decode_row(client.hgetall(key)) == {"as_of": 2_000, "version": 1, "updated_at": 7,
                                               "views_1h": 2}
    assert 60 < client.ttl(key) <= 600
    assert write({"as_of": 1_500, "version": 9, "views_1h": 3,
                  "warming_up": {"views_1h": 1}}, 30) == 0  # older: ignored, hash untouched
    assert decode_row(client.hgetall(key))["views_1h"] == 2
    assert b"warming_up" not in client.hkeys(key)
    assert client.ttl(key) > 60
