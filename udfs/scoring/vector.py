"""A model's feature vector for one event: the record's own fields plus the user's feature row.

Training (:mod:`udfs.training`) and the scoring job both build vectors here, so they cannot
drift apart. A feature name is first looked up among the record features (:data:`RECORD_FEATURES`:
the amount, the hour of day, ...), then in the user's row (:mod:`udfs.features` names). A value
that is null or absent -- every row feature when the user has no row -- takes the model's
declared default; without one the record cannot be scored (a :class:`Problem` of stage
``features``). Values must be finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from featurestream.udfs.contract.events import Event
from featurestream.udfs.store.redis_layout import FeatureValue as Value
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

HOUR_MS = 3_600_000

RECORD_FEATURES: dict[str, Callable[[Event], Value]] = {
    "amount": lambda event: event.amount,
    "hour_of_day": lambda event: event.ts // HOUR_MS % 24,  # UTC
}


def assemble(names: Sequence[str], defaults: Mapping[str, float], event: Event,
             row: Mapping[str, Value] | None) -> list[float] | Problem:
    """The vector in ``names`` order, or why there is none."""
    vector: list[float] = []
    for name in names:
        extract = RECORD_FEATURES.get(name)
        if extract is not None:
            value = extract(event)
        elif row is not None:
            value = row.get(name)
        else:
            value = None
        if value is None:
            value = defaults.get(name)
            if value is None:
                return _missing(name, event, row)
        value = float(value)
        if not math.isfinite(value):
            return Problem(Stage.FEATURES, ErrorClass.NON_FINITE_FEATURE,
                           f"feature {name!r} of user {event.user_id!r} is {value}")
        vector.append(value)
    return vector


def _missing(name: str, event: Event, row: Mapping[str, Value] | None) -> Problem:
    if row is None:
        return Problem(Stage.FEATURES, ErrorClass.UNKNOWN_USER,
                       f"user {event.user_id!r} has no feature row and the model declares no "
                       f"default for {name!r}")
    return Problem(Stage.FEATURES, ErrorClass.MISSING_FEATURE,
                   f"feature {name!r} of user {event.user_id!r} is null or absent and the model "
                   "declares no default")
