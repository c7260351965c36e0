"""The built-in definitions: today's user features over the built-in events contract.

Used when ``FEATURESTREAM_DEFINITIONS`` is empty. They reproduce the feature set of earlier
releases exactly (names, values and the ``<prefix>user:<id>`` Redis layout).
"""

from __future__ import annotations

from collections.abc import Sequence

from featurestream.udfs.definitions.filters import eq
from featurestream.udfs.definitions.model import (
    Definitions,
    Entity,
    Feature,
    FeatureGroup,
    Source,
    validate,
)

BUILTIN_SCHEMA = "user_event"  # schemas/user_event.avsc: decoded with its documented rules
EVENT_FIELDS = {"event_id": "string", "user_id": "string", "event_type": "string",
                "item_id": "string?", "amount": "double?", "ts": "long", "context": "other"}
USER = Entity("user", keys=("user_id",))
ITEM = Entity("item", keys=("item_id",))


def events_source(topic: str) -> Source:
    """The built-in events contract on ``topic``."""
    return Source("events", topic=topic, timestamp="ts", fields=EVENT_FIELDS,
                  avro=BUILTIN_SCHEMA)


def user_features(windows: Sequence[str]) -> tuple[Feature, ...]:
    """The default user features for the configured windows (see docs/features.md)."""
    purchase = eq("event_type", "purchase")
    features: list[Feature] = []
    for w in windows:
        features += [
            Feature(f"events_{w}", "count", window=w),
            Feature(f"views_{w}", "count", window=w, where=eq("event_type", "view")),
            Feature(f"clicks_{w}", "count", window=w, where=eq("event_type", "click")),
            Feature(f"purchases_{w}", "count", window=w, where=purchase),
            Feature(f"spend_{w}", "sum", field="amount", window=w, where=purchase),
        ]
    for w in ("1h", "24h"):
        if w in windows:
            features += [
                Feature(f"avg_spend_{w}", "mean", field="amount", window=w, where=purchase),
                Feature(f"distinct_items_{w}", "distinct", field="item_id", window=w),
            ]
    if "1h" in windows:
        features.append(Feature("ctr_1h", "ratio", numerator="clicks_1h",
                                denominator="views_1h"))
    features.append(Feature("last_event_ts", "last_event_ts"))
    return tuple(features)


def default_definitions(windows: Sequence[str], events_topic: str) -> Definitions:
    """One group: the user features of the built-in events on ``events_topic``."""
    return validate([FeatureGroup("user_activity", USER, events_source(events_topic),
                                  user_features(windows))])
