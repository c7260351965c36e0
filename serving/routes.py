"""The endpoints, one function each, wrapped for auth, error bodies and latency metrics, and the
route table that also generates the OpenAPI document (:mod:`featurestream.serving.openapi`).

Every entity the definitions declare is served at ``/v1/features/{entity}/{id}`` and
``/v1/features/{entity}/batch``; ``/v1/features/{user_id}`` and ``/v1/features/batch`` are the
user entity's routes with their earlier answers (``user_id``, ``user_ids``).

``/v1/*`` needs ``Authorization: Bearer <FEATURESTREAM_AUTH_TOKEN>`` when a token is set;
``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json`` stay open for probes and scrapers.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from featurestream.serving.contract import (
    USER_ENTITY,
    BatchRequest,
    BatchResponse,
    EntityBatchRequest,
    EntityBatchResponse,
    EntityFeatures,
    ErrorBody,
    Features,
    MaxStalenessMs,
    NamesQuery,
    ReaderContract,
    Scores,
    Status,
)
from featurestream.serving.drift import DriftMonitor, ModelDrift, get_model_drift
from featurestream.serving.metrics import Metrics
from featurestream.serving.predict import Predictor
from featurestream.serving.predict_contract import (
    PREDICT_BODY_LIMIT,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
)
from featurestream.serving.redis_client import RedisUnavailable
from featurestream.serving.responses import ApiError, JSONResponse, error_response
from featurestream.serving.shaping import (
    batch_body,
    entity_batch_body,
    entity_body,
    features_body,
    now_ms,
    scores_body,
)
from featurestream.serving.status import PipelineStatus, StatusBody, get_status, get_ui
from featurestream.serving.store import FeatureStore, ServedRow
from featurestream.serving.validation import (
    check_entity,
    check_entity_id,
    check_user_id,
    parse_batch,
    parse_entity_batch,
    parse_max_staleness,
    parse_names,
)
from featurestream.settings import Settings


@dataclass(frozen=True)
class Reader:
    """What the endpoints share."""

    settings: Settings
    store: FeatureStore
    metrics: Metrics
    contract: ReaderContract  # the entities, their feature names and the batch limits
    openapi: bytes  # the rendered OpenAPI document
    drift: DriftMonitor  # the models' drift against training, from Redis
    status: PipelineStatus  # /v1/status (Flink's jobs, the models) and the /ui page
    predictor: Predictor  # /v1/predict: the configured model scored over the rows read now


Handler = Callable[[Reader, Request], Awaitable[Response]]


async def get_features(reader: Reader, request: Request) -> Response:
    """``GET /v1/features/{user_id}?names=a,b&max_staleness_ms=N``: the user entity's row."""
    check_entity(USER_ENTITY, reader.contract)
    user_id = check_user_id(request.path_params["user_id"])
    names = parse_names(request.query_params.get("names"), reader.contract.feature_names)
    max_staleness = parse_max_staleness(request.query_params.get("max_staleness_ms"))
    [served] = await _served_rows(reader, "/v1/features/{user_id}", USER_ENTITY, [user_id],
                                  max_staleness)
    if served.row is None:
        raise ApiError(404, ErrorBody("unknown_user", f"no features for user {user_id!r}"))
    return JSONResponse(features_body(user_id, served.row, names, now_ms(), served.staleness_ms))


async def batch_features(reader: Reader, request: Request) -> Response:
    """``POST /v1/features/batch`` with ``{"user_ids": [...], "names": [...]?,
    "max_staleness_ms": N?}``."""
    check_entity(USER_ENTITY, reader.contract)
    body = await _read_body(request, reader.contract.max_body_bytes)
    batch = parse_batch(body, reader.contract)
    rows = await _served_rows(reader, "/v1/features/batch", USER_ENTITY, batch.user_ids,
                              batch.max_staleness_ms)
    return JSONResponse(batch_body(batch.user_ids, rows, batch.names, now_ms()))


