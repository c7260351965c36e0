"""The feature job: Kafka events -> batches -> decode and shard -> event time and key (Java)
-> per-shard user windows -> Redis.

Two Python operators, each one stage: decode and shard (after the Java batcher, chained to the
source), and the keyed ``MaterializeFeatures``; the record's event time, its shard key and the
DLQ side outputs stay in Java (``ShardRecords.java``, :mod:`jobs.pyflink_compat`).

Submit with ``featurestream submit features``. Undecodable, late and expired events, and events
too far ahead of the wall clock, go to the events DLQ topic with the reason.
"""

from __future__ import annotations

from pyflink.datastream import DataStream
from pyflink.datastream.connectors import Sink

from featurestream.jobs import JOB_NAMES, pyflink_compat
from featurestream.jobs.environment import create_env, java_package
from featurestream.jobs.features.functions import DLQ, MaterializeFeatures, ShardEvents
from featurestream.jobs.kafka_io import FRAME_TYPE, batched, events_frames, framed_sink
from featurestream.jobs.redis_target import RedisTarget
from featurestream.settings import Settings
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.features.point_in_time import scored_events

JOB_NAME = JOB_NAMES["features"]


def build_feature_job(frames: DataStream, dlq_sink: Sink, settings: Settings,
                      definitions: Definitions) -> None:
    """Wire the feature job onto ``frames`` (the sources' Kafka frames) and ``dlq_sink``.

    ``tests/unit/test_pyflink_compat.py`` builds the same graph and checks its operators.
    """
    keys = shard_keys(settings.state_shards, settings.max_parallelism)
    sharded = batched(frames, settings.source_batch_size, settings.source_batch_linger_ms).process(
        ShardEvents(definitions, settings.schema_registry, settings.events_dlq_topic, keys,
                    settings.max_future_skew_ms,
                    scored_events(definitions, settings.scored_event_types),
                    settings.source_idleness_ms, settings.max_parallelism),
        output_type=FRAME_TYPE,
    ).name("decode and shard events").uid("shard-events")
    by_shard = pyflink_compat.key_by_in_java(sharded, lambda j_records: (
        java_package().ShardRecords.keyByShard(j_records, settings.max_out_of_orderness_ms,
                                               settings.source_idleness_ms)))
    features = (
        by_shard.process(
            MaterializeFeatures(
                definitions=definitions,
                allowed_lateness_ms=settings.effective_allowed_lateness_ms(definitions),
                shard_keys=keys,
                max_parallelism=settings.max_parallelism,
                target=RedisTarget.from_settings(settings),
                dlq_topic=settings.events_dlq_topic,
                redis_retry_ms=settings.redis_write_retry_ms,
                rewrite_restored=settings.rewrite_rows_on_restore,
            ),
            output_type=FRAME_TYPE,
        )
        .name("entity features -> redis")
        .uid("user-feature-shards")
    )
    (
        pyflink_compat.side_output(sharded, DLQ)
        .union(pyflink_compat.side_output(features, DLQ))
        .sink_to(dlq_sink)
        .name("events dlq")
        .uid("events-dlq")
    )


def shard_keys(shards: int, max_parallelism: int) -> list[int]:
    """Flink keys of the state shards, spread evenly over the key groups (``ShardKeys.java``)."""
    return list(java_package().ShardKeys.forShards(shards, max_parallelism))


def main() -> None:
    """Resolve the settings and run the job on the configured cluster."""
    settings = Settings.from_env()
    definitions = settings.load_definitions()
    env = create_env(settings)
    frames = events_frames(env, settings, settings.consumer_group, "events-source",
                           [source.topic for source in definitions.sources])
    dlq_sink = framed_sink(settings.kafka_bootstrap, settings.kafka_java_properties)
    build_feature_job(frames, dlq_sink, settings, definitions)
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main()
