"""Response bodies, with freshness computed at read time (pure functions of a row and "now").

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
from typing import Any

from featurestream.udfs.store.redis_layout import ROW_META_FIELDS, FeatureValue, Score

Row = dict[str, FeatureValue]


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def staleness_ms(as_of: FeatureValue, now: int) -> int | None:
    """``now - as_of`` in ms, at least 0; None without ``as_of``."""
    return None if as_of is None else max(0, now - int(as_of))


def seconds_since(ts_ms: FeatureValue, now: int) -> float | None:
    """Seconds from ``ts_ms`` to ``now`` (ms precision), at least 0; None without a time."""
    return None if ts_ms is None else max(0, now - int(ts_ms)) / 1000


def features_body(user_id: str, row: Row, names: Sequence[str] | None,
                  now: int) -> dict[str, Any]:
    """A user's features (all, or ``names``) with the row's freshness."""
    if names:
        features = {name: row.get(name) for name in names}
    else:
        features = row.copy()
        for meta in ROW_META_FIELDS:
            features.pop(meta, None)
    as_of = row.get("as_of")
    return {
        "user_id": user_id,
        "as_of": as_of,
        "updated_at": row.get("updated_at"),
        "staleness_ms": staleness_ms(as_of, now),
        "seconds_since_last_event": seconds_since(row.get("last_event_ts"), now),
        "features": features,
    }


def batch_body(user_ids: Sequence[str], rows: Sequence[Row | None],
               names: Sequence[str] | None, now: int) -> dict[str, Any]:
    """Results in request order; each says whether the user was found."""
    results = []
    for user_id, row in zip(user_ids, rows, strict=True):
        if row is None:
            results.append({"user_id": user_id, "found": False})
        else:
            result = features_body(user_id, row, names, now)
            result["found"] = True
            results.append(result)
    return {"results": results}


def scores_body(user_id: str, scores: Mapping[str, Score], now: int) -> dict[str, Any]:
    """The latest score per model, each with its staleness; ``as_of`` is the newest one's."""
    as_of = max(s.as_of for s in scores.values())
    return {
        "user_id": user_id,
        "as_of": as_of,
        "staleness_ms": staleness_ms(as_of, now),
        "scores": {model: asdict(s) | {"staleness_ms": staleness_ms(s.as_of, now)}
                   for model, s in sorted(scores.items())},
    }
