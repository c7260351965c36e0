"""Point in time on the real stack: a backlog replayed as fast as the stack goes (the producer far
ahead of both jobs) is scored with each event's features as of the event, whatever either job's
progress; a TaskManager killed mid-stream changes no score; ``featurestream verify`` finds every
recorded vector and every Redis row equal to the offline replay of the topic; ``featurestream
backfill --online-store`` rebuilds exactly the rows the live job wrote; and a second scoring job
over the same topic gives bit-identical scores."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import redis

from featurestream.cli.submit import submit_job
from featurestream.cli.train import TrainingRun, train
from featurestream.devstack import LocalStack
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec
from featurestream.udfs.store.redis_layout import decode_row
from testing.processes import kill
from tests.integration.conftest import cancel_job, job_diagnostics, read_topic, wait_for

pytestmark = pytest.mark.flink

REPO = Path(__file__).resolve().parents[2]
FEATURESTREAM = REPO / ".venv" / "bin" / "featurestream"


def scores_of(settings: Settings) -> dict[str, list[dict]]:
    """The committed scores of the settings' scores topic, by event id (repeats kept)."""
    codec = ScoreCodec(registry_for(settings.schema_registry), f"{settings.scores_topic}-value")
    by_event: dict[str, list[dict]] = defaultdict(list)
    for message in read_topic(settings, settings.scores_topic, settings.topic_partitions):
        score = codec.decode(message.value())
        by_event[score["event_id"]].append(score)
    return by_event


