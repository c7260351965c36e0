"""Kafka sources and sinks for the jobs, carrying record metadata as frames.

Sources emit :mod:`udfs.kafka_framing` source frames (topic, partition, offset, timestamp,
value); sinks take sink frames (topic, key, headers, value). Both use the Java framers of
``jobs/java``, which must be on the job's classpath (see :func:`jobs.environment.create_env`).
"""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaSink,
    KafkaSource,
)
from pyflink.util.java_utils import load_java_class

FRAME_TYPE = Types.PRIMITIVE_ARRAY(Types.BYTE())
_DESERIALIZER = "io.featurestream.flink.FramedRecordDeserializer"
_SERIALIZER = "io.featurestream.flink.FramedRecordSerializer"
TRANSACTION_TIMEOUT_MS = 15 * 60_000


def _new_java(class_name: str) -> object:
    """A new instance of a Java class from the job's jar (a py4j proxy)."""
    return load_java_class(class_name).newInstance()


def framed_source(bootstrap: str, topic: str, group_id: str) -> KafkaSource:
    """A KafkaSource over ``topic`` from the earliest offset, emitting source frames.

    Restarts resume from checkpointed offsets, not from the consumer group's.
    """
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_property("partition.discovery.interval.ms", "60000")
    )
    builder._j_builder.setDeserializer(_new_java(_DESERIALIZER))
    return builder.build()


def framed_sink(bootstrap: str, transactional_id_prefix: str | None = None) -> KafkaSink:
    """A KafkaSink producing sink frames to the topics they name.

    At-least-once, unless a ``transactional_id_prefix`` (unique per job) is given: then
    exactly-once, in Kafka transactions committed when a checkpoint completes (visible to
    ``read_committed`` consumers only then). The transaction timeout stays within the broker's
    default ``transaction.max.timeout.ms`` (15 min).
    """
    builder = KafkaSink.builder().set_bootstrap_servers(bootstrap)
    if transactional_id_prefix is None:
        builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    else:
        (builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
         .set_transactional_id_prefix(transactional_id_prefix)
         .set_property("transaction.timeout.ms", str(TRANSACTION_TIMEOUT_MS)))
    builder._j_builder.setRecordSerializer(_new_java(_SERIALIZER))
    return builder.build()
