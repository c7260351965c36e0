"""Scores one micro-batch of Kafka records: the scoring job's logic, free of Flink.

For a batch of source frames (:mod:`udfs.wire.frames`): decode each record, keep the scored
event types, look up the users' feature rows in one call, route each user to a model version
(:mod:`udfs.scoring.live_models`), assemble vectors (:mod:`udfs.scoring.vector`), then one
vectorized ``predict`` per version (and one for the shadow), and hand the scores to the latest
scores sink. Every input frame yields exactly one output: a score sink frame, a dead-letter
sink frame (stage ``decode``, ``features`` or ``model``), or None for an event type that is not
scored. Nothing here raises for a bad record; only a failing port (Redis down) raises, so the
job restarts and replays instead of dead-lettering good data.

The scorer reaches the world through three small ports (:class:`FeatureRows`,
:class:`LatestScores`, :class:`Clock`); the job's adapter passes Redis and the wall clock,
tests pass plain objects.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from featurestream.udfs.contract.codec import EventDecoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.processor import Row
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import LoadedModel, ModelError
from featurestream.udfs.scoring.score_codec import ScoreCodec, ScoreRecord, ShadowScore
from featurestream.udfs.scoring.vector import assemble
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage, dlq_frame
from featurestream.udfs.wire.frames import SourceRecord, decode_source_frame, encode_sink_frame

# The stages whose dead letters the scoring job counts.
SCORING_STAGES = (Stage.DECODE, Stage.FEATURES, Stage.MODEL)


class FeatureRows(Protocol):
    """Port: the feature rows of a batch's users, in one call."""

    def rows(self, user_ids: Sequence[str]) -> Mapping[str, Row | Problem]:
        """Each user's row; a user without a row is absent, an unreadable row is a Problem."""
        ...


class LatestScores(Protocol):
    """Port: keeps each user's newest score per model (what the reader serves)."""

    def write_latest(self, scores: Sequence[ScoreRecord]) -> None:
        """Store the batch's scores (in batch order: a later one of a user and model wins)."""
        ...


class Clock(Protocol):
    """Port: the wall clock, epoch ms (written on scores as ``scored_at``)."""

    def __call__(self) -> int: ...


def wall_clock_ms() -> int:
    """The system's wall clock, epoch ms."""
    return int(time.time() * 1000)


@dataclass
class ScoredBatch:
    """The outputs of one batch, aligned with its input frames, and what happened."""

    outputs: list[bytes | None]
    scores: list[ScoreRecord] = field(default_factory=list)
    dead: Counter[Stage] = field(default_factory=Counter)  # dead letters per stage
    shadow_failures: int = 0


@dataclass(slots=True)
class _Item:
    """A record on its way to ``predict``."""

    index: int
    record: SourceRecord
    event: Event
    row: Row | None
    vector: list[float]


@dataclass(slots=True)
class _ModelGroup:
    """The records routed to one model version: one ``predict`` call."""

    variant: str
    model: LoadedModel
    items: list[_Item]


