"""A brute-force oracle for the default feature set, written independently of ``udfs``.

For a user's accepted events and an ``as_of``, every window ``W`` (hop ``h = W/60``) covers the
events with ``(as_of // h + 1) * h - W <= ts <= as_of`` (README, "Window semantics").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def window_ms(name: str) -> int:
    return int(name[:-1]) * UNIT_MS[name[-1]]


def expected_row(events: Iterable[Any], as_of: int,
                 windows: Sequence[str] = ("1m", "5m", "1h", "24h")) -> dict[str, Any]:
    """The exact feature values as of ``as_of`` over ``events`` (objects with the Event fields)."""
    events = list(events)
    row: dict[str, Any] = {}
    for w in windows:
        length = window_ms(w)
        hop = length // 60
        low = (as_of // hop + 1) * hop - length
        inside = [e for e in events if low <= e.ts <= as_of]
        kinds = [e.event_type for e in inside]
        amounts = [e.amount for e in inside if e.event_type == "purchase"]
        row[f"events_{w}"] = len(inside)
        row[f"views_{w}"] = kinds.count("view")
        row[f"clicks_{w}"] = kinds.count("click")
        row[f"purchases_{w}"] = kinds.count("purchase")
        row[f"spend_{w}"] = math.fsum(amounts)
        if w in ("1h", "24h"):
            row[f"avg_spend_{w}"] = math.fsum(amounts) / len(amounts) if amounts else None
            row[f"distinct_items_{w}"] = len({e.item_id for e in inside if e.item_id is not None})
        if w == "1h":
            views = kinds.count("view")
            row["ctr_1h"] = kinds.count("click") / views if views else None
    row["last_event_ts"] = max((e.ts for e in events if e.ts <= as_of), default=None)
    return row


def assert_row_matches(actual: dict[str, Any], expected: dict[str, Any], context: str = "") -> None:
    """Equal feature by feature; floats within 1e-9 relative (summation order differs)."""
    for name, want in expected.items():
        got = actual.get(name)
        if isinstance(want, float) and isinstance(got, float):
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (context, name, got, want)
        else:
            assert got == want, (context, name, got, want)
