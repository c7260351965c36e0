"""``POST /v1/predict`` and ``/v1/predict/batch``: a request becomes the stream's :class:`Event`,
is routed and scored by :class:`udfs.scoring.request_scorer.RequestScorer` (the scoring job's
routing, vectors and registry) over the rows read now, and the answer says which version and
variant scored it, the values used, the rows' freshness and the fallback level.

Bad input is a 4xx naming the fix, never a 500: a body that is not JSON or not the contract's
type (wrong types, an amount out of range, unknown fields) is a 400, an unknown model a 404
naming the served ones, a body over its limit or a batch over ``FEATURESTREAM_MAX_BATCH_SIZE``
a 413. A model that is missing or cannot be loaded, or that lacks a default for a missing
value, is a 503 saying which (in a batch: that request's entry in ``errors``). A version that
fails to predict, or whose circuit breaker (one per version) is open, hands its requests to the
experiment's other arm (``fallback_model``), else they get that 503.

The model runs inline on the event loop (measured in docs/performance.md: ~50 us of CPU for one
request, ~1-2 ms for 100, all of route, assembly and predict). The versions are loaded when the
worker starts; a version published later is loaded by the first request after the poll
interval, in that request (a few ms for a LightGBM text file, ~0.25 s when its compiled
predictor is first built).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from time import perf_counter
from typing import Any

import msgspec

from featurestream.serving.breaker import ModelBreakers
from featurestream.serving.contract import ErrorBody
from featurestream.serving.metrics import Metrics
from featurestream.serving.predict_contract import (
    PREDICT_BODY_LIMIT,
    PREDICT_ITEM_BYTES,
    BatchItemError,
    EntityRead,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
    PredictResult,
    Timing,
    batch_request,
)
from featurestream.serving.responses import ApiError, JSONResponse
from featurestream.serving.shaping import now_ms
from featurestream.serving.store import FeatureStore
from featurestream.settings import Settings
from featurestream.udfs.contract.events import Event
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.request_scorer import (
    FetchedRow,
    Prediction,
    Refusal,
    RequestScorer,
    Routed,
    RowKey,
)
from featurestream.udfs.scoring.variants import parse_experiment
from featurestream.udfs.scoring.vector import FeatureCatalog

_SINGLE = msgspec.json.Decoder(PredictRequest)


def _ms_since(start: float) -> float:
    """Milliseconds since ``start`` (perf_counter seconds)."""
    return round((perf_counter() - start) * 1000, 3)


class Predictor:
    """The reader's scorer of the configured model (its experiment as the scoring job splits
    it, the registry reloaded as the job reloads it) over the store's rows."""

    def __init__(self, settings: Settings, definitions: Definitions, store: FeatureStore,
                 metrics: Metrics) -> None:
        registry = ModelRegistry(settings.effective_models_dir, settings.model_name,
                                 settings.compiled_predictor)
        models = ServingModels(registry, parse_experiment(settings.experiment), None,
                               settings.model_poll_interval_ms)
        models.refresh()  # loaded (and compiled) now, not by the first request
        self._breakers = ModelBreakers(metrics, failures_in_a_row=settings.breaker_failures,
                                       reset_ms=settings.breaker_reset_ms)
        self._reloads = models.reloads
        self.scorer = RequestScorer(models, FeatureCatalog.from_definitions(definitions),
                                    self._breakers)
        self._store = store
        self._predictions = metrics.predictions
        self._default_type = settings.scored_event_types[0]
        self.max_batch_size = settings.max_batch_size
        self._batch = msgspec.json.Decoder(batch_request(settings.max_batch_size))
        self.max_batch_bytes = PREDICT_BODY_LIMIT + settings.max_batch_size * PREDICT_ITEM_BYTES

    async def predict(self, body: bytes) -> JSONResponse:
        """One request's answer (an ApiError for any 4xx/5xx)."""
        start = perf_counter()
        request = _decode(body, _SINGLE)
        event = self._event(request, "request")
        self._check_model(request)
        [answer], features_ms, model_ms = await self._score([event], [request])
        if isinstance(answer, Refusal):
            raise ApiError(503, _refusal_body(answer), headers={"Retry-After": "1"})
        return JSONResponse(PredictResponse(**_result_fields(answer), timing=Timing(
            _ms_since(start), features_ms, model_ms)))

    async def predict_batch(self, body: bytes) -> JSONResponse:
        """Many requests' answers, in order; a request that cannot be scored is an entry of
        ``errors``, a malformed one fails the whole batch (400)."""
        start = perf_counter()
        batch: PredictBatchRequest = _decode(body, self._batch, self.max_batch_size)
        events = []
        for index, request in enumerate(batch.requests):
            try:
                events.append(self._event(request, f"request-{index}"))
                self._check_model(request)
            except ApiError as exc:  # name the request
                exc.body.message = f"requests[{index}]: {exc.body.message}"
                raise
        answers, features_ms, model_ms = await self._score(events, batch.requests)
        results: list[PredictResult | None] = []
        errors: list[BatchItemError] = []
        for index, answer in enumerate(answers):
            if isinstance(answer, Refusal):
                results.append(None)
                errors.append(BatchItemError(index, 503, answer.reason.value, answer.message,
                                             list(answer.features) or msgspec.UNSET))
            else:
                results.append(PredictResult(**_result_fields(answer)))
        return JSONResponse(PredictBatchResponse(results, errors, Timing(
            _ms_since(start), features_ms, model_ms)))

    async def _score(self, events: list[Event], requests: Sequence[PredictRequest]
                     ) -> tuple[list[Prediction | Refusal], float, float]:
        """Route, read every row the batch needs (one call per entity, concurrently), score."""
        start = perf_counter()
        routed = self.scorer.route(events)
        routing_ms = _ms_since(start)
        by_entity: dict[str, list[str]] = {}
        for entity, entity_id in self.scorer.keys(routed):
            by_entity.setdefault(entity, []).append(entity_id)
        read = perf_counter()
        rows = await self._read(by_entity, _max_staleness(routed, requests))
        features_ms = _ms_since(read)
        scoring = perf_counter()
        answers = self.scorer.score(routed, rows, now_ms())
        models = self.scorer.models
        if models.reloads != self._reloads:  # the rollout changed: forget versions gone
            # (after scoring: a request routed before another's reload, across the read's
            # await, may just have made a breaker for a version no longer live)
            self._reloads = models.reloads
            self._breakers.retain(self.scorer.name, models.rollout.live)
        counts = Counter((a.model, str(a.version), a.variant, a.fallback)
                         for a in answers if isinstance(a, Prediction))
        for labels, count in counts.items():
            self._predictions.labels(*labels).inc(count)
        return answers, features_ms, round(routing_ms + _ms_since(scoring), 3)

    async def _read(self, by_entity: dict[str, list[str]], max_staleness_ms: int | None
                    ) -> dict[RowKey, FetchedRow]:
        entities = list(by_entity)
        reads = [self._store.rows_with_fallback(entity, by_entity[entity], max_staleness_ms)
                 for entity in entities]
        # One entity (the usual user-only model): awaited here, without a task per read.
        replies = [await reads[0]] if len(reads) == 1 else await asyncio.gather(*reads)
        rows: dict[RowKey, FetchedRow] = {}
        for entity, served in zip(entities, replies, strict=True):
            for entity_id, row in zip(by_entity[entity], served, strict=True):
                rows[(entity, entity_id)] = FetchedRow(row.row, row.source, row.staleness_ms)
        return rows

    def _event(self, request: PredictRequest, event_id: str) -> Event:
        """The stream's event for ``request`` (400 for what the event contract refuses)."""
        if request.type is not None and request.event_type is not None \
                and request.type != request.event_type:
            raise _invalid(f"type {request.type!r} and event_type {request.event_type!r} "
                           "differ; send one of them")
        event_type = request.type or request.event_type or self._default_type
        if event_type == "purchase" and request.amount is None:
            raise _invalid("amount is null or missing; a purchase needs an amount")
        return Event(request.event_id or event_id, request.user_id, event_type, request.item_id,
                     request.amount, now_ms() if request.ts is None else request.ts,
                     request.context)

    def _check_model(self, request: PredictRequest) -> None:
        """404 for a model this reader does not serve, naming the one it does."""
        name = self.scorer.name
        if request.model is not None and request.model != name:
            raise ApiError(404, ErrorBody("unknown_model", f"no model {request.model!r} is "
                                          f"served here; known models: {name}", valid=[name]))


