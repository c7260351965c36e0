"""Reads of feature rows and scores (layout: :mod:`udfs.store.redis_layout`) through the cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from featurestream.serving.breaker import CircuitBreaker
from featurestream.serving.cache import Miss, TTLCache
from featurestream.serving.metrics import Metrics
from featurestream.serving.redis_client import Command, RedisCalls, RedisUnavailable
from featurestream.serving.shaping import Row, ServedRow
from featurestream.udfs.resilience.last_known import LastKnown
from featurestream.udfs.store.redis_layout import (
    Score,
    decode_rows,
    decode_scores,
    entity_key,
    score_key,
)


def _scores(replies: list[list[str]]) -> list[dict[str, Score]]:
    """The scores from HGETALL replies."""
    return [decode_scores(dict(zip(reply[::2], reply[1::2], strict=True)))
            for reply in replies]


def redis_breaker(metrics: Metrics, failures_in_a_row: int, reset_ms: int) -> CircuitBreaker:
    """The breaker in front of Redis: open, it refuses with a RedisUnavailable of kind
    ``circuit_open`` (a 503 at once, or a fallback) instead of waiting out a timeout."""

    def refuse(breaker: CircuitBreaker) -> Exception:
        return RedisUnavailable("circuit_open", "Redis failed repeatedly: circuit breaker open, "
                                f"next try in {breaker.policy.retry_after_ms()} ms")

    return CircuitBreaker("redis", metrics, failures_in_a_row=failures_in_a_row,
                          reset_ms=reset_ms, failures=(RedisUnavailable,), refuse=refuse)


class FeatureStore:
    """Entities' rows and users' scores: one Redis round trip per call for whatever the cache
    lacks, through the Redis circuit breaker. Callers pass a declared entity and checked ids
    (:mod:`.validation`)."""

    def __init__(self, redis: RedisCalls, prefix: str, cache: TTLCache | None,
                 metrics: Metrics, last_known: LastKnown[Row | None] | None = None,
                 breaker: CircuitBreaker | None = None, *, cluster: bool = False) -> None:
        self._redis = redis
        self._prefix = prefix
        self._cluster = cluster  # keys hash-tagged (Redis Cluster)
        self._cache = cache
        self._metrics = metrics
        self._last_known = last_known  # every row read from Redis, for rows_with_fallback
        self._breaker = breaker

    async def rows_with_fallback(self, entity: str, ids: Sequence[str],
                                 max_staleness_ms: int | None) -> list[ServedRow]:
        """Each instance's row in order, from Redis; if Redis fails, the last rows read from it
        when every one was read at most ``max_staleness_ms`` ago (None: no fallback).

        Redis's error when it fails and any row has no such fallback (all or nothing: a batch
        never mixes in rows it cannot vouch for).
        """
        keys = [entity_key(self._prefix, entity, i, cluster=self._cluster) for i in ids]
        try:
            rows: list[Row | None] = await self._read(keys, decode_rows, self._last_known)
        except RedisUnavailable:
            served = self._recall(keys, max_staleness_ms)
            if served is None:
                raise
            return served
        return [ServedRow(row, "redis", None) for row in rows]

    def _recall(self, keys: Sequence[str], max_staleness_ms: int | None) -> list[ServedRow] | None:
        """The rows last read of ``keys``, if all were read at most ``max_staleness_ms`` ago."""
        if max_staleness_ms is None or self._last_known is None:
            return None
        served = []
        for key in keys:
            recalled = self._last_known.recall(key, max_staleness_ms)
            if recalled is None:
                return None
            served.append(ServedRow(recalled.value, "cache", recalled.age_ms))
        return served

    async def scores(self, user_id: str) -> dict[str, Score] | None:
        """The user's latest score per model (None for a user without scores)."""
        [scores] = await self._read([score_key(self._prefix, user_id, cluster=self._cluster)],
                                    _scores)
        return scores

    async def ping(self) -> None:
        """Raise RedisUnavailable unless Redis answers now (never cached)."""
        await self._execute([("PING",)])

    async def _execute(self, commands: list[Command]) -> list[Any]:
        if self._breaker is None:
            return await self._redis.execute(commands)
        refused: RedisUnavailable | None = None
        with self._breaker:
            try:
                return await self._redis.execute(commands)
            except RedisUnavailable as exc:
                if not exc.about_the_data:
                    raise
                refused = exc  # Redis answered: a success for the breaker, an error for us
        assert refused is not None
        raise refused

    async def _read(self, keys: Sequence[str], decode: Callable[[list[list[str]]], list[Any]],
                    remember: LastKnown[Any] | None = None) -> list[Any]:
        """The values of ``keys`` (``decode`` makes them of the non-empty replies, all at
        once), from the cache or one Redis round trip; those read from Redis are also kept in
        ``remember``."""
        unique = list(dict.fromkeys(keys))
        values: dict[str, Any] = {}
        misses: dict[str, Miss] = {}
        if self._cache is not None:
            for key in unique:
                value = self._cache.get(key)
                if isinstance(value, Miss):
                    misses[key] = value
                else:
                    values[key] = value
            self._metrics.cache_hits.inc(len(values))
            self._metrics.cache_misses.inc(len(misses))
        wanted = [k for k in unique if k not in values]
        if wanted:
            replies = await self._execute([("HGETALL", key) for key in wanted])
            decoded = iter(decode([reply for reply in replies if reply]))
            for key, reply in zip(wanted, replies, strict=True):
                values[key] = next(decoded) if reply else None
                if self._cache is not None:
                    self._cache.put(key, values[key], misses[key])
                if remember is not None:
                    remember.remember(key, values[key])
        return [values[key] for key in keys]
