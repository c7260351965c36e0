"""The scoring job's one Python operator: a vectorized (pandas) UDF over source frames, adapting
PyFlink to :class:`udfs.scoring.scorer.BatchScorer`.

Why a pandas UDF and not a ``ProcessFunction``: PyFlink's DataStream functions emit only what
``process_element``/``on_timer`` yield, one input at a time, so a function that buffers records
for a micro-batch could emit a batch's results only when a later record arrives -- and records
buffered when a checkpoint is taken would be lost unless kept in state (a JVM round trip each).
The Arrow-based pandas UDF operator does the batching in Java instead: it hands Python up to
``python.fn-execution.arrow.batch.size`` records at once and, at the end of every bundle (which
a checkpoint always forces before its barrier passes), the partial batch too, then emits every
result before the checkpoint completes. So each call here is one micro-batch: one Redis read
(the rows the feature job captured for the batch's events, of every entity the models read,
waiting for any not captured yet), one ``predict`` per model version, one
pipelined Redis write; no Flink state; and no record is buffered across a checkpoint.

The function returns one sink frame per input (score or dead letter) or null for an event type
that is not scored; the job drops the nulls in Java.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyflink.table.udf import FunctionContext, ScalarFunction

from featurestream.jobs.metrics import FlinkMetricGroup
from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.score_store import ScoreStore
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventDecoder
from featurestream.udfs.contract.schema_registry import RegistryConfig, registry_for
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.scoring.drift_recorder import BackgroundFlush, DriftRecorder
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec
from featurestream.udfs.scoring.scorer import (
    SCORER_DEAD_LETTERS,
    BatchScorer,
    ScoredBatch,
    Waiting,
)
from featurestream.udfs.scoring.variants import Arm, parse_experiment, parse_version
from featurestream.udfs.scoring.vector import FeatureCatalog
from featurestream.udfs.telemetry import catalog
from featurestream.udfs.telemetry.metrics import Counter, DeadLetterCounters, counter
from featurestream.udfs.wire.dead_letters import Problem


@dataclass(frozen=True)
class ScoringConfig:
    """What a scoring task needs, as plain values: built from the settings and the feature
    definitions on the client (so a bad experiment fails at submission) and pickled with the
    function to the workers. ``catalog``: each entity's key fields and row features, what the
    models' feature names are checked against."""

    models_dir: Path
    model_name: str
    compiled_predictor: str  # auto | lleaves | off (udfs.scoring.compiled)
    experiment: tuple[Arm, ...]  # empty: serve the latest version
    shadow_version: int | None
    model_poll_interval_ms: int
    schema_registry: RegistryConfig
    scored_event_types: tuple[str, ...]
    scores_topic: str
    scores_dlq_topic: str
    redis: RedisTarget
    catalog: FeatureCatalog
    point_in_time_wait_ms: int
    max_future_skew_ms: int
    drift_window_ms: int
    drift_bucket_ms: int

    @classmethod
    def from_settings(cls, settings: Settings, definitions: Definitions) -> ScoringConfig:
        """The scoring job's part of the settings and definitions."""
        s = settings
        return cls(
            models_dir=s.effective_models_dir, model_name=s.model_name,
            compiled_predictor=s.compiled_predictor,
            experiment=parse_experiment(s.experiment),
            shadow_version=parse_version(s.shadow_model) if s.shadow_model else None,
            model_poll_interval_ms=s.model_poll_interval_ms, schema_registry=s.schema_registry,
            scored_event_types=tuple(s.scored_event_types), scores_topic=s.scores_topic,
            scores_dlq_topic=s.scores_dlq_topic, redis=RedisTarget.from_settings(s),
            catalog=FeatureCatalog.from_definitions(definitions),
            point_in_time_wait_ms=s.point_in_time_wait_ms,
            max_future_skew_ms=s.max_future_skew_ms, drift_window_ms=s.drift_window_ms,
            drift_bucket_ms=s.drift_bucket_ms)


