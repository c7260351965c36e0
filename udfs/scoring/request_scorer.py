"""Scores requests at request time: the reader's ``/v1/predict``, free of HTTP and Redis.

A request is an :class:`Event` as the stream decodes it (the request's fields, its time ``now``
unless given). It is scored as the scoring job scores a record, with the same code: the user is
routed by :class:`ServingModels` (same hash, same weights, the same registry reloaded as it
changes), the vector assembled by :class:`VersionVectors` (same plan, same defaults), one
``predict`` per version. Only the rows differ: the latest rows the reader reads, not the rows
the feature job captured for a logged event -- given the same rows, the scores are the same.

Two steps around the caller's one read of every row: :meth:`RequestScorer.route` says which
version serves each request and which entity rows it reads; :meth:`RequestScorer.score` takes
those rows and predicts. Each answer says how degraded it is (:data:`FALLBACKS`): ``none``,
``cached_features`` (a row came from the reader's cache because Redis could not answer) or
``defaults`` (an entity the model reads has no row, so its features took the model's defaults:
what the stream's scores call ``features_missing``). A null value in a row that exists (a mean
over no purchases) also takes its default, as in the stream, but is the feature's own value,
not a fallback. A request the model cannot score is a :class:`Refusal` naming why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

import numpy as np

from featurestream.udfs.contract.events import Event
from featurestream.udfs.scoring.assembly import VersionVectors
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import LoadedModel, ModelError
from featurestream.udfs.scoring.vector import FeatureCatalog, Row, VectorPlan
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem

Fallback = Literal["none", "cached_features", "defaults"]  # least to most degraded
FALLBACKS: tuple[Fallback, ...] = get_args(Fallback)
FRESH = "redis"  # a row's source when Redis answered
CACHED = "cache"  # a row served from the reader's cache while Redis could not answer


class Reason(StrEnum):
    """Why a request was not scored."""

    MODEL_UNAVAILABLE = "model_unavailable"  # no version, unloadable, or features not provided
    MISSING_FEATURES = "missing_features"  # a value is missing and the model has no default
    CORRUPT_FEATURES = "corrupt_features"  # a row holds a value that is not a finite number
    PREDICT_FAILED = "predict_failed"  # the model raised or gave a non-finite score


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the model cannot score: why, in words, and the features it concerns."""

    reason: Reason
    message: str
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchedRow:
    """An entity's row as the caller read it (None: it has none), where it came from and, from
    the cache, how long ago it was read from Redis (the most it can lag Redis)."""

    row: Row | None
    source: str = FRESH
    cache_age_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Routed:
    """A request routed to a usable version: the ids of the entities its vector reads (None:
    the event names none, so it has no row)."""

    event: Event
    variant: str
    experiment: str | None
    model: LoadedModel
    plan: VectorPlan
    ids: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class EntityRow:
    """What a prediction read of one entity: its id, and its row's event time, staleness and
    source (and age, from the cache) when it had one."""

    id: str | None
    found: bool
    as_of: int | None = None
    staleness_ms: int | None = None
    source: str | None = None
    cache_age_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """A request's score, the version and variant that gave it, the values used (defaults
    filled in), the rows read, their oldest ``as_of`` and largest staleness, and the
    fallback level."""

    score: float
    model: str
    version: int
    variant: str
    experiment: str | None
    features: dict[str, float]
    entities: dict[str, EntityRow]
    as_of: int | None
    staleness_ms: int | None
    fallback: Fallback


RowKey = tuple[str, str]  # (entity, id)


