"""The feature job's Redis writer through a Redis outage (a real redis-server, stopped and
started): a flush waits for Redis within its retry budget and writes everything once it is
back (also into a Redis restarted empty, which has lost the upsert script), and raises past
the budget (the job then restarts from its last checkpoint)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.udfs.store.redis_layout import decode_row, user_key
from testing.reader_fixtures import RedisProcess

pytestmark = pytest.mark.redis


def row(as_of: int, events: int) -> dict:
    return {"as_of": as_of, "version": 1, "events_1m": events}


def test_a_flush_waits_for_redis_and_writes_everything_once_it_is_back(
        server: RedisProcess) -> None:
    writer = RedisRowWriter(RedisTarget(server.url, "t:", 60, 10_000), retry_ms=30_000)
    writer.add("user:before", row(1_000, 1))
    writer.flush()
    server.stop()  # gone, and back empty: the upsert script must be loaded again
    restarted = threading.Timer(1.0, server.start)
    restarted.start()
    users = [f"u{i}" for i in range(250)]
    for i, user in enumerate(users):
        writer.add(f"user:{user}", row(2_000 + i, i))
    writer.flush()  # returns once written
    restarted.join()
    client = server.client()
    for i, user in enumerate(users):
        assert decode_row(client.hgetall(user_key("t:", user)))["events_1m"] == i
    writer.close()


def test_past_its_retry_budget_a_flush_raises(server: RedisProcess) -> None:
    writer = RedisRowWriter(RedisTarget(server.url, "t:", 60, 10_000), retry_ms=300)
    server.stop()
    writer.add("user:u", row(1_000, 1))
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        writer.flush()
    waited = time.monotonic() - started
    server.start()
    writer.flush()  # nothing was dropped: the rows are still buffered and written now
    assert decode_row(server.client().hgetall(user_key("t:", "u")))["events_1m"] == 1
    print(f"gave up after {waited:.2f} s (budget 0.3 s)")
    # it retried (not failed at once) and stopped (not waited for ever): its budget, not speed
    assert 0.2 <= waited < 10
