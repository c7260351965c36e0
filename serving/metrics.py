"""Prometheus metrics of the reader: latency by route, Redis errors, cache hits and misses,
circuit breakers and the fallbacks served.

``featurestream serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports
prometheus_client, so every worker process writes its values there and ``/metrics`` (answered
by any one worker) adds them all up; an app built in-process keeps its own registry.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Sub-millisecond resolution where the reader lives, up to the Redis timeout and beyond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0)


class Metrics:
    """The reader's metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "featurestream_reader_request_seconds", "Request latency by route and status.",
            ["route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.redis_errors = Counter(
            "featurestream_reader_redis_errors", "Failed Redis calls by kind (timeout, "
            "connection, reply; circuit_open: refused by the open circuit breaker without "
            "calling).", ["kind"], registry=self.registry)
        self.cache_hits = Counter(
            "featurestream_reader_cache_hits", "Keys answered from the in-process cache.",
            registry=self.registry)
        self.cache_misses = Counter(
            "featurestream_reader_cache_misses", "Keys the cache did not hold (read from Redis).",
            registry=self.registry)
        # livemax: across workers, the worst state a live one is in
        self.breaker_state = Gauge(
            "featurestream_reader_breaker_state", "Circuit breaker state by dependency "
            "(0 closed, 1 half-open, 2 open).", ["dependency"], multiprocess_mode="livemax",
            registry=self.registry)
        self.breaker_transitions = Counter(
            "featurestream_reader_breaker_transitions", "Circuit breaker transitions by "
            "dependency and the state entered.", ["dependency", "state"], registry=self.registry)
        self.fallbacks = Counter(
            "featurestream_reader_fallbacks", "Answers served from a fallback by route and "
            "level (cached_row: rows last read from Redis).", ["route", "level"],
            registry=self.registry)
        self.predictions = Counter(
            "featurestream_reader_predictions", "Predictions (/v1/predict) by model, version, "
            "variant and fallback (none, cached_features, defaults, fallback_model).",
            ["model", "version", "variant", "fallback"], registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (all workers' values when multiprocess)."""
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
