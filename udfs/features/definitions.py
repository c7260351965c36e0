"""Feature definitions: data, so adding a feature is one entry.

A :class:`Feature` names a window and an aggregate over that window's totals:

- ``count``: events (of ``event_type``, or all types when None);
- ``sum_amount`` / ``mean_amount``: sum / mean of purchase amounts (mean is null with no purchase);
- ``ratio``: count(``event_type``) / count(``over``), null when the denominator is zero;
- ``distinct_items``: number of distinct item ids;
- ``last_event_ts``: event time of the user's latest event (not windowed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from featurestream.udfs.contract.events import EVENT_TYPES
from featurestream.udfs.features.windows import AMOUNT, PURCHASE, TYPE_INDEX, WindowSpec

KINDS = ("count", "sum_amount", "mean_amount", "ratio", "distinct_items", "last_event_ts")
Value = int | float | None


@dataclass(frozen=True)
class Feature:
    """One materialized feature: ``name = kind(window, event_type[, over])``."""

    name: str
    kind: str
    window: str | None = None
    event_type: str | None = None
    over: str | None = None

    def validate(self) -> None:
        """Raise ValueError when the definition is inconsistent."""
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}; use one of {KINDS}")
        if (self.kind == "last_event_ts") != (self.window is None):
            raise ValueError(f"{self.name}: only last_event_ts has no window")
        for t in (self.event_type, self.over):
            if t is not None and t not in EVENT_TYPES:
                raise ValueError(f"{self.name}: unknown event type {t!r}")
        if self.kind in ("sum_amount", "mean_amount") and self.event_type != "purchase":
            raise ValueError(f"{self.name}: amounts are carried by purchases only")
        if self.kind == "ratio" and (self.event_type is None or self.over is None):
            raise ValueError(f"{self.name}: a ratio needs event_type and over")


def default_features(windows: Sequence[str]) -> tuple[Feature, ...]:
    """The default feature set for the configured windows (see README, "Features")."""
    features: list[Feature] = []
    for w in windows:
        features += [
            Feature(f"events_{w}", "count", w),
            Feature(f"views_{w}", "count", w, "view"),
            Feature(f"clicks_{w}", "count", w, "click"),
            Feature(f"purchases_{w}", "count", w, "purchase"),
            Feature(f"spend_{w}", "sum_amount", w, "purchase"),
        ]
    for w in ("1h", "24h"):
        if w in windows:
            features += [
                Feature(f"avg_spend_{w}", "mean_amount", w, "purchase"),
                Feature(f"distinct_items_{w}", "distinct_items", w),
            ]
    if "1h" in windows:
        features.append(Feature("ctr_1h", "ratio", "1h", "click", over="view"))
    features.append(Feature("last_event_ts", "last_event_ts"))
    return tuple(features)


def window_specs(features: Iterable[Feature]) -> tuple[WindowSpec, ...]:
    """The windows the features need, shortest first; items tracked only where needed."""
    features = list(features)
    for f in features:
        f.validate()
    names = {f.window for f in features if f.window is not None}
    with_items = {f.window for f in features if f.kind == "distinct_items"}
    specs = [WindowSpec.parse(name, name in with_items) for name in names]
    return tuple(sorted(specs, key=lambda s: s.length_ms))


Extractor = Callable[[list[float], dict[str, int] | None, int | None], Value]


def compile_feature(feature: Feature) -> Extractor:
    """A function ``(window totals, window items, last_event_ts) -> value`` for one feature."""
    kind = feature.kind
    if kind == "last_event_ts":
        return lambda totals, items, last_ts: last_ts
    if kind == "distinct_items":
        return lambda totals, items, last_ts: len(items) if items is not None else 0
    if kind == "sum_amount":
        return lambda totals, items, last_ts: float(totals[AMOUNT])
    if kind == "mean_amount":
        return lambda totals, items, last_ts: (
            totals[AMOUNT] / totals[PURCHASE] if totals[PURCHASE] else None
        )
    if kind == "ratio":
        num, den = TYPE_INDEX[feature.event_type], TYPE_INDEX[feature.over]  # type: ignore[index]
        return lambda totals, items, last_ts: totals[num] / totals[den] if totals[den] else None
    if feature.event_type is None:
        return lambda totals, items, last_ts: int(sum(totals[:AMOUNT]))
    index = TYPE_INDEX[feature.event_type]
    return lambda totals, items, last_ts: int(totals[index])
