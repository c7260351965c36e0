"""Answers (the contract's types), with freshness computed at read time: pure functions of a
row and "now".

- ``staleness_ms`` = now - ``as_of``: how far the served values lag the wall clock. A row is
  the user's features as of event time ``as_of`` (see README, "Features and window
  semantics"); it does not move while the user is idle and no window has anything to expire.
- ``seconds_since_last_event`` = (now - ``last_event_ts``) / 1000.

Both are clamped at zero (an event time ahead of this clock is "now").
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from featurestream.serving.contract import (
    BatchResponse,
    BatchResult,
    Features,
    Scores,
    ServedScore,
)
from featurestream.udfs.store.redis_layout import ROW_META_FIELDS, FeatureValue, Score

Row = dict[str, FeatureValue]
_Answer = TypeVar("_Answer", bound=Features)


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def staleness_ms(as_of: FeatureValue, now: int) -> int | None:
    """``now - as_of`` in ms, at least 0; None without ``as_of``."""
    return None if as_of is None else max(0, now - int(as_of))


def seconds_since(ts_ms: FeatureValue, now: int) -> float | None:
    """Seconds from ``ts_ms`` to ``now`` (ms precision), at least 0; None without a time."""
    return None if ts_ms is None else max(0, now - int(ts_ms)) / 1000


def features_body(user_id: str, row: Row, names: Sequence[str] | None, now: int) -> Features:
    """A user's features (all, or ``names``) with the row's freshness."""
    return _features(Features, user_id, row, names, now)


def batch_body(user_ids: Sequence[str], rows: Sequence[Row | None],
               names: Sequence[str] | None, now: int) -> BatchResponse:
    """Results in request order; each says whether the user was found."""
    return BatchResponse([
        BatchResult(user_id=user_id, found=False) if row is None
        else _features(BatchResult, user_id, row, names, now)
        for user_id, row in zip(user_ids, rows, strict=True)])


def scores_body(user_id: str, scores: Mapping[str, Score], now: int) -> Scores:
    """The latest score per model, each with its staleness; ``as_of`` is the newest one's."""
    as_of = max(s.as_of for s in scores.values())
    return Scores(user_id, as_of, max(0, now - as_of), {
        model: ServedScore(**asdict(s), staleness_ms=max(0, now - s.as_of))
        for model, s in sorted(scores.items())})


def _features(answer: type[_Answer], user_id: str, row: Row, names: Sequence[str] | None,
              now: int) -> _Answer:
    if names:
        features = {name: row.get(name) for name in names}  # a repeated name: its first place
    else:
        features = row.copy()
        for meta in ROW_META_FIELDS:
            features.pop(meta, None)
    # Any: the jobs write as_of and updated_at as integers (udfs/store/redis_layout.py).
    as_of: Any = row.get("as_of")
    updated_at: Any = row.get("updated_at")
    return answer(user_id, as_of, updated_at, staleness_ms(as_of, now),
                  seconds_since(row.get("last_event_ts"), now), features)