class RequestScorer:
    """Routes and scores requests for one model name."""

    def __init__(self, models: ServingModels, catalog: FeatureCatalog) -> None:
        self.models = models
        self.versions = VersionVectors(catalog)

    @property
    def name(self) -> str:
        """The model name served."""
        return self.models.registry.name

    def route(self, events: Sequence[Event]) -> list[Routed | Refusal]:
        """Each event's version and the rows it reads; the registry is looked at first (at
        most once per poll interval), never between the events of one call."""
        self.models.refresh()
        routed: list[Routed | Refusal] = []
        for event in events:
            route = self.models.route(event.user_id)
            model = route.model
            if isinstance(model, ModelError):
                routed.append(Refusal(Reason.MODEL_UNAVAILABLE, str(model)))
                continue
            plan = self.versions.plan(model)
            if isinstance(plan, Problem):
                routed.append(Refusal(Reason.MODEL_UNAVAILABLE, plan.message))
                continue
            ids: dict[str, str | None] = {}
            for entity, entity_id in plan.entity_ids(event).items():
                ids[entity] = entity_id if isinstance(entity_id, str) else None
            routed.append(Routed(event, route.variant, route.experiment, model, plan, ids))
        return routed

    @staticmethod
    def keys(routed: Sequence[Routed | Refusal]) -> list[RowKey]:
        """The rows the routed requests read, each once, in first-use order."""
        keys: dict[RowKey, None] = {}
        for item in routed:
            if isinstance(item, Routed):
                for entity, entity_id in item.ids.items():
                    if entity_id is not None:
                        keys[(entity, entity_id)] = None
        return list(keys)

    def score(self, routed: Sequence[Routed | Refusal], rows: Mapping[RowKey, FetchedRow],
              now_ms: int) -> list[Prediction | Refusal]:
        """The routed requests scored with ``rows`` (every key of :meth:`keys`), read at
        ``now_ms``: one ``predict`` per version."""
        answers: list[Prediction | Refusal | None] = [None] * len(routed)
        groups: dict[tuple[str, int], list[tuple[int, Routed, list[float]]]] = {}
        for index, item in enumerate(routed):
            if isinstance(item, Refusal):
                answers[index] = item
                continue
            found = {entity: fetched.row for entity, entity_id in item.ids.items()
                     if entity_id is not None
                     and (fetched := rows[(entity, entity_id)]).row is not None}
            vector = self.versions.vector(item.model, item.plan, item.event, found, item.ids,
                                          nulls=True)
            if isinstance(vector, Problem):
                answers[index] = self._refusal(item, found, vector)
                continue
            metadata = item.model.metadata
            groups.setdefault((metadata.name, metadata.version), []).append(
                (index, item, vector))
        for group in groups.values():
            model = group[0][1].model
            vectors = np.array([vector for _, _, vector in group], dtype=np.float64)
            filled = self.versions.filled(vectors, model.metadata)
            try:
                scores = model.predict(filled).tolist()
            except Exception as exc:  # a model error answers its requests, never the reader
                failed = Refusal(Reason.PREDICT_FAILED, f"{_version(model)} failed to predict: "
                                 f"{exc or repr(exc)}")
                for index, *_ in group:
                    answers[index] = failed
                continue
            for (index, item, _), values, score in zip(
                    group, filled.tolist(), scores, strict=True):
                if not math.isfinite(score):
                    answers[index] = Refusal(Reason.PREDICT_FAILED,
                                             f"{_version(model)} returned {score}")
                    continue
                answers[index] = self._prediction(item, rows, values, score, now_ms)
        return [answer for answer in answers if answer is not None]

    @staticmethod
    def _prediction(item: Routed, rows: Mapping[RowKey, FetchedRow], values: list[float],
                    score: float, now_ms: int) -> Prediction:
        metadata = item.model.metadata
        entities: dict[str, EntityRow] = {}
        as_of: int | None = None
        staleness: int | None = None
        cached = missing = False
        for entity, entity_id in item.ids.items():
            fetched = rows[(entity, entity_id)] if entity_id is not None else None
            row = fetched.row if fetched is not None else None
            if fetched is None or row is None:
                entities[entity] = EntityRow(entity_id, False)
                missing = True
                continue
            row_as_of = int(row["as_of"])
            stale = max(0, now_ms - row_as_of)
            entities[entity] = EntityRow(entity_id, True, row_as_of, stale, fetched.source,
                                         fetched.cache_age_ms)
            cached = cached or fetched.source == CACHED
            as_of = row_as_of if as_of is None else min(as_of, row_as_of)
            staleness = stale if staleness is None else max(staleness, stale)
        fallback: Fallback = "defaults" if missing else "cached_features" if cached else "none"
        return Prediction(score, metadata.name, metadata.version, item.variant,
                          item.experiment, dict(zip(metadata.features, values, strict=True)),
                          entities, as_of, staleness, fallback)

    @staticmethod
    def _refusal(item: Routed, rows: Mapping[str, Row], problem: Problem) -> Refusal:
        """Why a vector could not be assembled: the missing features (all of them), or a
        value that is not a finite number."""
        if problem.error_class in (ErrorClass.MISSING_FEATURE, ErrorClass.UNKNOWN_USER):
            missing = item.plan.without_default(item.model.metadata.defaults, item.event, rows)
            return Refusal(Reason.MISSING_FEATURES,
                           f"{_version(item.model)} needs {', '.join(missing)}, which "
                           f"{'is' if len(missing) == 1 else 'are'} missing (no row, or a null "
                           f"value) and has no default: {problem.message}", tuple(missing))
        return Refusal(Reason.CORRUPT_FEATURES, problem.message)


def _version(model: LoadedModel) -> str:
    return f"{model.metadata.name} v{model.metadata.version}"
