"""The scoring job's feature-row port against a real redis-server: the rows of several
entities (users and items) in one pipelined round trip, absent rows left out, an unreadable
row a Problem naming its entity."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.score_store import ScoreStore
from featurestream.udfs.store.redis_layout import RowValue, encode_value, entity_key, user_key
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem
from testing.reader_fixtures import RedisProcess

pytestmark = pytest.mark.redis


def test_rows_of_several_entities_in_one_round_trip(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        client = server.client()
        user: dict[str, RowValue] = {"as_of": 10, "version": 1, "purchases_5m": 2, "spend_1h": 5.5}
        item: dict[str, RowValue] = {"as_of": 12, "version": 3, "views_1h": 40, "last_type": "view"}
        for key, row in ((user_key("t:", "u-1"), user), (entity_key("t:", "item", "i-1"), item)):
            client.hset(key, mapping={k: encode_value(v) for k, v in row.items()})
        client.hset(entity_key("t:", "item", "i-bad"), mapping={"as_of": "not a number"})
        store = ScoreStore(RedisTarget(server.url, "t:", 60, 100))
        before = client.info("stats")["total_commands_processed"]
        rows = store.rows([("item", "i-1"), ("item", "i-bad"), ("item", "i-2"),
                           ("user", "u-1"), ("user", "u-2")])
        after = client.info("stats")["total_commands_processed"]
        assert after - before == 1 + 5, "one pipelined HGETALL per key (and this INFO)"
        assert (rows[("user", "u-1")], rows[("item", "i-1")]) == (user, item)
        bad = rows[("item", "i-bad")]
        assert isinstance(bad, Problem) and bad.error_class == ErrorClass.CORRUPT_FEATURE_ROW
        assert "item 'i-bad'" in bad.message
        assert set(rows) == {("user", "u-1"), ("item", "i-1"), ("item", "i-bad")}
        store.close()
    finally:
        server.stop()
