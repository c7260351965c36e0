"""A training row's feature values: the model's vector as the scoring job would assemble it
(:class:`~featurestream.udfs.scoring.vector.VectorPlan`), but with the raw values.

The scoring job fills a missing value with the model's default; a training set keeps it null
instead (training applies the defaults of the model it trains), so this reads the same slots
-- record features from the event, ``<entity>.<feature>`` from that entity's row -- and leaves
out only the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.processor import Row
from featurestream.udfs.scoring.vector import VectorPlan


def raw_values(plan: VectorPlan, event: Event, rows: Mapping[str, Row]) -> dict[str, Any]:
    """Feature name -> value (None: the entity has no row, or the row or event no value)."""
    values: dict[str, Any] = {}
    for slot in plan.slots:
        if slot.extract is not None:
            value = slot.extract(event)
        else:
            row = rows.get(slot.entity)
            value = None if row is None else row.get(slot.field)
        values[slot.name] = value
    return values