def featurestream(settings: Settings, tmp_path: Path, *args: str
                  ) -> subprocess.CompletedProcess[str]:
    """The CLI with exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTREAM_")}
    return subprocess.run([str(FEATURESTREAM), *args], cwd=tmp_path,
                          env={**env, **settings.to_env()}, capture_output=True, text=True,
                          timeout=300, check=False)


def verify(settings: Settings, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return featurestream(settings, tmp_path, "verify", "--dead-letters",
                         str(tmp_path / "dead.jsonl"))


def rows_of(settings: Settings) -> dict[str, dict]:
    """Every user row under the settings' prefix, without the write's wall-clock time."""
    client = redis.Redis.from_url(settings.redis_url)
    prefix = f"{settings.redis_key_prefix}user:"
    rows = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1_000):
        row = decode_row(client.hgetall(key))
        row.pop("updated_at", None)
        rows[key.decode()[len(prefix):]] = row
    client.close()
    return rows


def test_backlog_scores_are_point_in_time_and_identical_after_a_kill_and_a_rerun(
        stack: LocalStack, tmp_path: Path) -> None:
    # At least once, with no scoring checkpoint before the kill: every score written before it
    # is written again after it, from the same captures.
    settings = isolated(stack, "pit", scores_delivery="at_least_once",
                        scoring_checkpoint_interval_ms=600_000, checkpoint_interval_ms=2_000,
                        models_dir=str(tmp_path / "models"))  # a registry of its own
    model_text, metadata = train(settings, TrainingRun(events=80_000, users=800, rounds=30))
    ModelRegistry(settings.effective_models_dir, settings.model_name).publish(model_text,
                                                                             metadata)
    config = StreamConfig(users=300, items=500, events_per_second=20.0, seed=41)
    events = list(itertools.islice(generate_events(config), 20_000))
    purchases = {e.event_id for e in events if e.event_type == "purchase"}
    assert len(purchases) > 300
    encoder = EventEncoder(registry_for(settings.schema_registry))
    with EventProducer(settings) as producer:  # the whole backlog before either job starts
        for event in events:
            producer.send(event.user_id, encoder.avro(event), event.ts)
    assert producer.failed == 0

    features = submit_job(settings, "features")
    scoring = submit_job(settings, "scoring")
    rerun = None
    try:
        def diagnostics() -> str:
            return job_diagnostics(settings, features) + job_diagnostics(settings, scoring)

        wait_for(lambda: len(scores_of(settings)) >= len(purchases) // 4, 240,
                 "the first scores", diagnostics)
        killed = stack.flink.taskmanager_pid()
        assert killed is not None
        kill(killed)  # both jobs' tasks die mid-stream
        stack.flink.start(lambda line: None)
        before_kill = sum(map(len, scores_of(settings).values()))
        # no scoring checkpoint yet: the restarted job scores the topic again from its start
        wait_for(lambda: sum(map(len, scores_of(settings).values())) >= before_kill
                 + len(purchases), 420, "every purchase scored again after the restart",
                 diagnostics)
        first = scores_of(settings)
        assert set(first) == purchases, "only purchases are scored"
        for event_id, repeats in first.items():  # replayed after the kill (at least once)
            assert all((s["score"], s["features"], s["as_of"]) == (
                repeats[0]["score"], repeats[0]["features"], repeats[0]["as_of"])
                for s in repeats), event_id
        replayed = sum(len(r) - 1 for r in first.values())
        assert replayed >= before_kill, "what was scored before the kill was scored again"
        assert not read_topic(settings, settings.scores_dlq_topic, settings.topic_partitions)

        done = verify(settings, tmp_path)
        print(done.stdout, done.stderr)
        assert done.returncode == 0, done.stdout + done.stderr
        exact = re.search(r"^scores: ([\d,]+) compared, 0 differ$", done.stdout, re.M)
        late = re.search(r"late scored events \(may differ\): ([\d,]+) compared", done.stdout)
        assert exact, done.stdout
        counted = [int(m.group(1).replace(",", "")) for m in (exact, late) if m]
        assert sum(counted) == sum(map(len, first.values())), "every score was compared"
        assert counted[0] >= 0.99 * sum(counted), "late captures are the exception"
        rows = re.search(r"^rows: ([\d,]+) compared, 0 differ$", done.stdout, re.M)
        assert rows and int(rows.group(1).replace(",", "")) >= 250, done.stdout

        # Where the live job's event time ends depends on which partitions it read since its
        # last restart; a last event of every user (so of every partition), at the newest
        # time, ends it where the replay ends.
        newest = max(e.ts for e in events)
        with EventProducer(settings) as producer:
            for user in sorted({e.user_id for e in events}):
                last = Event(f"last-{user}", user, "view", None, None, newest, None)
                producer.send(user, encoder.avro(last), newest)
        rebuilt = settings.replace(redis_key_prefix="pit-rebuilt:")
        done = featurestream(rebuilt, tmp_path, "backfill", f"kafka:{settings.events_topic}",
                             "--online-store", "--dead-letters", str(tmp_path / "bf.jsonl"))
        assert done.returncode == 0, done.stdout + done.stderr
        expected = rows_of(rebuilt)
        assert len(expected) >= 250
        # the live job's event time catches up within its start-up hold and a checkpoint
        wait_for(lambda: rows_of(settings) == expected, 120,
                 "the live job's rows to be the backfill's online store", diagnostics)

        cancel_job(settings, scoring)  # its slot, for the re-run (the captures stay in Redis)
        scoring = ""
        again = settings.replace(scores_topic="pit.scores.rerun", scoring_group="pit-rerun")
        LocalStack(again, echo=lambda line: None).kafka.ensure_topics(lambda line: None)
        rerun = submit_job(again, "scoring")
        wait_for(lambda: set(scores_of(again)) >= purchases, 300, "the re-run's scores",
                 lambda: job_diagnostics(again, rerun or ""))
        second = scores_of(again)
        for event_id in purchases:
            a, b = first[event_id][0], second[event_id][0]
            assert (a["score"], a["features"], a["as_of"], a["version"]) == (
                b["score"], b["features"], b["as_of"], b["version"]), event_id
        print(f"{len(purchases):,} purchases scored point in time; {replayed} replayed after "
              "the TaskManager kill, all identical; a re-run gave bit-identical scores")
    finally:
        for job in (scoring, features, rerun):
            if job:
                cancel_job(settings, job)
