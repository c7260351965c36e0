"""Kafka sources and sinks for the jobs, carrying record metadata as frames.

Sources emit :mod:`udfs.wire.frames` source frames (topic, partition, offset, timestamp,
value); sinks take sink frames (topic, key, headers, value). Both use the Java framers of
``jobs/java``, which must be on the job's classpath (see :func:`jobs.environment.create_env`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaSink,
    KafkaSource,
)

from featurestream.jobs import pyflink_compat
from featurestream.jobs.environment import java_package
from featurestream.settings import Settings

FRAME_TYPE = Types.PRIMITIVE_ARRAY(Types.BYTE())
TRANSACTION_TIMEOUT_MS = 15 * 60_000


def framed_source(bootstrap: str, topics: Sequence[str], group_id: str, fetch_max_wait_ms: int,
                  properties: Mapping[str, str]) -> KafkaSource:
    """A KafkaSource over ``topics`` from the earliest offset, emitting source frames.

    Restarts resume from checkpointed offsets, not from the consumer group's. A fetch waits at
    most ``fetch_max_wait_ms`` for data (brokers that answer only when it ends bound latency).
    ``properties`` (``settings.kafka_java_properties``: SASL, SSL...) are set last.
    """
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(*topics)
        .set_group_id(group_id)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_property("partition.discovery.interval.ms", "60000")
        .set_property("fetch.max.wait.ms", str(fetch_max_wait_ms))
    )
    for key, value in properties.items():
        builder.set_property(key, value)
    pyflink_compat.java_builder(builder).setDeserializer(java_package().FramedRecordDeserializer())
    return builder.build()


def framed_sink(bootstrap: str, properties: Mapping[str, str],
                transactional_id_prefix: str | None = None) -> KafkaSink:
    """A KafkaSink producing sink frames to the topics they name.

    At-least-once, unless a ``transactional_id_prefix`` (unique per job) is given: then
    exactly-once, in Kafka transactions committed when a checkpoint completes (visible to
    ``read_committed`` consumers only then). The transaction timeout stays within the broker's
    default ``transaction.max.timeout.ms`` (15 min). Records wait up to 5 ms to share a batch:
    far fewer produce requests for the broker at a high rate, for a few ms of latency.
    ``properties`` (``settings.kafka_java_properties``: SASL, SSL...) are set last.
    """
    builder = (KafkaSink.builder().set_bootstrap_servers(bootstrap)
               .set_property("linger.ms", "5").set_property("batch.size", str(256 * 1024)))
    if transactional_id_prefix is None:
        builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    else:
        (builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
         .set_transactional_id_prefix(transactional_id_prefix)
         .set_property("transaction.timeout.ms", str(TRANSACTION_TIMEOUT_MS)))
    for key, value in properties.items():
        builder.set_property(key, value)
    pyflink_compat.java_builder(builder).setRecordSerializer(
        java_package().FramedRecordSerializer())
    return builder.build()


def batched(frames: DataStream, max_records: int, linger_ms: int) -> DataStream:
    """``frames`` packed into batches by ``FrameBatcher`` (chained to the source: the Python
    operator after it is called once per batch; see :func:`udfs.wire.frames.split_batch`)."""
    return pyflink_compat.java_operator(frames, "batch frames", FRAME_TYPE,
                                        java_package().FrameBatcher(max_records, linger_ms))


def events_frames(env: StreamExecutionEnvironment, settings: Settings, group_id: str,
                  uid: str, topics: Sequence[str] | None = None) -> DataStream:
    """The events topics (default: the events topic) as source frames, for a job's ``main()``
    (``uid`` names the source's offsets in checkpoints and savepoints: keep it stable; a
    ``source_epoch`` other than 0 renames it, so a resumed job restores no offsets)."""
    source = framed_source(settings.kafka_bootstrap, topics or [settings.events_topic], group_id,
                           settings.kafka_fetch_max_wait_ms, settings.kafka_java_properties)
    return env.from_source(source, WatermarkStrategy.no_watermarks(), "events",
                           type_info=FRAME_TYPE).uid(source_uid(uid, settings.source_epoch))


def source_uid(uid: str, epoch: int) -> str:
    """The uid of a Kafka source in ``epoch`` (0: ``uid`` itself, what older savepoints hold)."""
    return uid if epoch == 0 else f"{uid}-epoch-{epoch}"
