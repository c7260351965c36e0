"""The app factory: settings in, a Starlette app out; each worker logs its start and stop."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from featurestream.serving.cache import TTLCache
from featurestream.serving.contract import ErrorBody, ReaderContract
from featurestream.serving.drift import DriftMonitor
from featurestream.serving.entities import reader_definitions, served_entities
from featurestream.serving.metrics import Metrics
from featurestream.serving.openapi import openapi_document
from featurestream.serving.predict import Predictor
from featurestream.serving.redis_client import RedisClient, RedisUnavailable, parse_redis_url
from featurestream.serving.redis_cluster_client import ClusterClient, check_cluster_settings
from featurestream.serving.responses import ApiError, error_response
from featurestream.serving.routes import ROUTES, Reader, build_routes
from featurestream.serving.status import PipelineStatus
from featurestream.serving.store import FeatureStore, redis_breaker
from featurestream.serving.tracking import InvalidationListener
from featurestream.settings import Settings
from featurestream.udfs.resilience.last_known import LastKnown

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Starlette:
    """The reader for ``settings`` and the definitions they name (a DefinitionError if those
    are wrong); Redis is first contacted at start-up, not here."""
    definitions = reader_definitions(settings)
    contract = ReaderContract(served_entities(definitions), settings.max_batch_size)
    check_cluster_settings(settings)
    target, timeout_s = parse_redis_url(settings.redis_url), settings.redis_timeout_ms / 1000
    redis = (ClusterClient(target, timeout_s) if settings.redis_cluster
             else RedisClient(target, timeout_s))
    cache = (TTLCache(settings.cache_ttl_ms, settings.cache_max_entries,
                      invalidated=settings.cache_invalidation)
             if settings.cache_ttl_ms else None)
    metrics = Metrics()
    listener = (InvalidationListener(redis, cache, metrics)
                if cache and settings.cache_invalidation and isinstance(redis, RedisClient)
                else None)
    auth = bool(settings.auth_token.get_secret_value())
    document = openapi_document(ROUTES, contract, auth)
    drift = DriftMonitor(settings, redis, metrics)
    store = FeatureStore(redis, settings.redis_key_prefix, cache, metrics,
                         LastKnown(settings.fallback_max_entries),
                         redis_breaker(metrics, settings.breaker_failures,
                                       settings.breaker_reset_ms),
                         cluster=settings.redis_cluster)
    reader = Reader(settings=settings, store=store,
                    metrics=metrics, contract=contract, openapi=msgspec.json.encode(document),
                    drift=drift, status=PipelineStatus(settings, drift),
                    predictor=Predictor(settings, definitions, store, metrics))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await reader.store.ping()
            state = "reachable"
        except RedisUnavailable as exc:
            state = f"not reachable yet ({exc}); /readyz answers 503 until it is"
        log.info("reader worker %d: started; redis at %s %s; entities %s; auth %s; cache %s",
                 os.getpid(), redis.describe(), state, ", ".join(contract.entity_names),
                 "on" if auth else "off", "off" if not cache else f"{settings.cache_ttl_ms} ms"
                 + (" + invalidation" if listener else ""))
        if listener:
            listener.start()
        yield
        if listener:
            await listener.stop()
        await redis.close()
        log.info("reader worker %d: stopped", os.getpid())

    return Starlette(routes=build_routes(reader), lifespan=lifespan, exception_handlers={
        HTTPException: _http_error, Exception: _internal_error})


def app_from_env() -> Starlette:
    """The worker entry point used by ``featurestream serve`` (settings from the environment)."""
    return create_app(Settings.from_env())


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods, as JSON."""
    assert isinstance(exc, HTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return error_response(ApiError(exc.status_code, ErrorBody(code, message), exc.headers))


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug, as JSON (the traceback goes to the log)."""
    return error_response(ApiError(500, ErrorBody("internal",
                                                  "internal error; see the reader's log")))
