"""Scoring job benchmark: sustained events/s and produce-to-score latency.

Every event type is scored here (``scored_event_types`` = all four), so each input record goes
through enrichment, ``predict`` and the sink. Throughput is measured on a preloaded backlog
(records arriving on ``scores``, between 20% and 90% of it, at-least-once delivery); latency by
producing at a fixed offered load with event time = now and reading ``scores``
(read_committed) for each event id.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from bench.feature_job import end_run, preload, steady_rate
from featurestream.cli.submit import submit_job
from featurestream.cli.train import TrainingRun, train
from featurestream.devstack import LocalStack
from featurestream.devstack.component import Echo
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import EVENT_TYPES
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec


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


def publish_model(settings: Settings) -> None:
    """A small real model (trained on generated history) in the settings' registry."""
    model_text, metadata = train(settings, TrainingRun(events=60_000, users=600, rounds=40))
    ModelRegistry(settings.effective_models_dir, settings.model_name).publish(model_text, metadata)


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
    settings = scoring_settings(stack, f"bench-score-p{parallelism}",
                                scores_delivery="at_least_once", parallelism=parallelism)
    echo(f"scoring job: preloading {events:,} events ...")
    preload(settings, events, 10_000, start_ts=int(time.time() * 1000) - 3_600_000)
    scores = TopicCounter(settings, settings.scores_topic)
    job_id = submit_job(settings, "scoring")
    try:
        rate = steady_rate(lambda: scores.count, events)
        echo(f"scoring job P={parallelism}: {rate:,.0f} events/s")
        return ScoringThroughput(parallelism, events, rate)
    finally:
        scores.close()
        end_run(settings, job_id)


def measure_scoring_latency(stack: LocalStack, delivery: str, offered_per_s: float,
                            seconds: float, echo: Echo = print) -> ScoringLatency:
    settings = scoring_settings(stack, f"lat-{delivery}", scores_delivery=delivery)
    job_id = submit_job(settings, "scoring")
    encoder = EventEncoder(registry_for(settings.schema_registry))
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
        time.sleep(10)  # job start-up
        config = StreamConfig(users=2_000, events_per_second=offered_per_s, seed=4)
        started = time.monotonic()
        with EventProducer(settings) as producer:
            for i, event in enumerate(generate_events(config)):
                if time.monotonic() - started > seconds:
                    break
                if (delay := started + i / offered_per_s - time.monotonic()) > 0:
                    time.sleep(delay)
                now = time.time()
                event = event._replace(ts=int(now * 1000))
                sent_at[event.event_id] = now
                producer.send(event.user_id, encoder.avro(event), event.ts)
        deadline = time.monotonic() + 30
        while len(latencies) < len(sent_at) * 0.99 and time.monotonic() < deadline:
            time.sleep(0.5)
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        result = ScoringLatency(delivery, offered_per_s, len(latencies), q[49], q[98])
        echo(f"scoring latency ({delivery}) at {offered_per_s:,.0f}/s: p50 {q[49]:.0f} ms, "
             f"p99 {q[98]:.0f} ms ({len(latencies)}/{len(sent_at)} scored)")
        return result
    finally:
        stop.set()
        end_run(settings, job_id)