class ScoringMetrics:
    """The task's Flink metrics, counted from each scored batch: two plain totals read through
    Flink's REST API (``scored_events``, ``scores_dlq``), and the catalog's families
    (:mod:`udfs.telemetry.catalog`) under ``add_group("featurestream")`` for Prometheus. The
    dead letters the scorer can produce, and the reloads, exist from the start (at 0); a
    version's or variant's counters from its first batch."""

    def __init__(self, group: Any, models: ServingModels, model_name: str) -> None:
        self._scored = group.counter("scored_events")
        self._dead = group.counter("scores_dlq")
        self._group = FlinkMetricGroup(group)
        self._dead_letters = DeadLetterCounters(self._group, SCORER_DEAD_LETTERS)
        self._reload_counter = counter(self._group, catalog.MODEL_RELOADS, model=model_name)
        self._labelled: dict[tuple[str, tuple[str, ...]], Counter] = {}
        self._models = models
        self._model_name = model_name
        self._reloads = 0  # models.reloads already counted

    def _counter(self, metric: catalog.Metric, **labels: str) -> Counter:
        key = (metric.name, tuple(labels.values()))
        found = self._labelled.get(key)
        if found is None:
            found = self._labelled[key] = counter(self._group, metric, **labels)
        return found

    def count(self, batch: ScoredBatch) -> None:
        """Add one batch's outcomes."""
        self._group.touch()  # the dead letters not counted yet exist, at 0 (jobs.metrics)
        self._scored.inc(len(batch.scores))
        self._dead.inc(sum(batch.dead.values()))
        for (stage, reason), n in batch.dead.items():
            self._dead_letters.count(Problem(stage, reason, "counted"), n)
        for scored in batch.scored:
            model, version = scored.metadata.name, str(scored.metadata.version)
            self._counter(catalog.SCORES, model=model, version=version,
                          variant=scored.variant).inc(len(scored.scores))
            fallbacks = scored.fallbacks()
            if fallbacks:
                self._counter(catalog.FALLBACKS, model=model, version=version).inc(fallbacks)
        shadow = self._models.shadow
        if batch.shadow_failures and shadow is not None:
            self._counter(catalog.SHADOW_FAILURES, model=self._model_name,
                          version=str(shadow.version)).inc(batch.shadow_failures)
        reloads = self._models.reloads
        if reloads > self._reloads:
            self._reload_counter.inc(reloads - self._reloads)
            self._reloads = reloads


class ScoreFrames(ScalarFunction):
    """Source frames (a pandas Series of bytes) -> score / dead-letter sink frames or nulls."""

    _store: ScoreStore | None = None  # made in open()
    _scorer: BatchScorer  # made in open()
    _metrics: ScoringMetrics  # made in open()
    _drift: DriftRecorder | None = None  # made in open()
    _drift_flush: BackgroundFlush | None = None  # started in open()

    def __init__(self, config: ScoringConfig) -> None:
        self._config = config

    def open(self, function_context: FunctionContext) -> None:
        config = self._config
        models = ServingModels(ModelRegistry(config.models_dir, config.model_name,
                                             config.compiled_predictor),
                               config.experiment, config.shadow_version,
                               config.model_poll_interval_ms)
        schemas = registry_for(config.schema_registry)
        self._store = ScoreStore(config.redis)
        self._scorer = BatchScorer(
            models, EventDecoder(schemas), ScoreCodec(schemas, f"{config.scores_topic}-value"),
            config.scored_event_types, config.scores_topic, config.scores_dlq_topic,
            config.catalog, rows=self._store, latest_scores=self._store,
            waiting=Waiting(config.point_in_time_wait_ms),
            max_future_skew_ms=config.max_future_skew_ms)
        self._metrics = ScoringMetrics(function_context.get_metric_group(), models,
                                       config.model_name)
        self._drift = DriftRecorder(config.redis.key_prefix, self._store,
                                    config.drift_window_ms, config.drift_bucket_ms)
        self._drift_flush = BackgroundFlush(self._drift)

    def is_deterministic(self) -> bool:
        return False  # reads Redis and the registry, writes Redis: never fold or repeat a call

    def eval(self, frames: pd.Series) -> pd.Series:
        batch = self._scorer.score(frames.tolist())
        self._metrics.count(batch)
        assert self._drift is not None
        self._drift.record(batch)
        return pd.Series(batch.outputs, dtype=object)

    def close(self) -> None:
        try:
            if self._drift_flush is not None:
                self._drift_flush.stop()
            if self._drift is not None:
                self._drift.flush()  # the last second's counts
        finally:
            if self._store is not None:
                self._store.close()
