"""The feature job's Redis writer against a real redis-server: many rows per script call,
exact values, newest row wins under replay (whatever the row dict's order), TTL refreshed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.udfs.store.redis_layout import (
    ROWS_PER_UPSERT,
    FeatureValue,
    decode_row,
    user_key,
)
from testing.reader_fixtures import RedisProcess

pytestmark = pytest.mark.redis


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def row(as_of: int, version: int, events: int) -> dict:
    return {"as_of": as_of, "version": version, "events_1m": events, "spend_1m": events / 3,
            "avg_spend_1h": None if events % 2 else 0.1 + 0.2}


def test_rows_are_written_exactly_across_script_calls(server: RedisProcess) -> None:
    writer = RedisRowWriter(RedisTarget(server.url, "t:", 60, 10_000))
    users = [f"u{i}" for i in range(2 * ROWS_PER_UPSERT + 7)]
    for i, user in enumerate(users):
        writer.add(user, row(1_000 + i, 1, i))
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

    def write_and_read(new: dict) -> FeatureValue:
        writer.add("u", new)
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
        writer.add("u", new)
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
