"""Scoring job benchmark: sustained events/s and produce-to-score latency.

Every event type is scored here (``scored_event_types`` = all four), so each input record goes
through its captured row, ``predict`` and the sink. The scoring job scores from the rows the
feature job captured for each event (:mod:`udfs.features.point_in_time`); to measure the
scoring job alone, the feature job is "far ahead": :class:`CapturesAhead` computes each event's
rows with the feature job's own engine (:class:`udfs.offline.replay.Replay`) and writes them
with its writer (pipelined ``SET NX``) before the event is produced.

Throughput is measured on a preloaded backlog (records arriving on ``scores``, between 20% and
90% of it, at-least-once delivery); latency by producing at a fixed offered load with event
time = now and reading ``scores`` (read_committed) for each event id -- with the captures
written ahead, or with the feature job running beside the scoring job (what a deployment runs:
the latency then includes the feature job's capture and the scoring job's wait for it).
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition

from bench.feature_job import end_run, steady_rate
from featurestream.cli.submit import submit_job
from featurestream.cli.train import TrainingRun, train
from featurestream.devstack import LocalStack
from featurestream.devstack.component import Echo
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated, private_stack
from featurestream.flink_rest import FlinkRest
from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import EVENT_TYPES, Event
from featurestream.udfs.contract.records import decoder_for
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.features.point_in_time import scored_events
from featurestream.udfs.offline.replay import Replay
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec
from featurestream.udfs.wire.frames import encode_source_frame

BATCH = 10_000  # events per preload batch (one Replay feed, one pipelined write)


@dataclass
class ScoringThroughput:
    parallelism: int
    events: int
    events_per_s: float


@dataclass
class ScoringLatency:
    delivery: str
    offered_per_s: float
    scored: int
    p50_ms: float
    p99_ms: float
    features_beside: bool = False  # the feature job ran beside (else: captures written ahead)


def publish_model(settings: Settings) -> None:
    """A small real model (trained on generated history) in the settings' registry."""
    model_text, metadata = train(settings, TrainingRun(events=60_000, users=600, rounds=40))
    ModelRegistry(settings.effective_models_dir, settings.model_name).publish(model_text, metadata)


class CapturesAhead:
    """The feature job far ahead: the rows it captures for each scored event, computed by its
    own engine over the events in the order they are produced, written to Redis by its writer."""

    def __init__(self, settings: Settings) -> None:
        definitions = settings.load_definitions()
        registry = registry_for(settings.schema_registry)
        scored = scored_events(definitions, settings.scored_event_types)
        if scored is None:
            raise ValueError("the definitions read no source of the built-in events")
        self._topic = next(s.topic for s in definitions.sources if s.name == scored.source)
        self._replay = Replay(
            definitions, {s.name: decoder_for(s, registry) for s in definitions.sources},
            scored, out_of_orderness_ms=settings.max_out_of_orderness_ms,
            allowed_lateness_ms=settings.effective_allowed_lateness_ms(definitions))
        self._writer = RedisRowWriter(RedisTarget.from_settings(settings))
        self._offset = 0
        self.rows = 0  # captured rows written

    def capture(self, events: Sequence[tuple[Event, bytes]]) -> None:
        """Capture and write the rows of ``events`` (each with its encoded value), in order."""
        frames = [encode_source_frame(self._topic, 0, self._offset + i, event.ts, value)
                  for i, (event, value) in enumerate(events)]
        self._offset += len(frames)
        for captured in self._replay.feed(frames).captured:
            self._writer.add_captured(captured)
            self.rows += 1
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def encoded(settings: Settings, events: Iterator[Event]) -> Iterator[list[tuple[Event, bytes]]]:
    """``events`` in batches of :data:`BATCH`, each with its Avro value."""
    encoder = EventEncoder(registry_for(settings.schema_registry))
    while batch := list(itertools.islice(events, BATCH)):
        yield [(event, encoder.avro(event)) for event in batch]