class BatchScorer:
    """Turns batches of source frames into score and dead-letter sink frames."""

    def __init__(self, models: ServingModels, decoder: EventDecoder, codec: ScoreCodec,
                 scored_types: Collection[str], scores_topic: str, dlq_topic: str,
                 rows: FeatureRows, latest_scores: LatestScores,
                 clock_ms: Clock = wall_clock_ms) -> None:
        self.models = models
        self._decoder = decoder
        self._codec = codec
        self._scored_types = frozenset(scored_types)
        self._scores_topic = scores_topic
        self._dlq_topic = dlq_topic
        self._rows = rows
        self._latest_scores = latest_scores
        self._clock_ms = clock_ms

    def score(self, frames: Sequence[bytes]) -> ScoredBatch:
        """Score ``frames``; models are refreshed first, never in the middle of a batch."""
        self.models.refresh()
        batch = ScoredBatch([None] * len(frames))
        candidates: list[tuple[int, SourceRecord, Event]] = []
        for index, frame in enumerate(frames):
            record = decode_source_frame(frame)
            event = self._decoder.decode(record.value)
            if isinstance(event, Problem):
                self._dead(batch, index, record, None, event)
            elif event.event_type in self._scored_types:
                candidates.append((index, record, event))
        if not candidates:
            return batch
        rows = self._rows.rows(sorted({event.user_id for _, _, event in candidates}))
        groups: dict[int, _ModelGroup] = {}  # by model version
        for index, record, event in candidates:
            variant, version, model = self.models.route(event.user_id)
            if isinstance(model, ModelError):
                self._dead(batch, index, record, event,
                           Problem(Stage.MODEL, ErrorClass.MODEL_UNAVAILABLE, str(model)),
                           version)
                continue
            metadata = model.metadata
            row = rows.get(event.user_id)
            if isinstance(row, Problem):
                self._dead(batch, index, record, event, row, metadata.version)
                continue
            vector = assemble(metadata.features, metadata.defaults, event, row)
            if isinstance(vector, Problem):
                self._dead(batch, index, record, event, vector, metadata.version)
                continue
            group = groups.get(metadata.version)
            if group is None:
                group = groups[metadata.version] = _ModelGroup(variant, model, [])
            group.items.append(_Item(index, record, event, row, vector))
        for group in groups.values():
            self._predict(batch, group)
        self._latest_scores.write_latest(batch.scores)
        return batch

    def _predict(self, batch: ScoredBatch, group: _ModelGroup) -> None:
        variant, model, items = group.variant, group.model, group.items
        version = model.metadata.version
        try:
            scores = model.predict(np.array([item.vector for item in items], dtype=np.float64))
        except Exception as exc:  # a model error must dead-letter its records, not stop the job
            problem = Problem(Stage.MODEL, ErrorClass.PREDICT_FAILED, str(exc) or repr(exc),
                              exception_class=type(exc).__name__)
            for item in items:
                self._dead(batch, item.index, item.record, item.event, problem, version)
            return
        shadow = self._shadow_scores(batch, items)
        scored_at = self._clock_ms()
        for item, score, shadow_score in zip(items, scores.tolist(), shadow, strict=True):
            if not math.isfinite(score):
                self._dead(batch, item.index, item.record, item.event,
                           Problem(Stage.MODEL, ErrorClass.NON_FINITE_SCORE,
                                   f"the model returned {score}"), version)
                continue
            record = self._score_record(item, model, variant, score, scored_at, shadow_score)
            batch.scores.append(record)
            batch.outputs[item.index] = encode_sink_frame(
                self._scores_topic, item.event.user_id.encode(), self._codec.encode(record))

    def _shadow_scores(self, batch: ScoredBatch, items: list[_Item]
                       ) -> list[ShadowScore | None]:
        """The shadow's score per item (score None where it failed), or Nones without one."""
        shadow = self.models.shadow
        if shadow is None:
            return [None] * len(items)
        scores: list[float | None] = [None] * len(items)
        if isinstance(shadow.model, LoadedModel):
            metadata = shadow.model.metadata
            vectors = [assemble(metadata.features, metadata.defaults, item.event, item.row)
                       for item in items]
            usable = [i for i, v in enumerate(vectors) if not isinstance(v, Problem)]
            try:
                predicted = shadow.model.predict(
                    np.array([vectors[i] for i in usable], dtype=np.float64)).tolist()
            except Exception:  # the shadow is never served: its failure only counts
                predicted = [math.nan] * len(usable)
            for i, score in zip(usable, predicted, strict=True):
                scores[i] = score if math.isfinite(score) else None
        batch.shadow_failures += scores.count(None)
        return [{"version": shadow.version, "score": score} for score in scores]

    @staticmethod
    def _score_record(item: _Item, model: LoadedModel, variant: str, score: float,
                      scored_at: int, shadow: ShadowScore | None) -> ScoreRecord:
        event, metadata, row = item.event, model.metadata, item.row
        as_of: Any = None if row is None else row.get("as_of")  # the row's event time, an int
        return {
            "event_id": event.event_id, "user_id": event.user_id,
            "event_type": event.event_type, "ts": event.ts,
            "model": metadata.name, "version": metadata.version, "variant": variant,
            "score": score, "features": dict(zip(metadata.features, item.vector, strict=True)),
            "features_missing": row is None, "as_of": as_of,
            "scored_at": scored_at, "shadow": shadow,
        }

    def _dead(self, batch: ScoredBatch, index: int, record: SourceRecord, event: Event | None,
              problem: Problem, version: int | None = None) -> None:
        key = event.user_id.encode() if event is not None else None
        batch.outputs[index] = dlq_frame(self._dlq_topic, record, problem, key=key,
                                         model_version=version)
        batch.dead[problem.stage] += 1
