"""The feature job: Kafka events -> batches -> decode and shard -> event time -> per-shard
user windows -> Redis.

Submit with ``featurestream submit features`` (``flink run -py jobs/features_job.py``).
Undecodable, late and expired events go to the events DLQ topic with the reason.
"""

from __future__ import annotations

from featurestream.jobs.environment import create_env
from featurestream.jobs.features.functions import (
    DLQ,
    SHARD_RECORD_TYPE,
    MaterializeFeatures,
    NewestEventTime,
    ShardEvents,
)
from featurestream.jobs.kafka_io import FRAME_TYPE, batched, framed_sink, framed_source, shard_keys
from featurestream.udfs.features.definitions import default_features
from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.datastream import DataStream
from pyflink.datastream.connectors import Sink

from featurestream.settings import Settings

JOB_NAME = "featurestream-features"


def build_feature_job(frames: DataStream, dlq_sink: Sink, settings: Settings) -> None:
    """Wire the feature job onto ``frames`` (Kafka source frames) and ``dlq_sink``.

    Tests drive the same graph from a collection of frames.
    """
    sharded = batched(frames, settings.source_batch_size, settings.source_batch_linger_ms).process(
        ShardEvents(settings.schema_registry, settings.events_dlq_topic,
                    shard_keys(settings.state_shards, settings.max_parallelism)),
        output_type=SHARD_RECORD_TYPE,
    ).name("decode and shard events").uid("shard-events")
    watermarks = (
        WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_millis(settings.max_out_of_orderness_ms))
        .with_idleness(Duration.of_millis(settings.source_idleness_ms))
        .with_timestamp_assigner(NewestEventTime())
    )
    features = (
        sharded.assign_timestamps_and_watermarks(watermarks)
        .key_by(lambda record: record[0], key_type=Types.INT())
        .process(
            MaterializeFeatures(
                features=default_features(settings.windows),
                allowed_lateness_ms=settings.effective_allowed_lateness_ms,
                shards=settings.state_shards,
                redis_url=settings.redis_url,
                key_prefix=settings.redis_key_prefix,
                ttl_seconds=settings.redis_ttl_seconds,
                batch_size=settings.redis_batch_size,
                dlq_topic=settings.events_dlq_topic,
            ),
            output_type=FRAME_TYPE,
        )
        .name("user features -> redis")
        .uid("user-feature-shards")
    )
    (
        sharded.get_side_output(DLQ)
        .union(features.get_side_output(DLQ))
        .sink_to(dlq_sink)
        .name("events dlq")
        .uid("events-dlq")
    )


def main() -> None:
    """Resolve the settings and run the job on the configured cluster."""
    settings = Settings.from_env()
    env = create_env(settings)
    kafka_properties = settings.kafka_java_properties
    source = framed_source(settings.kafka_bootstrap, settings.events_topic,
                           settings.consumer_group, settings.kafka_fetch_max_wait_ms,
                           kafka_properties)
    frames = env.from_source(source, WatermarkStrategy.no_watermarks(), "events",
                             type_info=FRAME_TYPE).uid("events-source")
    build_feature_job(frames, framed_sink(settings.kafka_bootstrap, kafka_properties), settings)
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main()
