"""Answers (the contract's types), with freshness computed at read time: pure functions of a
row and "now".

- ``staleness_ms`` = now - ``as_of``: how far the served values lag the wall clock. A row is
  the user's features as of event time ``as_of`` (see README, "Features and window
  semantics"); it does not move while the user is idle and no window has anything to expire.
- ``seconds_since_last_event`` = (now - ``last_event_ts``) / 1000.
- ``stale`` and ``cache_age_ms``, only for a row served from this reader's last read of it
  while Redis is unavailable (``max_staleness_ms``): ms since that read.

Both are clamped at zero (an event time ahead of this clock is "now").
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Literal, TypeVar

import msgspec
from msgspec import UNSET

from featurestream.serving.contract import (
    BatchResponse,
    BatchResult,
    EntityBatchResponse,
    EntityBatchResult,
    EntityFeatures,
    Features,
    Scores,
    ServedScore,
)
from featurestream.udfs.store.redis_layout import ROW_META_FIELDS, WARMING_UP, RowValue, Score

Row = dict[str, RowValue]  # a row as the store decodes it
ReadRow = Mapping[str, RowValue]  # what the shaping functions read of one
_Answer = TypeVar("_Answer", bound=Features)
_EntityAnswer = TypeVar("_EntityAnswer", bound=EntityFeatures)


class ServedRow(msgspec.Struct, frozen=True):
    """An instance's row as served: read from Redis now (``source`` "redis", ``staleness_ms``
    None), or, while Redis is down, the last one read (``source`` "cache", ``staleness_ms`` =
    ms since it was read from Redis). ``row`` None: the instance has no row."""

    row: Row | None
    source: Literal["redis", "cache"]
    staleness_ms: int | None


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def staleness_ms(as_of: Any, now: int) -> int | None:
    """``now - as_of`` in ms, at least 0; None without ``as_of``."""
    return None if as_of is None else max(0, now - int(as_of))


def seconds_since(ts_ms: Any, now: int) -> float | None:
    """Seconds from ``ts_ms`` to ``now`` (ms precision), at least 0; None without a time."""
    return None if ts_ms is None else max(0, now - int(ts_ms)) / 1000


def features_body(user_id: str, row: ReadRow, names: Sequence[str] | None, now: int,
                  cache_age_ms: int | None = None) -> Features:
    """A user's features (all, or ``names``) with the row's freshness; ``cache_age_ms`` given:
    served from cache, marked stale."""
    return _features(Features, user_id, row, names, now, cache_age_ms)


def batch_body(user_ids: Sequence[str], rows: Sequence[ServedRow], names: Sequence[str] | None,
               now: int) -> BatchResponse:
    """Results in request order; each says whether the user was found."""
    return BatchResponse([
        BatchResult(user_id=user_id, found=False, **_stale(served.staleness_ms))
        if served.row is None
        else _features(BatchResult, user_id, served.row, names, now, served.staleness_ms)
        for user_id, served in zip(user_ids, rows, strict=True)])


def entity_body(entity: str, entity_id: str, row: ReadRow, names: Sequence[str] | None,
                now: int, cache_age_ms: int | None = None) -> EntityFeatures:
    """An entity instance's features (all, or ``names``) with the row's freshness;
    ``cache_age_ms`` given: served from cache, marked stale."""
    return _entity_features(EntityFeatures, entity, entity_id, row, names, now, cache_age_ms)


def entity_batch_body(entity: str, ids: Sequence[str], rows: Sequence[ServedRow],
                      names: Sequence[str] | None, now: int) -> EntityBatchResponse:
    """Results in request order; each says whether the instance was found."""
    return EntityBatchResponse([
        EntityBatchResult(entity=entity, id=entity_id, found=False,
                          **_stale(served.staleness_ms))
        if served.row is None
        else _entity_features(EntityBatchResult, entity, entity_id, served.row, names, now,
                              served.staleness_ms)
        for entity_id, served in zip(ids, rows, strict=True)])


def scores_body(user_id: str, scores: Mapping[str, Score], now: int) -> Scores:
    """The latest score per model, each with its staleness; ``as_of`` is the newest one's."""
    as_of = max(s.as_of for s in scores.values())
    return Scores(user_id, as_of, max(0, now - as_of), {
        model: ServedScore(**asdict(s), staleness_ms=max(0, now - s.as_of))
        for model, s in sorted(scores.items())})


def _stale(cache_age_ms: int | None) -> dict[str, Any]:
    """The answer's ``stale`` and ``cache_age_ms`` for a row served from cache (else none)."""
    return {} if cache_age_ms is None else {"stale": True, "cache_age_ms": cache_age_ms}


def _features(answer: type[_Answer], user_id: str, row: ReadRow, names: Sequence[str] | None,
              now: int, cache_age_ms: int | None) -> _Answer:
    features = _selected(row, names)
    # Any: the jobs write as_of and updated_at as integers, warming_up as an object
    # (udfs/store/redis_layout.py).
    as_of: Any = row.get("as_of")
    updated_at: Any = row.get("updated_at")
    warming_up: Any = row.get(WARMING_UP) or UNSET
    return answer(user_id, as_of, updated_at, staleness_ms(as_of, now),
                  seconds_since(row.get("last_event_ts"), now), features, warming_up,
                  **_stale(cache_age_ms))


def _entity_features(answer: type[_EntityAnswer], entity: str, entity_id: str, row: ReadRow,
                     names: Sequence[str] | None, now: int,
                     cache_age_ms: int | None) -> _EntityAnswer:
    features = _selected(row, names)
    as_of: Any = row.get("as_of")
    updated_at: Any = row.get("updated_at")
    warming_up: Any = row.get(WARMING_UP) or UNSET
    return answer(entity, entity_id, as_of, updated_at, staleness_ms(as_of, now),
                  seconds_since(row.get("last_event_ts"), now), features, warming_up,
                  **_stale(cache_age_ms))


def _selected(row: ReadRow, names: Sequence[str] | None) -> dict[str, Any]:
    """The row's features: ``names`` in their order (a repeated name: its first place), or
    all of them without the meta fields."""
    if names:
        return {name: row.get(name) for name in names}
    features = dict(row)
    for meta in ROW_META_FIELDS:
        features.pop(meta, None)
    return features
