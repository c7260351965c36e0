"""Scores one micro-batch of Kafka records: the scoring job's logic, free of Flink.

For a batch of source frames (:mod:`udfs.wire.frames`): decode each record, keep the scored
event types, route each user to a model version (:mod:`udfs.scoring.live_models`), read the
rows the feature job captured for each event -- of the user and of any other entity a model
names (``item.views_1h``), as of the event (the rule: :mod:`udfs.features.point_in_time`) -- in
one call, assemble vectors (:mod:`udfs.scoring.vector`), then one vectorized ``predict`` per
version (and one for the shadow), and hand the scores to the latest scores sink. A score is a
function of the event log and the model alone: replaying the same events gives the same scores.

Rows the feature job has not captured yet are waited for (it may be behind), up to
``wait_ms``; past that the event is a dead letter of stage ``features`` (``FeaturesNotReady``).
A version whose features the definitions do not provide is refused when first used (its
records are dead letters of stage ``model`` naming the features). Every input frame yields
exactly one output: a score sink frame, a dead-letter sink frame (stage ``decode``,
``window`` for an event stamped in the future, as the feature job refuses it, ``features`` or
``model``), or None for an event type that is not scored. Nothing here raises for a bad
record; only a failing port (Redis down) raises, so the job restarts and replays instead of
dead-lettering good data.

The scorer reaches the world through small ports (:class:`CapturedRows`,
:class:`LatestScores`, :class:`Clock`, and a sleep for the wait); the job's adapter passes
Redis and the clocks, tests pass plain objects.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from featurestream.udfs.contract.codec import EventDecoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.routing import future_event
from featurestream.udfs.scoring.assembly import VersionVectors
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import LoadedModel, ModelError
from featurestream.udfs.scoring.score_codec import ScoreCodec, ScoreRecord, ShadowScore
from featurestream.udfs.scoring.vector import EntityId, FeatureCatalog, Row, VectorPlan
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage, dlq_frame
from featurestream.udfs.wire.frames import SourceRecord, decode_source_frame, encode_sink_frame

# Every dead letter the scorer can produce (the scoring job's metrics register them up front).
SCORER_DEAD_LETTERS = (
    *((Stage.DECODE, c) for c in (ErrorClass.MALFORMED_RECORD, ErrorClass.UNKNOWN_SCHEMA_ID,
                                  ErrorClass.INCOMPATIBLE_SCHEMA, ErrorClass.SCHEMA_VIOLATION,
                                  ErrorClass.INVALID_VALUE)),
    (Stage.WINDOW, ErrorClass.FUTURE_EVENT),
    *((Stage.FEATURES, c) for c in (ErrorClass.FEATURES_NOT_READY, ErrorClass.UNKNOWN_USER,
                                    ErrorClass.MISSING_FEATURE, ErrorClass.NON_FINITE_FEATURE,
                                    ErrorClass.CORRUPT_FEATURE_ROW)),
    *((Stage.MODEL, c) for c in (ErrorClass.MODEL_UNAVAILABLE, ErrorClass.PREDICT_FAILED,
                                 ErrorClass.NON_FINITE_SCORE)),
)

CapturedKey = tuple[str, str, str]  # (entity, entity id, event id)


class CapturedRows(Protocol):
    """Port: the rows the feature job captured for scored events, of any entities, in one
    call."""

    def captured(self, keys: Sequence[CapturedKey]) -> Mapping[CapturedKey, Row | Problem | None]:
        """Each key's captured row (None: the entity had no row); a key not captured (yet) is
        absent, an unreadable one is a Problem."""
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


@dataclass(frozen=True)
class Waiting:
    """How the scorer waits for rows not captured yet: up to ``wait_ms`` in all, polling
    with a delay that doubles from ``first_delay_s`` to ``max_delay_s``. The scoring job reads
    the events as the feature job does, so it usually waits for the feature job's bundle (tens
    of ms); a short cap keeps the wait from overshooting by more than a poll (one ``MGET``)."""

    wait_ms: int
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    first_delay_s: float = 0.002
    max_delay_s: float = 0.02


@dataclass(frozen=True, slots=True)
class ScoredVectors:
    """The vectors one served model version scored in a batch, as assembled: ``vectors`` rows x
    the model's features, NaN where the value was missing and the model's default was used;
    ``scores`` the (finite) scores, aligned. What drift counts; the shadow's are not here."""

    metadata: ModelMetadata
    variant: str
    vectors: np.ndarray
    scores: np.ndarray

    def fallbacks(self) -> int:
        """The records whose vector used a default (a value was missing)."""
        return int(np.count_nonzero(np.isnan(self.vectors).any(axis=1)))