def preload_with_captures(settings: Settings, events: int, users: int, start_ts: int) -> int:
    """Produce ``events`` generated events (as the feature bench's backlog), each after its
    captured rows are in Redis; returns how many rows were captured."""
    config = StreamConfig(users=users, events_per_second=1000.0, start_ts=start_ts, seed=5,
                          user_skew=0.9)
    ahead = CapturesAhead(settings)
    try:
        with EventProducer(settings) as producer:
            for batch in encoded(settings, itertools.islice(generate_events(config), events)):
                ahead.capture(batch)
                for event, value in batch:
                    producer.send(event.user_id, value, event.ts)
    finally:
        ahead.close()
    return ahead.rows


def delete_keys(settings: Settings) -> None:
    """Delete the run's Redis keys (its prefix): hundreds of MB of captured rows otherwise."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = client.scan_iter(match=f"{settings.redis_key_prefix}*", count=10_000)
    while chunk := list(itertools.islice(keys, 10_000)):
        client.unlink(*chunk)
    client.close()


def wait_running(settings: Settings, job_ids: Sequence[str], timeout_s: float = 120) -> None:
    """Wait until every vertex of the jobs runs (their sources read from then on)."""
    rest = FlinkRest(settings.flink_rest_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(v["status"] == "RUNNING" for job in job_ids for v in rest.job(job)["vertices"]):
            return
        time.sleep(1.0)
    raise RuntimeError(f"jobs {', '.join(job_ids)} not running after {timeout_s:.0f} s")


class TopicCounter:
    """Counts the records arriving on a topic, in a background consumer."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._consumer = Consumer(settings.kafka_config({"group.id": "bench-count",
                                                         "enable.auto.commit": False}))
        self._consumer.assign([TopicPartition(topic, p, 0)
                               for p in range(settings.topic_partitions)])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count += len(self._consumer.consume(10_000, timeout=0.2))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def scoring_settings(stack: LocalStack, name: str, **changes: object) -> Settings:
    return isolated(stack, name, scored_event_types=EVENT_TYPES, **changes)


def measure_scoring_throughput(stack: LocalStack, events: int, parallelism: int = 1,
                               echo: Echo = print) -> ScoringThroughput:
    """Events/s of the scoring job alone on a backlog whose rows are all captured."""
    settings = scoring_settings(stack, f"bench-score-p{parallelism}",
                                scores_delivery="at_least_once", parallelism=parallelism)
    echo(f"scoring job: preloading {events:,} events and their captured rows ...")
    preload_with_captures(settings, events, 10_000, start_ts=int(time.time() * 1000) - 3_600_000)
    scores = TopicCounter(settings, settings.scores_topic)
    job_id = submit_job(settings, "scoring")
    try:
        rate = steady_rate(lambda: scores.count, events)
        echo(f"scoring job P={parallelism}: {rate:,.0f} events/s")
        return ScoringThroughput(parallelism, events, rate)
    finally:
        scores.close()
        end_run(settings, job_id)
        delete_keys(settings)


