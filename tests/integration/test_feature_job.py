"""The feature job on the real stack: rows in Redis equal an independent oracle; every bad
record lands in the DLQ exactly once with its reason, and good records are unaffected."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict

import pytest
import redis

from featurestream.kafka_producer import EventProducer
from featurestream.stack import LocalStack
from featurestream.submit import submit_job
from tests.integration.conftest import (
    cancel_job,
    job_diagnostics,
    job_exceptions,
    read_topic,
)
from tests.oracle import assert_row_matches, expected_row
from udfs.codec import EventEncoder
from udfs.dlq import HEADER_EXCEPTION_CLASS, HEADER_EXCEPTION_MESSAGE, HEADER_STAGE
from udfs.events import Event
from udfs.generator import StreamConfig, generate_events
from udfs.redis_layout import decode_row, user_key
from udfs.schema_registry import registry_for

pytestmark = pytest.mark.integration

HOUR = 3_600_000


def bad_records() -> dict[bytes, str]:
    """Undecodable records -> the error class the DLQ must report."""
    return {
        b"\x00\x00\x00\x03\xe7" + b"\x02x": "UnknownSchemaId",
        b"\x00\x00\x00\x00\x01\x08trunc": "MalformedRecord",
        b"this is not an event": "MalformedRecord",
        b"\xff\xfe\x00garbage": "MalformedRecord",
        b'{"event_id": "b1", "event_type": "view", "item_id": null, "amount": null,'
        b' "ts": 1700000000000}': "SchemaViolation",
        b'{"event_id": "b2", "user_id": "u", "event_type": "refund", "item_id": null,'
        b' "amount": null, "ts": 1700000000000}': "SchemaViolation",
        b'{"event_id": "b3", "user_id": "u", "event_type": "view", "item_id": null,'
        b' "amount": null, "ts": "yesterday"}': "SchemaViolation",
        b"[1, 2, 3]": "MalformedRecord",
    }


def wait_until_stable(client: redis.Redis, keys: list[str], dlq_count, expected_dlq: int,
                      diagnostics, timeout_s: float = 240) -> dict[str, dict]:
    """Poll until every key has a row, the DLQ is complete and rows stop changing for 5 s."""
    deadline = time.monotonic() + timeout_s
    last, stable_since = None, time.monotonic()
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        rows = [decode_row(h) for h in pipe.execute()]
        snapshot = [(r.get("as_of"), r.get("version")) for r in rows]
        if snapshot != last:
            last, stable_since = snapshot, time.monotonic()
        elif (all(rows) and time.monotonic() - stable_since > 5
              and dlq_count() >= expected_dlq):
            return dict(zip(keys, rows, strict=True))
        time.sleep(1)
    missing = sum(1 for r in rows if not r)
    pytest.fail(f"job did not settle: {missing} users without rows, DLQ {dlq_count()}"
                f"/{expected_dlq}\n{diagnostics()}")


def test_rows_match_oracle_and_bad_records_go_to_dlq_once(stack: LocalStack) -> None:
    settings = stack.settings
    job_id = submit_job(settings, "features")
    try:
        status = stack.status()
        assert job_id in str(status), status

        config = StreamConfig(users=40, items=200, events_per_second=2.0, seed=11,
                              out_of_order_fraction=0.05)
        good = list(itertools.islice(generate_events(config), 3000))
        by_user: dict[str, list[Event]] = defaultdict(list)
        for event in good:
            by_user[event.user_id].append(event)
        encoder = EventEncoder(registry_for(settings.schema_registry_url))
        # Too old for the largest window as of the user's row (or beyond allowed lateness):
        # produced after the user's events, with the same key, so it is judged after them.
        too_old = {}
        for user_id in sorted(by_user)[:5]:
            newest = max(e.ts for e in by_user[user_id])
            event = Event(f"old-{user_id}", user_id, "purchase", "item-1", 5.0,
                          newest - 25 * HOUR, None)
            too_old[encoder.json(event)] = user_id
        undecodable = bad_records()

        with EventProducer(settings) as producer:
            for i, event in enumerate(good):
                value = encoder.avro(event) if i % 3 else encoder.json(event)
                producer.send(event.user_id, value, event.ts)
                if i == 1500:
                    for raw in undecodable:
                        producer.send("bad", raw, event.ts)
            for raw, user_id in too_old.items():
                producer.send(user_id, raw, good[-1].ts)
        assert producer.failed == 0

        client = redis.Redis.from_url(settings.redis_url)
        keys = [user_key(settings.redis_key_prefix, u) for u in sorted(by_user)]
        expected_dlq = len(undecodable) + len(too_old)

        def dlq_records() -> list:
            return read_topic(settings, settings.events_dlq_topic, settings.topic_partitions)

        dlq_count_cache: list = []

        def dlq_count() -> int:
            dlq_count_cache[:] = dlq_records()
            return len(dlq_count_cache)

        rows = wait_until_stable(client, keys, dlq_count, expected_dlq,
                                 lambda: job_diagnostics(settings, job_id))

        # Every user's row equals the oracle over the good events, as of the row's as_of.
        decayed = 0
        for user_id in sorted(by_user):
            row = rows[user_key(settings.redis_key_prefix, user_id)]
            events = by_user[user_id]
            assert row["as_of"] >= max(e.ts for e in events), user_id
            assert_row_matches(row, expected_row(events, row["as_of"]), user_id)
            assert row["updated_at"] > 0
            decayed += row["as_of"] > max(e.ts for e in events) and row["events_1m"] == 0
        assert decayed > 0, "no row fell back as its events aged out (expiry timers)"
        assert job_exceptions(settings, job_id) == [], "the job failed and restarted"

        # Each bad record exactly once, with its stage and reason; nothing else.
        dlq = dlq_count_cache
        values = [m.value() for m in dlq]
        assert sorted(values) == sorted([*undecodable, *too_old])
        for message in dlq:
            headers = {k: v.decode() for k, v in message.headers()}
            if message.value() in undecodable:
                assert headers[HEADER_STAGE] == "decode"
                assert headers[HEADER_EXCEPTION_CLASS] == undecodable[message.value()]
            else:
                assert headers[HEADER_STAGE] == "window"
                assert headers[HEADER_EXCEPTION_CLASS] in ("ExpiredEvent", "LateEvent")
                assert message.key().decode() == too_old[message.value()]
            assert headers[HEADER_EXCEPTION_MESSAGE]
            assert headers["__connect.errors.topic"] == settings.events_topic
    finally:
        cancel_job(settings, job_id)
