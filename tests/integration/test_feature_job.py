"""The feature job on the real stack: rows in Redis equal an independent oracle; every bad
record lands in the DLQ exactly once with its reason; good records are unaffected; and after
the job's Python workers are killed mid-stream, recovery from a checkpoint still yields rows
equal to the oracle."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import pytest

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.jobs.redis_target import sync_client
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.store.redis_layout import decode_row, user_key
from featurestream.udfs.wire.dead_letters import (
    HEADER_EXCEPTION_CLASS,
    HEADER_EXCEPTION_MESSAGE,
    HEADER_STAGE,
)
from tests.integration.conftest import (
    cancel_job,
    flink_get,
    job_diagnostics,
    job_exceptions,
    read_topic,
)
from tests.oracle import assert_row_matches, expected_row

pytestmark = pytest.mark.flink

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


def good_events(seed: int, count: int = 3000) -> tuple[list[Event], dict[str, list[Event]]]:
    """A generated stream over ~25 min of event time (so short windows decay), by user."""
    config = StreamConfig(users=40, items=200, events_per_second=2.0, seed=seed,
                          out_of_order_fraction=0.05)
    events = list(itertools.islice(generate_events(config), count))
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_user[event.user_id].append(event)
    return events, by_user


def produce(settings: Settings, records: list[tuple[str, bytes, int]]) -> None:
    with EventProducer(settings) as producer:
        for key, value, ts in records:
            producer.send(key, value, ts)
    assert producer.failed == 0


def encoded(encoder: EventEncoder, events: Sequence[Event]) -> list[tuple[str, bytes, int]]:
    """Events as (key, value, ts), two thirds Avro and one third JSON."""
    return [(e.user_id, encoder.avro(e) if i % 3 else encoder.json(e), e.ts)
            for i, e in enumerate(events)]


def wait_until_stable(settings: Settings, users: list[str], ready: Callable[[], bool],
                      diagnostics: Callable[[], str], timeout_s: float = 240,
                      decayed: dict[str, list[Event]] | None = None) -> dict[str, dict]:
    """Poll until every user has a row, ``ready()`` holds and rows stop changing for 5 s; with
    ``decayed`` (events by user), until some row has also fallen back as its events aged out
    (the job's event time moves on after its start-up hold, at the latest with a checkpoint)."""
    client = sync_client(settings.redis_url, settings.redis_cluster)
    keys = [user_key(settings.redis_key_prefix, u, cluster=settings.redis_cluster) for u in users]
    deadline = time.monotonic() + timeout_s
    last, stable_since, rows = None, time.monotonic(), []
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        rows = [decode_row(h) for h in pipe.execute()]
        snapshot = [(r.get("as_of"), r.get("version")) for r in rows]
        if snapshot != last:
            last, stable_since = snapshot, time.monotonic()
        elif all(rows) and time.monotonic() - stable_since > 5 and ready() and (
                decayed is None or any(fell_back(r, decayed[r_user]) for r_user, r
                                       in zip(users, rows, strict=True))):
            return dict(zip(users, rows, strict=True))
        time.sleep(1)
    missing = sum(1 for r in rows if not r)
    pytest.fail(f"job did not settle: {missing} users without rows\n{diagnostics()}")


def fell_back(row: dict, events: list[Event]) -> bool:
    """Whether the row is past its events and its shortest window has emptied."""
    return row["as_of"] > max(e.ts for e in events) and row["events_1m"] == 0


def assert_rows_equal_oracle(rows: dict[str, dict], by_user: dict[str, list[Event]]) -> int:
    """Every row equals the oracle as of its as_of; returns how many rows decayed."""
    decayed = 0
    for user_id, events in by_user.items():
        row = rows[user_id]
        newest = max(e.ts for e in events)
        assert row["as_of"] >= newest, user_id
        assert_row_matches(row, expected_row(events, row["as_of"]), user_id)
        assert row["updated_at"] > 0
        decayed += fell_back(row, events)
    return decayed


def test_rows_match_oracle_and_bad_records_go_to_dlq_once(stack: LocalStack) -> None:
    settings = isolated(stack, "features")
    job_id = submit_job(settings, "features")
    try:
        assert any(job.id == job_id for s in stack.status() for job in s.jobs)
        events, by_user = good_events(seed=11)
        encoder = EventEncoder(registry_for(settings.schema_registry))
        # Too old for the largest window as of the user's row (or beyond allowed lateness):
        # produced after the user's events, with the same key, so it is judged after them.
        too_old = {}
        for user_id in sorted(by_user)[:5]:
            newest = max(e.ts for e in by_user[user_id])
            event = Event(f"old-{user_id}", user_id, "purchase", "item-1", 5.0,
                          newest - 25 * HOUR, None)
            too_old[encoder.json(event)] = user_id
        undecodable = bad_records()
        records = encoded(encoder, events)
        records[1500:1500] = [("bad", raw, events[1500].ts) for raw in undecodable]
        records += [(user_id, raw, events[-1].ts) for raw, user_id in too_old.items()]
        produce(settings, records)

        dlq: list = []

        def dlq_complete() -> bool:
            dlq[:] = read_topic(settings, settings.events_dlq_topic, settings.topic_partitions)
            return len(dlq) >= len(undecodable) + len(too_old)

        rows = wait_until_stable(settings, sorted(by_user), dlq_complete,
                                 lambda: job_diagnostics(settings, job_id), decayed=by_user)
        decayed = assert_rows_equal_oracle(rows, by_user)
        assert decayed > 0, "no row fell back as its events aged out (expiry timers)"
        assert job_exceptions(settings, job_id) == [], "the job failed and restarted"

        # Each bad record exactly once, with its stage and reason; nothing else.
        assert sorted(m.value() for m in dlq) == sorted([*undecodable, *too_old])
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


def test_recovery_from_checkpoint_yields_oracle_rows(stack: LocalStack) -> None:
    settings = isolated(stack, "recovery")
    job_id = submit_job(settings, "features")
    try:
        events, by_user = good_events(seed=23)
        records = encoded(EventEncoder(registry_for(settings.schema_registry)), events)
        produce(settings, records[:2000])

        def completed_checkpoints() -> int:
            return flink_get(settings, f"/jobs/{job_id}/checkpoints")["counts"]["completed"]

        deadline = time.monotonic() + 120
        while completed_checkpoints() < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert completed_checkpoints() >= 2, job_diagnostics(settings, job_id)
        workers = stack.flink.python_workers()
        assert workers
        for pid in workers:  # the Python side of the job dies mid-stream
            os.kill(pid, signal.SIGKILL)
        produce(settings, records[2000:])

        rows = wait_until_stable(settings, sorted(by_user),
                                 lambda: bool(job_exceptions(settings, job_id)),
                                 lambda: job_diagnostics(settings, job_id), decayed=by_user)
        assert job_exceptions(settings, job_id), "the job never noticed its workers died"
        assert flink_get(settings, f"/jobs/{job_id}")["state"] == "RUNNING"
        assert assert_rows_equal_oracle(rows, by_user) > 0
    finally:
        cancel_job(settings, job_id)


def test_a_future_event_from_the_year_3000_does_not_stop_the_counting(stack: LocalStack) -> None:
    """The poison record goes to the DLQ as FutureEvent; the valid events after it still count
    (it never moved the watermark, so they are not late)."""
    settings = isolated(stack, "future")
    job_id = submit_job(settings, "features")
    try:
        config = StreamConfig(users=10, items=50, events_per_second=5.0, seed=31,
                              start_ts=int(time.time() * 1000) - 120_000)
        events = list(itertools.islice(generate_events(config), 600))
        by_user: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_user[event.user_id].append(event)
        encoder = EventEncoder(registry_for(settings.schema_registry))
        victim = sorted(by_user)[0]
        poison = encoder.avro(Event("poison", victim, "purchase", "item-1", 9.0,
                                    32_503_680_000_000, None))
        produce(settings, [*encoded(encoder, events[:300]), (victim, poison, events[299].ts)])
        wait_until_stable(settings, sorted({e.user_id for e in events[:300]}), lambda: True,
                          lambda: job_diagnostics(settings, job_id), timeout_s=60)
        # Only now the events stamped after it: had it moved the watermark, they would be late.
        produce(settings, encoded(encoder, events[300:]))
        dlq: list = []

        def dlq_has(count: int) -> bool:
            dlq[:] = read_topic(settings, settings.events_dlq_topic, settings.topic_partitions)
            return len(dlq) >= count

        rows = wait_until_stable(settings, sorted(by_user), lambda: dlq_has(1),
                                 lambda: job_diagnostics(settings, job_id), timeout_s=60)
        assert_rows_equal_oracle(rows, by_user)  # every valid event counted, the later ones too
        assert rows[victim]["as_of"] < 32_503_680_000_000
        assert job_exceptions(settings, job_id) == [], "the job failed and restarted"
        assert [m.value() for m in dlq] == [poison], "a valid event was dead-lettered"
        headers = {k: v.decode() for k, v in dlq[0].headers()}
        assert headers[HEADER_EXCEPTION_CLASS] == "FutureEvent"
        assert headers[HEADER_STAGE] == "window"
        assert "FEATURESTREAM_MAX_FUTURE_SKEW_MS" in headers[HEADER_EXCEPTION_MESSAGE]
        assert "event time 32503680000000 (3000-01-01" in headers[HEADER_EXCEPTION_MESSAGE]
    finally:
        cancel_job(settings, job_id)