async def get_entity_features(reader: Reader, request: Request) -> Response:
    """``GET /v1/features/{entity}/{id}?names=a,b&max_staleness_ms=N``."""
    entity = check_entity(request.path_params["entity"], reader.contract)
    entity_id = check_entity_id(request.path_params["id"])
    names = parse_names(request.query_params.get("names"), entity.feature_names)
    max_staleness = parse_max_staleness(request.query_params.get("max_staleness_ms"))
    [served] = await _served_rows(reader, "/v1/features/{entity}/{id}", entity.entity,
                                  [entity_id], max_staleness)
    if served.row is None:
        raise ApiError(404, ErrorBody("unknown_id",
                                      f"no features for {entity.entity} {entity_id!r}"))
    return JSONResponse(entity_body(entity.entity, entity_id, served.row, names, now_ms(),
                                    served.staleness_ms))


async def batch_entity_features(reader: Reader, request: Request) -> Response:
    """``POST /v1/features/{entity}/batch`` with ``{"ids": [...], "names": [...]?,
    "max_staleness_ms": N?}``."""
    entity = check_entity(request.path_params["entity"], reader.contract)
    body = await _read_body(request, reader.contract.max_entity_body_bytes)
    batch = parse_entity_batch(body, entity, reader.contract.max_batch_size)
    rows = await _served_rows(reader, "/v1/features/{entity}/batch", entity.entity, batch.ids,
                              batch.max_staleness_ms)
    return JSONResponse(entity_batch_body(entity.entity, batch.ids, rows, batch.names, now_ms()))


async def _served_rows(reader: Reader, route: str, entity: str, ids: list[str],
                       max_staleness_ms: int | None) -> list[ServedRow]:
    """The rows (:meth:`FeatureStore.rows_with_fallback`); an answer from cache is counted."""
    rows = await reader.store.rows_with_fallback(entity, ids, max_staleness_ms)
    if rows and rows[0].source == "cache":
        reader.metrics.fallbacks.labels(route, "cached_row").inc()
    return rows


async def get_scores(reader: Reader, request: Request) -> Response:
    """``GET /v1/scores/{user_id}``."""
    user_id = check_user_id(request.path_params["user_id"])
    scores = await reader.store.scores(user_id)
    if not scores:
        raise ApiError(404, ErrorBody("unknown_user", f"no scores for user {user_id!r}"))
    return JSONResponse(scores_body(user_id, scores, now_ms()))


async def predict(reader: Reader, request: Request) -> Response:
    """``POST /v1/predict``: one event scored now (:mod:`featurestream.serving.predict`)."""
    return await reader.predictor.predict(await _read_body(request, PREDICT_BODY_LIMIT))


async def predict_batch(reader: Reader, request: Request) -> Response:
    """``POST /v1/predict/batch`` with ``{"requests": [...]}``."""
    predictor = reader.predictor
    return await predictor.predict_batch(await _read_body(request, predictor.max_batch_bytes))


async def healthz(reader: Reader, request: Request) -> Response:
    """``GET /healthz``: the process is up."""
    return JSONResponse(Status("ok"))


async def readyz(reader: Reader, request: Request) -> Response:
    """``GET /readyz``: Redis answers (503 otherwise)."""
    await reader.store.ping()
    return JSONResponse(Status("ready"))


async def metrics(reader: Reader, request: Request) -> Response:
    """``GET /metrics``: Prometheus exposition (the drift gauges computed now, from Redis)."""
    body, content_type = reader.metrics.render()
    return Response(body + await reader.drift.gauges(), media_type=content_type)


async def openapi(reader: Reader, request: Request) -> Response:
    """``GET /openapi.json``."""
    return Response(reader.openapi, media_type="application/json")


@dataclass(frozen=True)
class Endpoint:
    """A route: what serves it, and what the document says of it.

    ``answer`` is the type of the 200 body (in ``media_type``), ``errors`` the other statuses
    it answers with (an :class:`ErrorBody` each), ``request`` the type of its body and
    ``query`` its query parameters' types; a ``{user_id}`` in the path is a ``UserId``, an
    ``{entity}`` one of the declared entities and an ``{id}`` an ``EntityId``.
    """

    path: str
    method: str
    handler: Handler
    summary: str
    answer: Any
    answered: str  # what a 200 means
    errors: tuple[int, ...] = ()
    protected: bool = False  # behind the bearer token when one is set
    request: type | None = None
    query: Mapping[str, Any] = field(default_factory=dict)
    media_type: str = "application/json"


