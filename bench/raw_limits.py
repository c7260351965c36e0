"""The ceilings every figure is compared with: what one Python process gets from the local
broker and Redis, and what decoding costs, with no Flink in between."""

from __future__ import annotations

import json
import statistics
import time

import redis
from confluent_kafka import Consumer, TopicPartition

from featurestream.devstack import LocalStack
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for

RAW_TOPIC = "bench.raw"


def consume_rate(settings: Settings, topic: str, messages: int, parse: bool) -> float:
    """Messages/s one confluent-kafka consumer reads from ``topic`` (json.loads each if parse)."""
    consumer = Consumer(settings.kafka_config({"group.id": "bench-raw", "enable.auto.commit": False,
                                               "fetch.max.bytes": 52_428_800}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
    seen, started, last = 0, time.perf_counter(), time.perf_counter()
    try:
        while seen < messages:
            batch = consumer.consume(10_000, timeout=2)
            if not batch:
                break  # (tansu hides a partition's last batch: stop timing at the last message)
            for message in batch:
                if parse:
                    json.loads(message.value() or b"")  # no tombstones produced here
            seen += len(batch)
            last = time.perf_counter()
    finally:
        consumer.close()
    return seen / (last - started)


def measure_raw_limits(settings: Settings, messages: int = 200_000) -> dict[str, float]:
    """Consume-only, consume + json.loads, Avro decode, Redis pipelined HSET and single GET."""
    encoder = EventEncoder(registry_for(settings.schema_registry))
    events = [e for _, e in zip(range(messages), generate_events(StreamConfig(seed=3)),
                                strict=False)]
    with EventProducer(settings, topic=RAW_TOPIC) as producer:
        for event in events:
            producer.send(event.user_id, encoder.json(event), event.ts)
    limits = {
        "kafka_consume_per_s": consume_rate(settings, RAW_TOPIC, messages, parse=False),
        "kafka_consume_json_per_s": consume_rate(settings, RAW_TOPIC, messages, parse=True),
    }
    LocalStack(settings, echo=lambda line: None).kafka.delete_topics([RAW_TOPIC])
    decoder = EventDecoder(registry_for(settings.schema_registry))
    avro = [encoder.avro(e) for e in events[:50_000]]
    started = time.perf_counter()
    for raw in avro:
        decoder.decode(raw)
    limits["avro_decode_per_s"] = len(avro) / (time.perf_counter() - started)

    client = redis.Redis.from_url(settings.redis_url)
    started = time.perf_counter()
    for chunk in range(0, 200_000, 1_000):
        pipe = client.pipeline(transaction=False)
        for i in range(chunk, chunk + 1_000):
            pipe.hset(f"bench:raw:{i % 10_000}", mapping={"a": i, "b": i})
        pipe.execute()
    limits["redis_pipelined_hset_per_s"] = 200_000 / (time.perf_counter() - started)
    latencies = []
    for i in range(5_000):
        t0 = time.perf_counter()
        client.hgetall(f"bench:raw:{i % 10_000}")
        latencies.append((time.perf_counter() - t0) * 1e6)
    q = statistics.quantiles(latencies, n=100)
    limits["redis_get_p50_us"], limits["redis_get_p99_us"] = q[49], q[98]
    return limits
