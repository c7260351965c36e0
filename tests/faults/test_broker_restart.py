"""The broker restarted under both jobs (issue 13, scenario 5). tansu, the local broker, keeps
nothing: killed and started again it has no topics (``stack.up()`` creates the stack's; a
client's metadata request creates any other with tansu's default of 4 partitions) and every
partition's offsets start at 0 again. Unlike Apache Kafka, it answers a fetch beyond a
partition's end with no records instead of ``OFFSET_OUT_OF_RANGE``, so a consumer that kept its
old position would skip, silently, every event written below it. ``featurestream up`` knows it
started a new, empty broker: it stops each running job with a savepoint and resumes it in a new
source epoch (docs/reliability.md, "The broker restarted"), windows kept, every partition read
from its earliest offset.

What is checked: ``stack.up()`` alone resumes both jobs (new job ids, RUNNING, one new source
epoch each); the feature rows equal the oracle over ALL the events (the first ones counted
before the restart, restored from the savepoint's windows, the later ones read from the new
log: none skipped, none twice); every purchase written after the restart is scored. More
events come after the restart than before, so each partition's new log outgrows the position
the old jobs had reached: the events below it are the ones a kept position would skip."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import redis

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack, submissions
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.private import isolated
from featurestream.flink_rest import FlinkRest
from featurestream.jobs import JOB_NAMES
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.store.redis_layout import decode_row, user_key
from testing import model_fixtures
from testing.chaos import ChaosRow
from tests.faults.test_flink_failures import RowCheck, running_everywhere
from tests.integration.conftest import (
    cancel_job,
    flink_get,
    job_diagnostics,
    job_exceptions,
    read_topic,
    wait_for,
)
from tests.integration.test_feature_job import encoded, produce, wait_until_stable
from tests.integration.test_scoring_job import Topics

pytestmark = pytest.mark.flink

BEFORE, AFTER = 300, 600  # events: after the restart, twice as many, so each partition's new
PARTITIONS = 4  # log outgrows the position its consumers had; tansu's default partitions


def by_user(events: list[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.user_id].append(event)
    return grouped


def caught_up(settings: Settings, grouped: dict[str, list[Event]]) -> Callable[[], bool]:
    """True once every user's row is as of its newest event (the rows before the restart are
    stable too, so stability alone does not say the resumed job has counted anything)."""
    client = redis.Redis.from_url(settings.redis_url)

    def check() -> bool:
        for user_id, events in grouped.items():
            row = client.hgetall(user_key(settings.redis_key_prefix, user_id))
            as_of = decode_row(row).get("as_of") if row else None
            if not isinstance(as_of, int) or as_of < max(e.ts for e in events):
                return False
        return True

    return check


def epoch_of(settings: Settings, job_id: str) -> int:
    """The source epoch ``job_id`` was submitted in, as recorded for ``featurestream up``."""
    recorded = {s.job_id: s for s in submissions.submissions(settings.home)}
    return int(recorded[job_id].env.get("FEATURESTREAM_SOURCE_EPOCH", "0"))


def test_up_resumes_the_jobs_from_the_new_broker_and_nothing_is_skipped(
        stack: LocalStack, tmp_path: Path, chaos: Callable[[ChaosRow], None]) -> None:
    settings = isolated(stack, "broker", topic_partitions=PARTITIONS).replace(
        models_dir=str(tmp_path / "models"), model_name=model_fixtures.NAME)
    model_fixtures.publish(settings.effective_models_dir, 1)
    rest = FlinkRest(settings.flink_rest_url)
    config = StreamConfig(users=20, items=50, events_per_second=10.0, seed=51,
                          start_ts=int(time.time() * 1000) - 150_000)
    events = list(itertools.islice(generate_events(config), BEFORE + AFTER))
    encoder = EventEncoder(registry_for(settings.schema_registry))
    after_records = encoded(encoder, events[BEFORE:])
    after = dict(zip((v for _, v, _ in after_records), events[BEFORE:], strict=True))
    jobs = [submit_job(settings, "features")]
    try:
        jobs.append(submit_job(settings, "scoring"))

        def diagnostics() -> str:
            return "\n".join(job_diagnostics(settings, job) for job in jobs)

        produce(settings, encoded(encoder, events[:BEFORE]))
        wait_until_stable(settings, sorted(by_user(events[:BEFORE])), lambda: True, diagnostics,
                          timeout_s=90)
        # each partition's end: the position the jobs reached, past the start of the new log
        kept: defaultdict[int, int] = defaultdict(int)
        for message in read_topic(settings, settings.events_topic, PARTITIONS):
            kept[message.partition()] = max(kept[message.partition()], message.offset() + 1)

        pid = stack.kafka.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not stack.kafka.running(), 10, "the broker gone")
        time.sleep(3)  # the outage: the jobs' clients retry against a closed port
        restarted = time.monotonic()
        stack.up()  # tansu again, empty; the jobs resumed with their source positions reset
        running = rest.running_jobs()
        resumed = [running[JOB_NAMES["features"]], running[JOB_NAMES["scoring"]]]
        assert not set(resumed) & set(jobs), f"up resumed no job: {running}"
        old, jobs = jobs, resumed
        for job in jobs:
            wait_for(partial(running_everywhere, rest, job), 60, f"job {job} running",
                     diagnostics)
        epochs = [epoch_of(settings, job) for job in jobs]
        assert all(epoch > 0 for epoch in epochs), epochs
        isolated(stack, "broker", topic_partitions=PARTITIONS)  # unless a client made them
        produce(settings, after_records)

        below = sum(1 for m in read_topic(settings, settings.events_topic, PARTITIONS)
                    if m.value() in after and m.offset() < kept[m.partition()])
        assert below, kept  # the events a kept position would have skipped
        expected = by_user(events)
        rows = wait_until_stable(settings, sorted(expected), caught_up(settings, expected),
                                 diagnostics, timeout_s=120)
        recovery = time.monotonic() - restarted
        check = RowCheck.of(rows, expected)

        purchases = {e.event_id for e in after.values() if e.event_type == "purchase"}
        topics = Topics(settings)
        wait_for(topics.settled(len(purchases), 0), 90, "the scores of the later purchases",
                 diagnostics)
        scored = {s["event_id"] for s in topics.scores}
        failures = [len(job_exceptions(settings, job)) for job in jobs]
        print(f"broker restart: jobs {old} resumed by `up` as {jobs} in source epochs "
              f"{epochs}; positions the old jobs had {dict(kept)}; {below} of {AFTER} later "
              f"events below them, all counted; {len(scored)} scored for {len(purchases)} "
              f"later purchases; failures since {failures}")
        chaos(ChaosRow(
            "broker (tansu) killed, restarted empty", BEFORE + AFTER, len(rows) + len(purchases),
            len(check.wrong), check.lost + len(purchases - scored),
            check.duplicated + len(topics.scores) - len(scored), recovery,
            f"`up` resumed both jobs from savepoints in a new source epoch; rows = oracle over "
            f"all events (the {BEFORE} before from the restored windows, the {below} later "
            f"ones below the old positions counted too); every later purchase scored"))
        assert not check.wrong and not check.lost and not check.duplicated, check
        assert purchases <= scored, f"{len(purchases - scored)} later purchases not scored"
        assert scored <= {e.event_id for e in after.values()}
        assert len(topics.scores) == len(scored), "a purchase scored twice"
        for job in jobs:
            assert flink_get(settings, f"/jobs/{job}")["state"] == "RUNNING", diagnostics()
    finally:  # and whatever `up` resumed, had the test stopped before taking their ids
        for job in dict.fromkeys([*reversed(jobs), *rest.running_jobs().values()]):
            cancel_job(settings, job)