FEATURES_QUERY = {"names": NamesQuery, "max_staleness_ms": MaxStalenessMs}
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("/v1/features/batch", "POST", batch_features,
             "Many users' features in one Redis round trip.", BatchResponse,
             "Results in request order; missing users have found=false.",
             (400, 401, 413, 503), protected=True, request=BatchRequest),
    Endpoint("/v1/features/{user_id}", "GET", get_features,
             "A user's features with their freshness.", Features, "Found.",
             (400, 401, 404, 503), protected=True, query=FEATURES_QUERY),
    Endpoint("/v1/features/{entity}/batch", "POST", batch_entity_features,
             "Many instances of an entity in one Redis round trip.", EntityBatchResponse,
             "Results in request order; missing ids have found=false.",
             (400, 401, 404, 413, 503), protected=True, request=EntityBatchRequest),
    Endpoint("/v1/features/{entity}/{id}", "GET", get_entity_features,
             "An entity instance's features with their freshness.", EntityFeatures, "Found.",
             (400, 401, 404, 503), protected=True, query=FEATURES_QUERY),
    Endpoint("/v1/scores/{user_id}", "GET", get_scores, "A user's latest score per model.",
             Scores, "Found.", (400, 401, 404, 503), protected=True),
    Endpoint("/v1/predict", "POST", predict,
             "Score an event now, as the scoring job would: the model's version and variant, "
             "the values used, the rows' freshness and the fallback level.", PredictResponse,
             "Scored.", (400, 401, 404, 413, 503), protected=True, request=PredictRequest),
    Endpoint("/v1/predict/batch", "POST", predict_batch,
             "Score many events with one read of their rows.", PredictBatchResponse,
             "Results in request order; a request not scored is null with its entry in errors.",
             (400, 401, 404, 413, 503), protected=True, request=PredictBatchRequest),
    Endpoint("/v1/models/{name}/drift", "GET", get_model_drift,
             "Each live version's drift against its training data over the drift window.",
             ModelDrift, "The versions live or with samples in the window.",
             (401, 404, 503), protected=True),
    Endpoint("/v1/status", "GET", get_status,
             "The pipeline now: Flink's jobs (rates, dead letters, freshness, lag, checkpoints) "
             "and the models (split, drift).", StatusBody,
             "Flink unreachable still answers 200 (flink.reachable=false).",
             (401,), protected=True),
    Endpoint("/ui", "GET", get_ui, "The status page (polls /v1/status; a token goes in the "
             "URL fragment: /ui#token=...).", str, "HTML.", media_type="text/html"),
    Endpoint("/healthz", "GET", healthz, "The process is up.", Status, "Up."),
    Endpoint("/readyz", "GET", readyz, "Redis answers.", Status, "Ready.", (503,)),
    Endpoint("/metrics", "GET", metrics, "Prometheus metrics.", str, "Exposition text.",
             media_type="text/plain"),
    Endpoint("/openapi.json", "GET", openapi, "This document.", dict[str, Any], "OpenAPI 3.1."),
)


def build_routes(reader: Reader) -> list[Route]:
    """Starlette routes for :data:`ROUTES`."""
    token = reader.settings.auth_token.get_secret_value()
    return [Route(e.path, _endpoint(reader, e.path, e.handler, token if e.protected else ""),
                  methods=[e.method])
            for e in ROUTES]


def _endpoint(reader: Reader, route: str, handler: Handler,
              token: str) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` behind the token check, with errors as JSON and its latency measured."""
    latency = reader.metrics.latency
    expected = f"Bearer {token}".encode()

    async def endpoint(request: Request) -> Response:
        start = perf_counter()
        try:
            if token and not hmac.compare_digest(
                    request.headers.get("authorization", "").encode(), expected):
                raise ApiError(401, ErrorBody("unauthorized",
                                              "send Authorization: Bearer <token>"),
                               headers={"WWW-Authenticate": "Bearer"})
            response = await handler(reader, request)
        except ApiError as exc:
            response = error_response(exc)
        except RedisUnavailable as exc:
            reader.metrics.redis_errors.labels(exc.kind).inc()
            response = error_response(ApiError(503, ErrorBody("redis_unavailable", str(exc)),
                                               headers={"Retry-After": "1"}))
        latency.labels(route, str(response.status_code)).observe(perf_counter() - start)
        return response

    return endpoint


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 as soon as it exceeds ``limit`` bytes."""
    too_large = ApiError(413, ErrorBody("body_too_large", f"the body exceeds {limit} bytes",
                                        limit=limit))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
