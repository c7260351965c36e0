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
``cached_features`` (a row came from the reader's cache because Redis could not answer),
``defaults`` (an entity the model reads has no row, so its features took the model's defaults:
what the stream's scores call ``features_missing``) or ``fallback_model`` (the version the
request was routed to failed to predict, or its circuit breaker is open, so the experiment's
other arm scored it). A null value in a row that exists (a mean over no purchases) also takes
its default, as in the stream, but is the feature's own value, not a fallback. A request that
cannot be scored is a :class:`Refusal` naming why.

Circuit breakers are per version (a :class:`ModelGuard`): one broken canary arm must not take
the other arms down with it. The per-request records are frozen ``msgspec.Struct``s: built
several times per request, they cost 0.26 µs each against 2 µs for a frozen dataclass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Literal, Protocol, get_args

import msgspec
import numpy as np

from featurestream.udfs.contract.events import Event
from featurestream.udfs.scoring.assembly import VersionVectors
from featurestream.udfs.scoring.live_models import Route, ServingModels
from featurestream.udfs.scoring.model_registry import LoadedModel, ModelError
from featurestream.udfs.scoring.vector import FeatureCatalog, Row, VectorPlan
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem

Fallback = Literal["none", "cached_features", "defaults", "fallback_model"]  # least to most
FALLBACKS: tuple[Fallback, ...] = get_args(Fallback)
FRESH = "redis"  # a row's source when Redis answered
CACHED = "cache"  # a row served from the reader's cache while Redis could not answer


class Reason(StrEnum):
    """Why a request was not scored."""

    MODEL_UNAVAILABLE = "model_unavailable"  # no version, unloadable, or features not provided
    MISSING_FEATURES = "missing_features"  # a value is missing and the model has no default
    CORRUPT_FEATURES = "corrupt_features"  # a row holds a value that is not a finite number
    PREDICT_FAILED = "predict_failed"  # the model raised or gave a non-finite score


class Refusal(msgspec.Struct, frozen=True):
    """A request the model cannot score: why, in words, and the features it concerns."""

    reason: Reason
    message: str
    features: tuple[str, ...] = ()


class FetchedRow(msgspec.Struct, frozen=True):
    """An entity's row as the caller read it (None: it has none), where it came from and, from
    the cache, how long ago it was read from Redis (the most it can lag Redis)."""

    row: Row | None
    source: str = FRESH
    cache_age_ms: int | None = None


class Routed(msgspec.Struct, frozen=True):
    """A request routed to a usable version: the ids of the entities its vector reads (None:
    the event names none, so it has no row)."""

    event: Event
    variant: str
    experiment: str | None
    model: LoadedModel
    plan: VectorPlan
    ids: dict[str, str | None]


class EntityRow(msgspec.Struct, frozen=True):
    """What a prediction read of one entity: its id, and its row's event time, staleness and
    source (and age, from the cache) when it had one."""

    id: str | None
    found: bool
    as_of: int | None = None
    staleness_ms: int | None = None
    source: str | None = None
    cache_age_ms: int | None = None


class Prediction(msgspec.Struct, frozen=True):
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


class ModelGuard(Protocol):
    """A circuit breaker per model version: asked before each predict, told its outcome (a
    raise or a non-finite score is a failure)."""

    def admit(self, model: LoadedModel) -> bool:
        """Whether ``model`` may predict now (False: its breaker is open)."""

    def succeeded(self, model: LoadedModel) -> None:
        """``model`` predicted."""

    def failed(self, model: LoadedModel) -> None:
        """``model`` raised or gave a non-finite score."""

    def retry_after_ms(self, model: LoadedModel) -> int:
        """How long until ``model``'s breaker lets a probe through."""


class _Open(Exception):
    """A version's breaker is open: its requests go to the fallback without predicting."""


Member = tuple[int, Routed]  # (the request's index, its route)


class RequestScorer:
    """Routes and scores requests for one model name (``guard``: the versions' breakers)."""

    def __init__(self, models: ServingModels, catalog: FeatureCatalog,
                 guard: ModelGuard | None = None) -> None:
        self.models = models
        self.versions = VersionVectors(catalog)
        self.guard = guard

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
        ``now_ms``: one ``predict`` per version. Requests whose version fails to predict (or
        whose breaker is open) are scored by the experiment's other arm, if there is one."""
        answers: list[Prediction | Refusal | None] = [None] * len(routed)
        groups: dict[tuple[str, int], list[Member]] = {}
        for index, item in enumerate(routed):
            if isinstance(item, Refusal):
                answers[index] = item
            else:
                metadata = item.model.metadata
                groups.setdefault((metadata.name, metadata.version), []).append((index, item))
        for members in groups.values():
            failed = self._predict(members, rows, now_ms, answers, "none")
            if failed is not None:
                self._fall_back(members[0][1].model, *failed, rows, now_ms, answers)
        return [answer for answer in answers if answer is not None]

    def _predict(self, members: list[Member], rows: Mapping[RowKey, FetchedRow], now_ms: int,
                 answers: list[Prediction | Refusal | None], fallback: Fallback
                 ) -> tuple[list[Member], str] | None:
        """Answer ``members`` (all routed to one model) in ``answers``; the members the model
        failed, and why, if it failed (or its breaker is open)."""
        model = members[0][1].model
        ready: list[tuple[Member, list[float]]] = []
        for member in members:
            index, item = member
            found = {entity: fetched.row for entity, entity_id in item.ids.items()
                     if entity_id is not None and (fetched := rows.get((entity, entity_id)))
                     is not None and fetched.row is not None}
            vector = self.versions.vector(model, item.plan, item.event, found, item.ids,
                                          nulls=True)
            if isinstance(vector, Problem):
                answers[index] = self._refusal(item, found, vector)
            else:
                ready.append((member, vector))
        if not ready:
            return None
        filled = self.versions.filled(np.array([v for _, v in ready], dtype=np.float64),
                                      model.metadata)
        try:
            if self.guard is not None and not self.guard.admit(model):
                raise _Open(f"{_version(model)} failed repeatedly: circuit breaker open, next "
                            f"try in {self.guard.retry_after_ms(model)} ms")
            scores = model.predict(filled).tolist()
        except _Open as exc:
            return [member for member, _ in ready], str(exc)
        except Exception as exc:  # a model error answers its requests, never the reader
            self._report(model, ok=False)
            return ([member for member, _ in ready],
                    f"{_version(model)} failed to predict: {exc or repr(exc)}")
        failed: list[Member] = []
        for (member, _), values, score in zip(ready, filled.tolist(), scores, strict=True):
            if math.isfinite(score):
                answers[member[0]] = self._prediction(member[1], rows, values, score, now_ms,
                                                      fallback)
            else:
                failed.append(member)
        self._report(model, ok=not failed)
        return (failed, f"{_version(model)} returned a non-finite score") if failed else None

    def _fall_back(self, model: LoadedModel, failed: list[Member], why: str,
                   rows: Mapping[RowKey, FetchedRow], now_ms: int,
                   answers: list[Prediction | Refusal | None]) -> None:
        """Score ``failed`` with the fallback version (rows it reads that were not read count
        as missing), else refuse them saying why."""
        route = self.models.fallback(model.metadata.version)
        rerouted = self._reroute(route, failed) if route is not None else None
        if rerouted is None:
            for index, _ in failed:
                answers[index] = Refusal(Reason.PREDICT_FAILED, why)
            return
        again = self._predict(rerouted, rows, now_ms, answers, "fallback_model")
        if again is not None:
            for index, _ in again[0]:
                answers[index] = Refusal(Reason.PREDICT_FAILED, f"{why}; its fallback: {again[1]}")

    def _reroute(self, route: Route, members: list[Member]) -> list[Member] | None:
        model = route.model
        if not isinstance(model, LoadedModel):
            return None
        plan = self.versions.plan(model)
        if isinstance(plan, Problem):
            return None
        rerouted: list[Member] = []
        for index, item in members:
            ids = {entity: entity_id if isinstance(entity_id, str) else None
                   for entity, entity_id in plan.entity_ids(item.event).items()}
            rerouted.append((index, Routed(item.event, route.variant, route.experiment, model,
                                           plan, ids)))
        return rerouted

    def _report(self, model: LoadedModel, ok: bool) -> None:
        if self.guard is not None:
            (self.guard.succeeded if ok else self.guard.failed)(model)

    @staticmethod
    def _prediction(item: Routed, rows: Mapping[RowKey, FetchedRow], values: list[float],
                    score: float, now_ms: int, level: Fallback) -> Prediction:
        metadata = item.model.metadata
        entities: dict[str, EntityRow] = {}
        as_of: int | None = None
        staleness: int | None = None
        cached = missing = False
        for entity, entity_id in item.ids.items():
            fetched = rows.get((entity, entity_id)) if entity_id is not None else None
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
        fallback: Fallback = (level if level != "none" else "defaults" if missing
                              else "cached_features" if cached else "none")
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
