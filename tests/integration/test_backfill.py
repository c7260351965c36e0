"""Backfill from a Kafka topic on the real stack: the training set built from the topic equals
the one built from a JSON-lines file of the same events (log order is each user's order in
both: the topic keeps it per partition, the file per line); a bad record is a dead letter at its
Kafka position; ``--start``/``--end`` select by record timestamp. The online store rebuilt from
a file holds each user's row as the brute-force oracle computes it at the row's ``as_of``."""

from __future__ import annotations

import base64
import json
import time
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from featurestream.backfill.kafka import TopicHistory
from featurestream.cli import build_parser
from featurestream.cli.backfill import backfill_command
from featurestream.devstack import LocalStack
from featurestream.devstack.generator import StreamConfig, generate_labelled_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.store.redis_layout import decode_row, user_key
from testing.reader_fixtures import RedisProcess
from tests.oracle import assert_row_matches, expected_row

EVENTS = 6_000
BROKEN = b"{not json"
SENTINEL = b"sentinel"
DISORDER = StreamConfig().max_out_of_order_ms


def backfill(settings: Settings, out: Path, *argv: str) -> tuple[pa.Table, list[dict]]:
    """Run the command; the training set (sorted by event id) and the dead letters."""
    dead = out.with_suffix(".dead.jsonl")
    args = build_parser().parse_args(["backfill", *argv, "--training-set", str(out),
                                      "--dead-letters", str(dead)])
    assert backfill_command(settings, args) == 0
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    return pq.read_table(out).sort_by("event_id"), letters


def settle_end_offsets(settings: Settings, records: int, last_ts: int) -> None:
    """Make the end offsets cover the ``records`` produced: tansu's end offset of a
    partition is the start of its last batch (Kafka's is past it), so a batch of sentinels (bad
    records, dead letters if a backfill reads them) goes last to every partition."""
    consumer = Consumer(settings.kafka_config({"group.id": "tests"}))
    try:
        deadline = time.monotonic() + 30
        while True:
            ends = [consumer.get_watermark_offsets(TopicPartition(settings.events_topic, p),
                                                   timeout=5)[1]
                    for p in range(settings.topic_partitions)]
            if sum(ends) >= records:
                return
            assert time.monotonic() < deadline, f"end offsets {ends} stay short of {records}"
            with EventProducer(settings) as producer:
                for n in range(8):  # keys that reach every partition
                    producer.send(f"sentinel-{n}", SENTINEL, last_ts)
            time.sleep(0.5)
    finally:
        consumer.close()