@dataclass
class ScoredBatch:
    """The outputs of one batch, aligned with its input frames, and what happened."""

    outputs: list[bytes | None]
    scores: list[ScoreRecord] = field(default_factory=list)
    scored: list[ScoredVectors] = field(default_factory=list)  # per served model version
    dead: Counter[tuple[Stage, ErrorClass]] = field(default_factory=Counter)  # by reason
    shadow_failures: int = 0

    def dead_by_stage(self) -> Counter[Stage]:
        """The dead letters per stage."""
        stages: Counter[Stage] = Counter()
        for (stage, _), count in self.dead.items():
            stages[stage] += count
        return stages


@dataclass(slots=True)
class _Item:
    """A record on its way to ``predict``: the event's entity ids and rows (entities with a
    row only), and the served model's vector."""

    index: int
    record: SourceRecord
    event: Event
    ids: dict[str, EntityId]
    rows: dict[str, Row]
    vector: list[float]


# A scored event routed to a usable model, waiting for its rows: frame index, record, event,
# variant, model, its vector plan, and the ids of the entities it and the shadow read.
_Routed = tuple[int, SourceRecord, Event, str, LoadedModel, VectorPlan, dict[str, EntityId]]


@dataclass(slots=True)
class _ModelGroup:
    """The records routed to one model version: one ``predict`` call."""

    variant: str
    model: LoadedModel
    plan: VectorPlan
    items: list[_Item]


