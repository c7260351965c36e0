"""The broker restarted under both jobs (issue 13, scenario 5). tansu, the local broker, keeps
nothing: killed and started again it has no topics (``stack.up()`` creates the stack's; a
client's metadata request creates any other with tansu's default of 4 partitions) and every
partition's offsets start at 0 again. Unlike Apache Kafka, it answers a fetch beyond a
partition's end with no records instead of ``OFFSET_OUT_OF_RANGE``, so a consumer keeps its old
position and never resets: the jobs reconnect on their own and keep running, and count every
event written after the restart at an offset at or past the position they had reached; the
ones below it are skipped, silently (docs/reliability.md, "What the local broker loses, and
what Apache Kafka does").

What is checked: both jobs stay RUNNING without a manual step; each partition's positions are
measured from the topic itself (the events before the restart, all counted and checkpointed
first); the feature rows equal the oracle over the events before the restart plus exactly the
events after it at or past those positions; the scoring job scores those purchases. The topics
have 4 partitions, tansu's default, so the partitions a reconnecting client creates are the
ones the test made."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from testing import model_fixtures
from testing.chaos import ChaosRow
from tests.integration.conftest import (
    cancel_job,
    flink_get,
    job_diagnostics,
    job_exceptions,
    read_topic,
    wait_for,
)
from tests.integration.test_feature_job import (
    assert_rows_equal_oracle,
    encoded,
    produce,
    wait_until_stable,
)
from tests.integration.test_scoring_job import Topics

pytestmark = pytest.mark.flink

BEFORE, AFTER = 300, 600  # events: after the restart, twice as many, so each partition's new
PARTITIONS = 4  # log outgrows the position its consumers kept; tansu's default partitions


def by_user(events: list[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.user_id].append(event)
    return grouped


def positions(settings: Settings, records: dict[bytes, Event]) -> list[tuple[int, int, Event]]:
    """(partition, offset, event) of each of ``records`` (by value) now in the events topic."""
    return [(m.partition(), m.offset(), records[m.value()])
            for m in read_topic(settings, settings.events_topic, PARTITIONS)
            if m.value() in records]


def test_jobs_count_the_events_after_a_broker_restart(
        stack: LocalStack, tmp_path: Path, chaos: Callable[[ChaosRow], None]) -> None:
    settings = isolated(stack, "broker", topic_partitions=PARTITIONS).replace(
        models_dir=str(tmp_path / "models"), model_name=model_fixtures.NAME)
    model_fixtures.publish(settings.effective_models_dir, 1)
    config = StreamConfig(users=20, items=50, events_per_second=10.0, seed=51,
                          start_ts=int(time.time() * 1000) - 150_000)
    events = list(itertools.islice(generate_events(config), BEFORE + AFTER))
    encoder = EventEncoder(registry_for(settings.schema_registry))
    before = dict(zip((v for _, v, _ in encoded(encoder, events[:BEFORE])), events[:BEFORE],
                      strict=True))
    after_records = encoded(encoder, events[BEFORE:])
    after = dict(zip((v for _, v, _ in after_records), events[BEFORE:], strict=True))
    jobs = [submit_job(settings, "features")]
    try:
        jobs.append(submit_job(settings, "scoring"))
        features = jobs[0]

        def diagnostics() -> str:
            return "\n".join(job_diagnostics(settings, job) for job in jobs)

        produce(settings, encoded(encoder, events[:BEFORE]))
        wait_until_stable(settings, sorted(by_user(events[:BEFORE])), lambda: True, diagnostics,
                          timeout_s=90)
        # each partition's end: the position its consumers reach and keep
        kept: defaultdict[int, int] = defaultdict(int)
        for partition, offset, _ in positions(settings, before):
            kept[partition] = max(kept[partition], offset + 1)

        def checkpoints() -> int:
            return flink_get(settings, f"/jobs/{features}/checkpoints")["counts"]["completed"]

        seen = checkpoints()  # counted and checkpointed: a restart of the job loses nothing
        wait_for(lambda: checkpoints() > seen, 30, "a checkpoint after the first events",
                 diagnostics)

        pid = stack.kafka.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not stack.kafka.running(), 10, "the broker gone")
        time.sleep(3)  # the outage: the jobs' clients retry against a closed port
        stack.up()  # tansu again, empty
        restarted = time.monotonic()
        isolated(stack, "broker", topic_partitions=PARTITIONS)  # unless a client made them
        produce(settings, after_records)

        landed = positions(settings, after)
        assert {p for p, _, _ in landed} <= set(range(PARTITIONS))
        counted = [e for p, offset, e in landed if offset >= kept[p]]
        skipped = len(after) - len(counted)
        assert counted and skipped, (kept, len(counted))  # the test measures both cases
        expected = by_user([*before.values(), *counted])
        rows = wait_until_stable(settings, sorted(expected), lambda: True, diagnostics,
                                 timeout_s=120)
        recovery = time.monotonic() - restarted
        assert_rows_equal_oracle(rows, expected)
        for job in jobs:
            assert flink_get(settings, f"/jobs/{job}")["state"] == "RUNNING", diagnostics()

        purchases = {e.event_id for e in counted if e.event_type == "purchase"}
        topics = Topics(settings)
        wait_for(topics.settled(len(purchases), 0), 90, "the scores of the counted purchases",
                 diagnostics)
        scored = {s["event_id"] for s in topics.scores}
        assert purchases <= scored, f"{len(purchases - scored)} counted purchases not scored"
        assert scored <= {e.event_id for e in after.values()}
        restarts = [len(job_exceptions(settings, job)) for job in jobs]
        print(f"broker restart: positions kept {dict(kept)}; {len(counted)} of {AFTER} later "
              f"events counted, {skipped} skipped; job failures {restarts}; "
              f"{len(scored)} scored for {len(purchases)} counted purchases")
        chaos(ChaosRow(
            "broker (tansu) killed, restarted empty", BEFORE + AFTER, len(rows), 0, skipped,
            len(topics.scores) - len(scored), recovery,
            f"both jobs RUNNING, no manual step (failures {restarts}); rows = oracle over the "
            f"events before and the {len(counted)} after at or past the kept positions; "
            f"lost: the {skipped} below them (tansu answers no out-of-range)"))
    finally:
        for job in reversed(jobs):
            cancel_job(settings, job)
