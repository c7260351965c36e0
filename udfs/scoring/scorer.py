"""Scores one micro-batch of Kafka records: the scoring job's logic, free of Flink.

For a batch of source frames (:mod:`udfs.kafka_framing`): decode each record, keep the scored
event types, look up the users' feature rows in one call, route each user to a model version
(:mod:`udfs.serving_models`), assemble vectors (:mod:`udfs.feature_vector`), then one vectorized
``predict`` per version (and one for the shadow). Every input frame yields exactly one output: a
score sink frame, a dead-letter sink frame (stage ``decode``, ``features`` or ``model``), or None
for an event type that is not scored. Nothing here raises for a bad record; only a failing row
lookup (Redis down) raises, so the job restarts and replays instead of dead-lettering good data.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from featurestream.udfs.contract.codec import DecodeError, EventDecoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.processor import Row
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import LoadedModel, ModelError
from featurestream.udfs.scoring.score_codec import ScoreCodec, ScoreRecord
from featurestream.udfs.scoring.vector import FeatureProblem, assemble
from featurestream.udfs.wire.dead_letters import dlq_frame
from featurestream.udfs.wire.frames import SourceRecord, decode_source_frame, encode_sink_frame

# user ids -> their rows; a user without a row is absent, an unreadable row is a problem.
RowLookup = Callable[[Sequence[str]], Mapping[str, Row | FeatureProblem]]


@dataclass
class ScoredBatch:
    """The outputs of one batch, aligned with its input frames, and what happened."""

    outputs: list[bytes | None]
    scores: list[ScoreRecord] = field(default_factory=list)
    dead: Counter[str] = field(default_factory=Counter)  # dead letters per stage
    shadow_failures: int = 0


@dataclass
class _Item:
    index: int
    record: SourceRecord
    event: Event
    row: Row | None
    vector: list[float]


class BatchScorer:
    """Turns batches of source frames into score and dead-letter sink frames."""

    def __init__(self, models: ServingModels, decoder: EventDecoder, codec: ScoreCodec,
                 scored_types: Collection[str], scores_topic: str, dlq_topic: str,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.models = models
        self._decoder = decoder
        self._codec = codec
        self._scored_types = frozenset(scored_types)
        self._scores_topic = scores_topic
        self._dlq_topic = dlq_topic
        self._clock_ms = clock_ms

    def score(self, frames: Sequence[bytes], lookup: RowLookup) -> ScoredBatch:
        """Score ``frames``; models are refreshed first, never in the middle of a batch."""
        self.models.refresh()
        batch = ScoredBatch([None] * len(frames))
        candidates: list[tuple[int, SourceRecord, Event]] = []
        for index, frame in enumerate(frames):
            record = decode_source_frame(frame)
            event = self._decoder.decode(record.value)
            if isinstance(event, DecodeError):
                self._dead(batch, index, record, None, "decode", event.error_class,
                           event.message)
            elif event.event_type in self._scored_types:
                candidates.append((index, record, event))
        if not candidates:
            return batch
        rows = lookup(sorted({event.user_id for _, _, event in candidates}))
        groups: dict[int, tuple[str, LoadedModel, list[_Item]]] = {}
        for index, record, event in candidates:
            variant, version, model = self.models.route(event.user_id)
            if isinstance(model, ModelError):
                self._dead(batch, index, record, event, "model", "ModelUnavailable", str(model),
                           version)
                continue
            row = rows.get(event.user_id)
            metadata = model.metadata
            vector = row if isinstance(row, FeatureProblem) else assemble(
                metadata.features, metadata.defaults, event, row)
            if isinstance(vector, FeatureProblem):
                self._dead(batch, index, record, event, "features", vector.error_class,
                           vector.message, metadata.version)
                continue
            item = _Item(index, record, event, row, vector)
            groups.setdefault(metadata.version, (variant, model, []))[2].append(item)
        for variant, model, items in groups.values():
            self._predict(batch, variant, model, items)
        return batch

    def _predict(self, batch: ScoredBatch, variant: str, model: LoadedModel,
                 items: list[_Item]) -> None:
        version = model.metadata.version
        try:
            scores = model.predict(np.array([item.vector for item in items], dtype=np.float64))
        except Exception as exc:  # a model error must dead-letter its records, not stop the job
            for item in items:
                self._dead(batch, item.index, item.record, item.event, "model",
                           type(exc).__name__, str(exc) or repr(exc), version)
            return
        shadow = self._shadow_scores(batch, items)
        scored_at = self._clock_ms()
        for item, score, shadow_score in zip(items, scores.tolist(), shadow, strict=True):
            if not math.isfinite(score):
                self._dead(batch, item.index, item.record, item.event, "model",
                           "NonFiniteScore", f"the model returned {score}", version)
                continue
            record = self._score_record(item, model, variant, score, scored_at, shadow_score)
            batch.scores.append(record)
            batch.outputs[item.index] = encode_sink_frame(
                self._scores_topic, item.event.user_id.encode(), self._codec.encode(record))

    def _shadow_scores(self, batch: ScoredBatch, items: list[_Item]) -> list[dict | None]:
        """The shadow's ``{version, score}`` per item (score None where it failed), or Nones."""
        version, shadow = self.models.shadow
        if version is None:
            return [None] * len(items)
        scores: list[float | None] = [None] * len(items)
        if isinstance(shadow, LoadedModel):
            metadata = shadow.metadata
            vectors = [assemble(metadata.features, metadata.defaults, item.event, item.row)
                       for item in items]
            usable = [i for i, v in enumerate(vectors) if not isinstance(v, FeatureProblem)]
            try:
                predicted = shadow.predict(
                    np.array([vectors[i] for i in usable], dtype=np.float64)).tolist()
            except Exception:  # the shadow is never served: its failure only counts
                predicted = [math.nan] * len(usable)
            for i, score in zip(usable, predicted, strict=True):
                scores[i] = score if math.isfinite(score) else None
        batch.shadow_failures += scores.count(None)
        return [{"version": version, "score": score} for score in scores]

    @staticmethod
    def _score_record(item: _Item, model: LoadedModel, variant: str, score: float,
                      scored_at: int, shadow: dict | None) -> ScoreRecord:
        event, metadata = item.event, model.metadata
        return {
            "event_id": event.event_id, "user_id": event.user_id,
            "event_type": event.event_type, "ts": event.ts,
            "model": metadata.name, "version": metadata.version, "variant": variant,
            "score": score, "features": dict(zip(metadata.features, item.vector, strict=True)),
            "features_missing": item.row is None,
            "as_of": None if item.row is None else item.row.get("as_of"),
            "scored_at": scored_at, "shadow": shadow,
        }

    def _dead(self, batch: ScoredBatch, index: int, record: SourceRecord, event: Event | None,
              stage: str, error_class: str, message: str, version: int | None = None) -> None:
        key = event.user_id.encode() if event is not None else None
        batch.outputs[index] = dlq_frame(self._dlq_topic, record, stage, error_class, message,
                                         key=key, model_version=version)
        batch.dead[stage] += 1
