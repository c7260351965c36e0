"""The scoring job's one Python operator: a vectorized (pandas) UDF over source frames.

Why a pandas UDF and not a ``ProcessFunction``: PyFlink's DataStream functions emit only what
``process_element``/``on_timer`` yield, one input at a time, so a function that buffers records
for a micro-batch could emit a batch's results only when a later record arrives -- and records
buffered when a checkpoint is taken would be lost unless kept in state (a JVM round trip each).
The Arrow-based pandas UDF operator does the batching in Java instead: it hands Python up to
``python.fn-execution.arrow.batch.size`` records at once and, at the end of every bundle (which
a checkpoint always forces before its barrier passes), the partial batch too, then emits every
result before the checkpoint completes. So each call here is one micro-batch: one pipelined
Redis read, one ``predict`` per model version, one pipelined Redis write; no Flink state; and
no record is buffered across a checkpoint.

The function returns one sink frame per input (score or dead letter) or null for an event type
that is not scored; the job drops the nulls in Java.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from featurestream.jobs.score_store import ScoreStore
from featurestream.udfs.contract.codec import EventDecoder
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec
from featurestream.udfs.scoring.scorer import BatchScorer
from featurestream.udfs.scoring.variants import parse_experiment, parse_version
from pyflink.table.udf import FunctionContext, ScalarFunction

from featurestream.settings import Settings

DLQ_STAGES = ("decode", "features", "model")


class ScoreFrames(ScalarFunction):
    """Source frames (a pandas Series of bytes) -> score / dead-letter sink frames or nulls."""

    def __init__(self, settings: Settings) -> None:
        # Plain values only: the function is pickled to the Python workers.
        s = settings
        self._models = (str(s.effective_models_dir), s.model_name, s.experiment, s.shadow_model,
                        s.model_poll_interval_ms)
        self._codecs = (s.schema_registry, s.scored_event_types, s.scores_topic,
                        s.scores_dlq_topic)
        self._redis = (s.redis_url, s.redis_key_prefix, s.redis_ttl_seconds)
        self._scorer: BatchScorer | None = None
        self._store: ScoreStore | None = None
        self._metrics: dict = {}

    def open(self, function_context: FunctionContext) -> None:
        models_dir, model_name, experiment, shadow_model, poll_ms = self._models
        registry, scored_types, scores_topic, dlq_topic = self._codecs
        shadow = parse_version(shadow_model) if shadow_model else None
        models = ServingModels(ModelRegistry(Path(models_dir), model_name),
                               parse_experiment(experiment), shadow, poll_ms)
        schemas = registry_for(registry)
        self._scorer = BatchScorer(models, EventDecoder(schemas),
                                   ScoreCodec(schemas, f"{scores_topic}-value"),
                                   scored_types, scores_topic, dlq_topic)
        self._store = ScoreStore(*self._redis)
        group = function_context.get_metric_group()
        self._metrics = {
            "scored": group.counter("scored_events"),
            "dead": group.counter("scores_dlq"),
            "shadow_failures": group.counter("shadow_failures"),
            **{stage: group.counter(f"scores_dlq_{stage}") for stage in DLQ_STAGES},
        }
        group.gauge("model_reloads", lambda: models.reloads)

    def is_deterministic(self) -> bool:
        return False  # reads Redis and the registry, writes Redis: never fold or repeat a call

    def eval(self, frames: pd.Series) -> pd.Series:
        batch = self._scorer.score(frames.tolist(), self._store.rows)
        self._store.write_latest(batch.scores)
        self._metrics["scored"].inc(len(batch.scores))
        self._metrics["dead"].inc(sum(batch.dead.values()))
        for stage, count in batch.dead.items():
            self._metrics[stage].inc(count)
        self._metrics["shadow_failures"].inc(batch.shadow_failures)
        return pd.Series(batch.outputs, dtype=object)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