def _max_staleness(routed: Sequence[Routed | Refusal], requests: Sequence[PredictRequest]
                   ) -> int | None:
    """The staleness every request of the batch allows (the smallest; None if any allows
    none)."""
    allowed = [r.max_staleness_ms for r, item in zip(requests, routed, strict=True)
               if isinstance(item, Routed)]
    if not allowed or None in allowed:
        return None
    return min(a for a in allowed if a is not None)


def _result_fields(answer: Prediction) -> dict[str, Any]:
    return {
        "score": answer.score, "model": answer.model, "version": answer.version,
        "variant": answer.variant, "experiment": answer.experiment,
        "features": answer.features,
        "entities": {entity: EntityRead(e.id, e.found, e.as_of, e.staleness_ms,
                                        e.source, e.cache_age_ms)  # type: ignore[arg-type]
                     for entity, e in answer.entities.items()},
        "as_of": answer.as_of, "staleness_ms": answer.staleness_ms, "fallback": answer.fallback,
    }


def _refusal_body(refusal: Refusal) -> ErrorBody:
    return ErrorBody(refusal.reason.value, refusal.message)


def _invalid(message: str) -> ApiError:
    return ApiError(400, ErrorBody("invalid_body", message))


def _too_many(count: int, limit: int) -> ApiError:
    return ApiError(413, ErrorBody("batch_too_large", f"{count} requests; at most {limit} per "
                                   "request (FEATURESTREAM_MAX_BATCH_SIZE)", limit=limit))


def _decode(body: bytes, decoder: msgspec.json.Decoder[Any], limit: int | None = None) -> Any:
    """``body`` as the decoder's type, or a 400 naming the field and what it must be (413 for
    a batch over ``limit``, whatever else is wrong)."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        try:  # the typed decoder stops at the first wrong type: the rest may not be JSON
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            data = None  # the type error is the answer
        requests = data.get("requests") if isinstance(data, dict) else None
        if limit is not None and isinstance(requests, list) and len(requests) > limit:
            raise _too_many(len(requests), limit) from None
        detail, _, at = str(exc).partition(" - at `$")
        where = at.rstrip("`").lstrip(".")
        raise _invalid(f"{where}: {detail}" if where else detail) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, ErrorBody("invalid_json", f"the body is not valid JSON: {exc}")
                       ) from None