class BatchScorer:
    """Turns batches of source frames into score and dead-letter sink frames."""

    def __init__(self, models: ServingModels, decoder: EventDecoder, codec: ScoreCodec,
                 scored_types: Collection[str], scores_topic: str, dlq_topic: str,
                 catalog: FeatureCatalog, rows: CapturedRows, latest_scores: LatestScores,
                 waiting: Waiting, max_future_skew_ms: int,
                 clock_ms: Clock = wall_clock_ms) -> None:
        self.models = models
        self._decoder = decoder
        self._codec = codec
        self._scored_types = frozenset(scored_types)
        self._scores_topic = scores_topic
        self._dlq_topic = dlq_topic
        self._rows = rows
        self._latest_scores = latest_scores
        self._waiting = waiting
        self._max_future_skew_ms = max_future_skew_ms
        self._clock_ms = clock_ms
        self.versions = VersionVectors(catalog)

    def score(self, frames: Sequence[bytes]) -> ScoredBatch:
        """Score ``frames``; models are refreshed first, never in the middle of a batch."""
        self.models.refresh()
        batch = ScoredBatch([None] * len(frames))
        shadow = self._shadow_plan()
        routed: list[_Routed] = []
        wanted: dict[CapturedKey, None] = {}
        plans: dict[int, VectorPlan | Problem] = {}  # by model object, for this batch
        now = self._clock_ms()
        latest = now + self._max_future_skew_ms
        for index, frame in enumerate(frames):
            record = decode_source_frame(frame)
            event = self._decoder.decode(record.value)
            if isinstance(event, Problem):
                self._dead(batch, index, record, None, event)
                continue
            if event.event_type not in self._scored_types:
                continue
            if event.ts > latest:  # the feature job refuses it: it has no rows
                self._dead(batch, index, record, event,
                           future_event(event.ts, now, self._max_future_skew_ms))
                continue
            variant, version, model, _ = self.models.route(event.user_id)
            if isinstance(model, ModelError):
                self._dead(batch, index, record, event,
                           Problem(Stage.MODEL, ErrorClass.MODEL_UNAVAILABLE, str(model)),
                           version)
                continue
            plan = plans.get(id(model))
            if plan is None:
                plan = plans[id(model)] = self.versions.plan(model)
            if isinstance(plan, Problem):
                self._dead(batch, index, record, event, plan, version)
                continue
            ids = plan.entity_ids(event)
            if shadow is not None:
                for entity, entity_id in shadow.entity_ids(event).items():
                    ids.setdefault(entity, entity_id)
            for entity, entity_id in ids.items():
                if type(entity_id) is str:
                    wanted[(entity, entity_id, event.event_id)] = None
            routed.append((index, record, event, variant, model, plan, ids))
        if not routed:
            return batch
        rows = self._captured(list(wanted))
        groups: dict[int, _ModelGroup] = {}  # by model version
        for index, record, event, variant, model, plan, ids in routed:
            version = model.metadata.version
            found: dict[str, Row] = {}
            problem: Problem | None = None
            for entity, entity_id in ids.items():
                if isinstance(entity_id, str):
                    key = (entity, entity_id, event.event_id)
                    row = rows[key] if key in rows else self._not_ready(key)
                else:
                    row = entity_id
                if row is None:
                    continue
                if isinstance(row, Problem):
                    if problem is None and entity in plan.entities:
                        problem = row
                else:
                    found[entity] = row
            vector = problem or self.versions.vector(model, plan, event, found, ids, nulls=True)
            if isinstance(vector, Problem):
                self._dead(batch, index, record, event, vector, version)
                continue
            group = groups.get(version)
            if group is None:
                group = groups[version] = _ModelGroup(variant, model, plan, [])
            group.items.append(_Item(index, record, event, ids, found, vector))
        for group in groups.values():
            self._predict(batch, group, shadow)
        self._latest_scores.write_latest(batch.scores)
        return batch

    def _captured(self, keys: list[CapturedKey]) -> dict[CapturedKey, Row | Problem | None]:
        """The captured rows of ``keys``, waiting for those not captured yet (absent if they
        still are not when the wait is over)."""
        if not keys:
            return {}
        found = dict(self._rows.captured(keys))
        missing = [key for key in keys if key not in found]
        if not missing:
            return found
        waiting = self._waiting
        deadline = waiting.monotonic() + waiting.wait_ms / 1000
        delay = waiting.first_delay_s
        while missing and waiting.monotonic() < deadline:
            waiting.sleep(delay)
            delay = min(delay * 2, waiting.max_delay_s)
            found.update(self._rows.captured(missing))
            missing = [key for key in missing if key not in found]
        return found

    def _not_ready(self, key: CapturedKey) -> Problem:
        entity, entity_id, event_id = key
        return Problem(
            Stage.FEATURES, ErrorClass.FEATURES_NOT_READY,
            f"the feature job did not capture the features of {entity} {entity_id!r} for "
            f"event {event_id!r} within FEATURESTREAM_POINT_IN_TIME_WAIT_MS "
            f"({self._waiting.wait_ms} ms): check that the feature job runs on these events "
            "with the same definitions and FEATURESTREAM_SCORED_EVENT_TYPES and keeps up; "
            "captured features expire after FEATURESTREAM_POINT_IN_TIME_TTL_MS")

    def _shadow_plan(self) -> VectorPlan | None:
        """The shadow's plan, when there is a usable shadow."""
        shadow = self.models.shadow
        if shadow is None or not isinstance(shadow.model, LoadedModel):
            return None
        plan = self.versions.plan(shadow.model)
        return None if isinstance(plan, Problem) else plan

    def _predict(self, batch: ScoredBatch, group: _ModelGroup, shadow: VectorPlan | None
                 ) -> None:
        model, items = group.model, group.items
        version = model.metadata.version
        vectors = np.array([item.vector for item in items], dtype=np.float64)
        try:
            scores = model.predict(self._filled(vectors, items, model.metadata))
        except Exception as exc:  # a model error must dead-letter its records, not stop the job
            problem = Problem(Stage.MODEL, ErrorClass.PREDICT_FAILED, str(exc) or repr(exc),
                              exception_class=type(exc).__name__)
            for item in items:
                self._dead(batch, item.index, item.record, item.event, problem, version)
            return
        shadow_scores = self._shadow_scores(batch, items, shadow)
        scored_at = self._clock_ms()
        finite = np.isfinite(scores)
        kept = finite.all()
        batch.scored.append(ScoredVectors(model.metadata, group.variant,
                                          vectors if kept else vectors[finite],
                                          scores if kept else scores[finite]))
        for item, score, shadow_score in zip(items, scores.tolist(), shadow_scores, strict=True):
            if not math.isfinite(score):
                self._dead(batch, item.index, item.record, item.event,
                           Problem(Stage.MODEL, ErrorClass.NON_FINITE_SCORE,
                                   f"the model returned {score}"), version)
                continue
            record = self._score_record(item, group, score, scored_at, shadow_score)
            record["experiment"] = self.models.experiment  # the batch's routes' record id
            batch.scores.append(record)
            batch.outputs[item.index] = encode_sink_frame(
                self._scores_topic, item.event.user_id.encode(), self._codec.encode(record))

    def _filled(self, vectors: np.ndarray, items: list[_Item], metadata: ModelMetadata
                ) -> np.ndarray:
        """``vectors`` with the model's defaults where they are NaN (a missing value), and
        each such item's vector filled too (what its score record shows)."""
        filled = self.versions.filled(vectors, metadata)
        if filled is not vectors:
            for i in np.flatnonzero(np.isnan(vectors).any(axis=1)).tolist():
                items[i].vector = filled[i].tolist()
        return filled

    def _shadow_scores(self, batch: ScoredBatch, items: list[_Item], plan: VectorPlan | None
                       ) -> list[ShadowScore | None]:
        """The shadow's score per item (score None where it failed), or Nones without one."""
        shadow = self.models.shadow
        if shadow is None:
            return [None] * len(items)
        scores: list[float | None] = [None] * len(items)
        if isinstance(shadow.model, LoadedModel) and plan is not None:
            vectors = [self.versions.vector(shadow.model, plan, item.event, item.rows, item.ids)
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
    def _score_record(item: _Item, group: _ModelGroup, score: float, scored_at: int,
                      shadow: ShadowScore | None) -> ScoreRecord:
        """The score; ``as_of`` is that of the oldest row the vector read (the row's event
        time, an int), ``features_missing`` says an entity it reads had no row."""
        event, metadata, rows = item.event, group.model.metadata, item.rows
        as_of: int | None = None
        missing = False
        for entity in group.plan.entities:
            row = rows.get(entity)
            if row is None:
                missing = True
            elif as_of is None or row["as_of"] < as_of:
                as_of = row["as_of"]
        return {
            "event_id": event.event_id, "user_id": event.user_id,
            "event_type": event.event_type, "ts": event.ts,
            "model": metadata.name, "version": metadata.version, "variant": group.variant,
            "score": score, "features": dict(zip(metadata.features, item.vector, strict=True)),
            "features_missing": missing, "as_of": as_of, "scored_at": scored_at,
            "shadow": shadow,
        }

    def _dead(self, batch: ScoredBatch, index: int, record: SourceRecord, event: Event | None,
              problem: Problem, version: int | None = None) -> None:
        key = event.user_id.encode() if event is not None else None
        batch.outputs[index] = dlq_frame(self._dlq_topic, record, problem, key=key,
                                         model_version=version)
        batch.dead[problem.stage, problem.error_class] += 1
