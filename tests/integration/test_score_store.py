"""The rows captured for scored events, through a real redis-server: the feature job's writer
stores them once (a replay never changes them) with their TTL; the scoring job's store reads
those of several entities in one round trip, exactly as captured (infinities, strings, lists,
"no row"), leaves out what is not captured and names what it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.jobs.score_store import ScoreStore
from featurestream.udfs.features.shard import CapturedRow
from featurestream.udfs.store.redis_layout import RowValue, point_in_time_key
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem
from testing.reader_fixtures import RedisProcess

pytestmark = pytest.mark.redis


def test_captured_rows_are_written_once_and_read_back_exactly(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        client = server.client()
        target = RedisTarget(server.url, "t:", 60, 100, point_in_time_ttl_ms=90_000)
        user: dict[str, RowValue] = {"as_of": 10, "version": 1, "purchases_5m": 2,
                                     "spend_1h": 5.5, "max_1h": float("inf")}
        item: dict[str, RowValue] = {"as_of": 12, "version": 3, "views_1h": 40,
                                     "last_type": "view", "last_3": ["a", None, "c"]}
        writer = RedisRowWriter(target)
        for captured in (CapturedRow("user:u-1", "e1", 10, user),
                         CapturedRow("item:i-1", "e1", 10, item),
                         CapturedRow("user:u-2", "e2", 11, None)):
            writer.add_captured(captured)
        writer.flush()
        writer.add_captured(CapturedRow("user:u-1", "e1", 10, {**user, "purchases_5m": 99}))
        writer.flush()  # a replay: the first capture stays
        ttl = client.pttl(point_in_time_key("t:", "user", "e1"))
        assert 0 < ttl <= 90_000
        client.set(point_in_time_key("t:", "item", "e9"), b"garbage")
        store = ScoreStore(target)
        before = client.info("stats")["total_commands_processed"]
        keys = [("user", "u-1", "e1"), ("item", "i-1", "e1"), ("user", "u-2", "e2"),
                ("user", "u-3", "e3"), ("item", "i-1", "e9"), ("user", "u-other", "e1")]
        rows = store.captured(keys)
        after = client.info("stats")["total_commands_processed"]
        assert after - before == 1 + 1, "one MGET (and this INFO)"
        assert rows[("user", "u-1", "e1")] == user and rows[("item", "i-1", "e1")] == item
        assert rows[("user", "u-2", "e2")] is None, "captured: the user had no row"
        assert ("user", "u-3", "e3") not in rows, "not captured (yet)"
        for key, words in ((("item", "i-1", "e9"), "unreadable"),
                           (("user", "u-other", "e1"), "two events share the id")):
            problem = rows[key]
            assert isinstance(problem, Problem), key
            assert problem.error_class == ErrorClass.CORRUPT_FEATURE_ROW
            assert words in problem.message
        store.close()
        writer.close()
    finally:
        server.stop()