def measure_scoring_latency(stack: LocalStack, delivery: str, offered_per_s: float,
                            seconds: float, features_beside: bool = False,
                            echo: Echo = print) -> ScoringLatency:
    """Produce-to-score p50/p99 at ``offered_per_s``: with the captures written ahead, or with
    the feature job beside (``features_beside``)."""
    name = f"lat-{delivery}" + ("-features" if features_beside else "")
    settings = scoring_settings(stack, name, scores_delivery=delivery)
    job_ids = [submit_job(settings, "scoring")]
    if features_beside:
        job_ids.append(submit_job(settings, "features"))
    codec = ScoreCodec(registry_for(settings.schema_registry), f"{settings.scores_topic}-value")
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    stop = threading.Event()

    def read_scores() -> None:
        consumer = Consumer(settings.kafka_config({"group.id": "bench-latency",
                                                   "isolation.level": "read_committed"}))
        consumer.assign([TopicPartition(settings.scores_topic, p, 0)
                         for p in range(settings.topic_partitions)])
        while not stop.is_set():
            for message in consumer.consume(1_000, timeout=0.2):
                value = message.value()
                if message.error() is None and value is not None:
                    event_id = codec.decode(value)["event_id"]
                    if event_id in sent_at:
                        latencies.append((time.time() - sent_at[event_id]) * 1000)
        consumer.close()

    reader = threading.Thread(target=read_scores, daemon=True)
    reader.start()
    try:
        wait_running(settings, job_ids)
        # Event time = when the event is sent; the rows ahead are computed for those times.
        start_ms = int(time.time() * 1000) + 5_000
        config = StreamConfig(users=2_000, events_per_second=offered_per_s, seed=4)
        planned = [event._replace(ts=start_ms + int(i * 1000 / offered_per_s))
                   for i, event in enumerate(itertools.islice(generate_events(config),
                                                              int(seconds * offered_per_s)))]
        batches = list(encoded(settings, iter(planned)))
        if not features_beside:
            ahead = CapturesAhead(settings)
            for batch in batches:
                ahead.capture(batch)
            ahead.close()
        with EventProducer(settings) as producer:
            for event, value in itertools.chain.from_iterable(batches):
                if (delay := event.ts / 1000 - time.time()) > 0:
                    time.sleep(delay)
                sent_at[event.event_id] = time.time()
                producer.send(event.user_id, value, event.ts)
        deadline = time.monotonic() + 30  # every score, or the tail would be cut off
        while len(latencies) < len(sent_at) and time.monotonic() < deadline:
            time.sleep(0.5)
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        result = ScoringLatency(delivery, offered_per_s, len(latencies), q[49], q[98],
                                features_beside)
        beside = "feature job beside" if features_beside else "rows captured ahead"
        echo(f"scoring latency ({delivery}, {beside}) at {offered_per_s:,.0f}/s: p50 "
             f"{q[49]:.0f} ms, p99 {q[98]:.0f} ms ({len(latencies)}/{len(sent_at)} scored)")
        return result
    finally:
        stop.set()
        for job_id in job_ids[1:]:
            FlinkRest(settings.flink_rest_url).cancel(job_id)
        end_run(settings, job_ids[0])
        delete_keys(settings)


LATENCY_RATE, LATENCY_SECONDS = 2_000, 20
WARM_UP_EVENTS = 100_000


def run_scoring(stack: LocalStack, events: int, echo: Echo = print) -> dict[str, Any]:
    """The scoring section on a running stack: a model, throughput at P=1 and P=2 (rows
    captured ahead), and produce-to-score latency at 2k/s for both deliveries, with the rows
    captured ahead and with the feature job beside."""
    publish_model(stack.settings)
    return {
        "scoring_throughput": [dataclasses.asdict(measure_scoring_throughput(stack, events, p,
                                                                             echo))
                               for p in (1, 2)],
        "scoring_latency": [
            dataclasses.asdict(measure_scoring_latency(stack, delivery, LATENCY_RATE,
                                                       LATENCY_SECONDS, beside, echo))
            for beside in (False, True) for delivery in ("exactly_once", "at_least_once")],
    }


def scoring_section(events: int, echo: Echo = print) -> dict[str, Any]:
    """``python -m bench scoring``: :func:`run_scoring` on a private stack of its own, after an
    unreported warm-up run (a fresh TaskManager JVM runs the first job's code cold)."""
    echo("bench: starting a private stack ...")
    with private_stack(echo=lambda line: None) as stack:
        publish_model(stack.settings)
        measure_scoring_throughput(stack, WARM_UP_EVENTS, 1, echo=lambda line: None)
        return run_scoring(stack, events, echo)


def scoring_rows(report: Mapping[str, Any], consume: float | None
                 ) -> Iterator[tuple[str, str, str]]:
    """The table's rows of the scoring section: what, figure, ceiling / target."""
    for s in report["scoring_throughput"]:
        share = f"{s['events_per_s'] / consume:.0%} of consume; " if consume else ""
        yield (f"scoring job, parallelism {s['parallelism']} (every event scored)",
               f"{s['events_per_s']:,.0f}/s", f"{share}target 20,000")
    for lat in report["scoring_latency"]:
        beside = "feature job beside" if lat.get("features_beside") else "rows captured ahead"
        yield (f"produce-to-score at {lat['offered_per_s']:,.0f}/s, {lat['delivery']}, {beside}, "
               "p50/p99", f"{lat['p50_ms']:.0f}/{lat['p99_ms']:.0f} ms", "target p99 < 1,000 ms")
