"""Prometheus metrics of the reader: latency by route, Redis errors, cache hits and misses.

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
            "featurestream_reader_redis_errors", "Failed Redis calls by kind "
            "(timeout, connection, reply).", ["kind"], registry=self.registry)
        self.cache_hits = Counter(
            "featurestream_reader_cache_hits", "Keys answered from the in-process cache.",
            registry=self.registry)
        self.cache_misses = Counter(
            "featurestream_reader_cache_misses", "Keys the cache did not hold (read from Redis).",
            registry=self.registry)
        self.predictions = Counter(
            "featurestream_reader_predictions", "Predictions (/v1/predict) by model, version, "
            "variant and fallback (none, cached_features, defaults).",
            ["model", "version", "variant", "fallback"], registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (all workers' values when multiprocess)."""
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