@pytest.mark.flink
def test_a_topic_and_a_json_lines_file_of_the_same_events_give_one_training_set(
        stack: LocalStack, tmp_path: Path) -> None:
    settings = isolated(stack, "backfill")
    history = list(islice(generate_labelled_events(StreamConfig(users=150, seed=9)), EVENTS))
    events = [event for event, _ in history]
    encoder = EventEncoder(registry_for(settings.schema_registry))
    with EventProducer(settings) as producer:
        for i, event in enumerate(events):
            producer.send(event.user_id, encoder.avro(event), event.ts)
            if i == EVENTS // 2:
                producer.send("user-broken", BROKEN, event.ts)
    assert producer.failed == 0
    settle_end_offsets(settings, EVENTS + 1, events[-1].ts)
    lines = [encoder.json(e) for e in events]
    lines.insert(EVENTS // 2 + 1, BROKEN)
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("event_id,label\n" + "".join(
        f"{e.event_id},{'true' if fraud else 'false'}\n" for e, fraud in history))

    from_topic, topic_letters = backfill(settings, tmp_path / "topic.parquet",
                                         f"kafka:{settings.events_topic}", "--labels",
                                         str(labels))
    from_file, file_letters = backfill(settings, tmp_path / "file.parquet", str(jsonl),
                                       "--labels", str(labels))

    assert from_topic.num_rows == sum(e.event_type == "purchase" for e in events) > 50
    assert from_topic.equals(from_file)
    assert from_topic.column("label").null_count == 0
    topic_letters = [d for d in topic_letters if base64.b64decode(d["value"]) != SENTINEL]
    assert [d["error_class"] for d in topic_letters] == ["MalformedRecord"]
    assert [d["error_class"] for d in file_letters] == ["MalformedRecord"]
    letter = topic_letters[0]
    assert letter["input"] == f"kafka:{settings.events_topic}"
    assert letter["position"] == (f"kafka:{settings.events_topic}[{letter['partition']}]"
                                  f"@{letter['offset']}")

    # A time range: each partition from its first record at or after start to its first at
    # or after end; the generator's disorder (up to 3 s) blurs the edges by that much. (tansu
    # answers offset 0 to offsets_for_times: the records' own timestamps decide.)
    start, end = events[1_000].ts, events[4_000].ts
    ranged, _ = backfill(settings, tmp_path / "ranged.parquet",
                         f"kafka:{settings.events_topic}", "--start", str(start), "--end",
                         str(end))
    got = set(ranged.column("event_id").to_pylist())
    purchases = [e for e in events if e.event_type == "purchase"]
    assert {e.event_id for e in purchases if start + DISORDER <= e.ts < end - DISORDER} <= got
    assert got <= {e.event_id for e in purchases if start - DISORDER <= e.ts < end + DISORDER}


@pytest.mark.flink
def test_every_record_of_several_producer_batches_is_read_and_a_live_topic_ends(
        stack: LocalStack) -> None:
    """A partition's last producer batch is read whole (tansu's end offset is its base + 1,
    which the reader must read past), and a record produced while reading does not keep the
    read from ending."""
    settings = isolated(stack, "backfill-batches")
    sent = [f"{batch}-{i}".encode() for batch in range(5) for i in range(120)]
    with EventProducer(settings) as producer:
        for n, value in enumerate(sent):
            producer.send(f"user-{n % 16}", value, 1_700_000_000_000 + n)
            if n % 120 == 119:
                assert producer.flush() == 0  # one producer batch (or more) a partition
    assert producer.failed == 0

    history = TopicHistory(settings, settings.events_topic, "events", None, None)
    assert history.count <= len(sent)  # the end offsets at start: short of it on tansu
    got = [record.value for record in history]
    assert sorted(got) == sorted(sent)

    late = b"produced while reading"
    history = TopicHistory(settings, settings.events_topic, "events", None, None)
    started = time.monotonic()
    got = []
    with EventProducer(settings) as producer:
        for record in history:
            if not got:
                producer.send("user-late", late, 1_700_000_000_000)
                assert producer.flush() == 0
            got.append(record.value)
    assert time.monotonic() - started < 20
    assert sorted(v for v in got if v != late) == sorted(sent)


@pytest.mark.redis
def test_the_online_store_as_of_the_end_is_written_to_redis(tmp_path: Path) -> None:
    events = [e for e, _ in islice(generate_labelled_events(StreamConfig(users=60, seed=4)),
                                   4_000)]
    jsonl = tmp_path / "events.jsonl"
    encoder = EventEncoder(registry_for(Settings().schema_registry))
    jsonl.write_bytes(b"".join(encoder.json(e) + b"\n" for e in events))
    server = RedisProcess(tmp_path)
    server.start()
    try:
        settings = Settings.from_env({"FEATURESTREAM_HOME": str(tmp_path / "home"),
                                      "FEATURESTREAM_REDIS_URL": server.url,
                                      "FEATURESTREAM_REDIS_KEY_PREFIX": "bf:"})
        args = build_parser().parse_args(["backfill", str(jsonl), "--online-store",
                                          "--dead-letters", str(tmp_path / "dead.jsonl")])
        assert backfill_command(settings, args) == 0
        client = server.client()
        users = sorted({e.user_id for e in events})
        assert len(client.keys("bf:user:*")) == len(users)
        for user in users:
            row = decode_row(client.hgetall(user_key("bf:", user)))
            mine = [e for e in events if e.user_id == user]
            assert isinstance(row["as_of"], int) and row["as_of"] >= max(e.ts for e in mine)
            assert_row_matches(row, expected_row(mine, row["as_of"]), user)
    finally:
        server.stop()
