"""The stream and the API agree: the scoring job (real Flink, Kafka, Redis) scores purchases
with an experiment (v1:60,v2:40); then, for each user's last purchase, ``POST /v1/predict`` with
the same event fields on a reader of the same settings gives the same score (to 1e-12), version,
variant, vector and ``as_of``.

The job scores an event from the row the feature job captured before it; the reader scores a
request from the entity's latest row. They are the same row when the event is the entity's
last: here the rows are written as a feature job far ahead writes them (its writer: the
captured row of every event and, per user, the latest row = the one captured for the user's
last event; some values null, some users without a row, so defaults are exercised too)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.features.shard import CapturedRow
from featurestream.udfs.store.redis_layout import RowValue
from testing import model_fixtures
from testing.reader_fixtures import http, reader_in_thread
from tests.integration.conftest import cancel_job, job_diagnostics, wait_for
from tests.integration.test_scoring_job import Topics

pytestmark = pytest.mark.flink

START = 1_700_000_000_000


def purchases(count: int, users: int) -> list[Event]:
    """Purchases of ``users`` users, several each, at distinct times across the day."""
    return [Event(f"agree-{i}", f"u-{i % users}", "purchase", f"item-{i % 7}", 3.0 + 1.5 * i,
                  START + i * 977_000, None) for i in range(count)]


def write_rows(settings: Settings, events: Sequence[Event]) -> None:
    """Each event's captured user row (every sixth: none; some values null), and each user's
    latest row: the one captured for its last event, written by the feature job's writer."""
    names = [f.name for group in settings.load_definitions().groups for f in group.features]
    writer = RedisRowWriter(RedisTarget.from_settings(settings))
    latest: dict[str, dict[str, RowValue] | None] = {}
    try:
        for i, event in enumerate(events):
            row: dict[str, RowValue] | None = None
            if i % 6 != 5:
                row = {"as_of": event.ts - 1_000, "version": i + 1}
                for j, name in enumerate(names):
                    row[name] = None if (i + j) % 4 == 0 else (i * 7 + j) % 13 / 2
            writer.add_captured(CapturedRow(f"user:{event.user_id}", event.event_id, event.ts,
                                            row))
            latest[event.user_id] = row
        for user_id, row in latest.items():
            if row is not None:
                writer.add(f"user:{user_id}", row)
    finally:
        writer.close()


def test_the_api_scores_as_the_stream(stack: LocalStack, tmp_path: Path) -> None:
    models = tmp_path / "models"
    model_fixtures.publish(models, 1)
    model_fixtures.publish(models, 2, seed=1)
    settings = isolated(stack, "agree", models_dir=str(models), experiment="v1:60,v2:40",
                        model_poll_interval_ms=1_000)
    events = purchases(60, 17)
    write_rows(settings, events)
    topics = Topics(settings)
    job = submit_job(settings, "scoring")
    try:
        encoder = EventEncoder(registry_for(settings.schema_registry))
        with EventProducer(settings) as producer:
            for event in events:
                producer.send(event.user_id, encoder.avro(event), event.ts)
        assert producer.failed == 0
        wait_for(topics.settled(len(events), 0), 240, "the stream's scores",
                 lambda: job_diagnostics(settings, job))
    finally:
        cancel_job(settings, job)
    streamed = {s["event_id"]: s for s in topics.scores}
    assert not topics.dead and set(streamed) == {e.event_id for e in events}
    last = {e.user_id: e for e in events}  # each user's last purchase
    compared = []
    with reader_in_thread(settings) as url:
        for event in last.values():
            reply = http("POST", url + "/v1/predict", {
                "user_id": event.user_id, "type": event.event_type, "amount": event.amount,
                "item_id": event.item_id, "ts": event.ts})
            assert reply.status == 200, reply.body
            stream, api = streamed[event.event_id], reply.body
            assert (api["model"], api["version"], api["variant"]) == (
                stream["model"], stream["version"], stream["variant"])
            assert api["score"] == pytest.approx(stream["score"], abs=1e-12)
            assert api["features"] == stream["features"]
            assert api["as_of"] == stream["as_of"]
            assert (api["fallback"] == "defaults") == stream["features_missing"]
            compared.append(api)
    assert {a["variant"] for a in compared} == {"v1", "v2"}, "both arms compared"
    assert any(a["entities"]["user"]["found"] for a in compared)
    assert any(not a["entities"]["user"]["found"] for a in compared)
