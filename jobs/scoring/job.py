"""The scoring job: Kafka events -> micro-batches scored by LightGBM -> scores / scores.dlq.

Submit with ``featurestream submit scoring``. One Python operator (:mod:`jobs.scoring_function`,
a pandas UDF: Flink batches the records in Java) between the framed Kafka source and one framed
Kafka sink, which writes both topics -- in one Kafka transaction per checkpoint with
``FEATURESTREAM_SCORES_DELIVERY=exactly_once``. The job keeps no Flink state of its own: the
source's offsets and the sink's transactions are the whole checkpoint. Beside the scores it
writes each user's latest score and the drift counts of the served versions to Redis
(:mod:`udfs.scoring.drift_recorder`), and its metrics go out through Flink's.
"""

from __future__ import annotations

from pyflink.datastream import DataStream
from pyflink.datastream.connectors import Sink
from pyflink.table import DataTypes, StreamTableEnvironment
from pyflink.table.expressions import col
from pyflink.table.udf import udf

from featurestream.errors import UserFacingError
from featurestream.jobs import JOB_NAMES, pyflink_compat
from featurestream.jobs.environment import create_env
from featurestream.jobs.kafka_io import events_frames, framed_sink
from featurestream.jobs.scoring.function import ScoreFrames, ScoringConfig
from featurestream.settings import Settings
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.features.point_in_time import scored_events
from featurestream.udfs.scoring.model_registry import ModelError, ModelRegistry
from featurestream.udfs.scoring.variants import parse_experiment, parse_version
from featurestream.udfs.scoring.vector import FeatureCatalog, UnknownFeature

JOB_NAME = JOB_NAMES["scoring"]


def build_scoring_job(t_env: StreamTableEnvironment, frames: DataStream, sink: Sink,
                      settings: Settings, definitions: Definitions) -> None:
    """Wire the scoring job onto ``frames`` (Kafka source frames) and ``sink``."""
    score = udf(ScoreFrames(ScoringConfig.from_settings(settings, definitions)),
                result_type=DataTypes.BYTES(), func_type="pandas")
    outputs = (t_env.from_data_stream(frames)
               .select(score(col("f0")).alias("frame"))
               .where(col("frame").is_not_null))
    # One BYTES column -> a stream of byte[] for the sink, converted in Java.
    (pyflink_compat.table_to_stream(t_env, outputs, DataTypes.BYTES())
     .sink_to(sink).name("scores + scores.dlq").uid("scores-sink"))


def check_models(settings: Settings, definitions: Definitions) -> None:
    """Fail at submission when the registry cannot serve what the settings ask for, a version
    names features the definitions do not provide, or the feature job would capture no rows
    for the scored events (they come from the definitions' built-in events source)."""
    scored = scored_events(definitions, settings.scored_event_types)
    source = next((s for s in definitions.sources if scored and s.name == scored.source), None)
    if source is None or source.topic != settings.events_topic:
        raise UserFacingError(
            "the scoring job scores the built-in events on FEATURESTREAM_EVENTS_TOPIC "
            f"({settings.events_topic}) with the features the feature job captures from them, "
            "but no source of FEATURESTREAM_DEFINITIONS reads that topic with the built-in "
            "contract: declare events_source(...) on it (featurestream.definitions)")
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    wanted = [arm.version for arm in parse_experiment(settings.experiment)]
    if settings.shadow_model:
        wanted.append(parse_version(settings.shadow_model))
    if not wanted:
        wanted = registry.versions()[-1:]
        if not wanted:
            raise UserFacingError(
                f"no {settings.model_name} model in {registry.directory}: run `featurestream "
                "train`, or point FEATURESTREAM_MODELS_DIR at the registry")
    catalog = FeatureCatalog.from_definitions(definitions)
    for version in wanted:
        try:
            metadata = registry.load(version).metadata
            catalog.plan(metadata.features, metadata.feature_definitions)
        except ModelError as exc:
            raise UserFacingError(f"{exc}; publish it with `featurestream train`, or change "
                                  "FEATURESTREAM_EXPERIMENT / FEATURESTREAM_SHADOW_MODEL"
                                  ) from None
        except UnknownFeature as exc:
            raise UserFacingError(f"{settings.model_name} v{version} names {exc}") from None


def main() -> None:
    """Resolve the settings and definitions, check the models and run the job on the
    configured cluster."""
    settings = Settings.from_env()
    definitions = settings.load_definitions()
    check_models(settings, definitions)
    # Exactly-once scores become visible when the checkpoint covering them completes; the job
    # checkpoints only offsets, so it can afford to do that often.
    env = create_env(settings, checkpoint_interval_ms=settings.scoring_checkpoint_interval_ms)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("python.fn-execution.arrow.batch.size",
                           str(settings.score_batch_size))
    frames = events_frames(env, settings, settings.scoring_group, "scoring-events-source")
    exactly_once = settings.scores_delivery == "exactly_once"
    sink = framed_sink(settings.kafka_bootstrap, settings.kafka_java_properties,
                       settings.scoring_group if exactly_once else None)
    build_scoring_job(t_env, frames, sink, settings, definitions)
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main()
