"""Reads of feature rows and scores (layout: :mod:`udfs.store.redis_layout`) through the cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from featurestream.serving.cache import MISS, TTLCache
from featurestream.serving.metrics import Metrics
from featurestream.serving.redis_client import RedisClient
from featurestream.serving.shaping import Row
from featurestream.udfs.store.redis_layout import (
    Score,
    decode_scores,
    decode_values,
    entity_key,
    score_key,
)


def _row(reply: list[str]) -> Row:
    """A feature row from an HGETALL reply ``[field, value, field, value, ...]``."""
    return dict(zip(reply[::2], decode_values(reply[1::2]), strict=True))


def _scores(reply: list[str]) -> dict[str, Score]:
    """The scores from an HGETALL reply."""
    return decode_scores(dict(zip(reply[::2], reply[1::2], strict=True)))


class FeatureStore:
    """Entities' rows and users' scores: one Redis round trip per call for whatever the cache
    lacks. Callers pass a declared entity and checked ids (:mod:`.validation`)."""

    def __init__(self, redis: RedisClient, prefix: str, cache: TTLCache | None,
                 metrics: Metrics) -> None:
        self._redis = redis
        self._prefix = prefix
        self._cache = cache
        self._metrics = metrics

    async def rows(self, entity: str, ids: Sequence[str]) -> list[Row | None]:
        """Each instance's feature row in order (None for one without a row)."""
        prefix = self._prefix
        keys = [entity_key(prefix, entity, i) for i in ids]
        return await self._read(keys, _row)

    async def scores(self, user_id: str) -> dict[str, Score] | None:
        """The user's latest score per model (None for a user without scores)."""
        [scores] = await self._read([score_key(self._prefix, user_id)], _scores)
        return scores

    async def ping(self) -> None:
        """Raise RedisUnavailable unless Redis answers now (never cached)."""
        await self._redis.execute([("PING",)])

    async def _read(self, keys: Sequence[str], decode: Callable[[list[str]], Any]) -> list[Any]:
        unique = list(dict.fromkeys(keys))
        values: dict[str, Any] = {}
        if self._cache is not None:
            for key in unique:
                value = self._cache.get(key)
                if value is not MISS:
                    values[key] = value
            self._metrics.cache_hits.inc(len(values))
            self._metrics.cache_misses.inc(len(unique) - len(values))
        wanted = [k for k in unique if k not in values]
        if wanted:
            replies = await self._redis.execute([("HGETALL", key) for key in wanted])
            for key, reply in zip(wanted, replies, strict=True):
                values[key] = decode(reply) if reply else None
                if self._cache is not None:
                    self._cache.put(key, values[key])
        return [values[key] for key in keys]
