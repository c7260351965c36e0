"""A model's feature vector for one event: the record's own fields plus feature rows of the
entities the event belongs to.

Training (:mod:`udfs.offline.training`) and the scoring job both build vectors here, so they
cannot drift apart. A model names its features in order; each name is

- a record feature (:data:`RECORD_FEATURES`: the amount, the hour of day), read from the event;
- an unqualified row feature, read from the row of the event's *user* (``purchases_5m``);
- ``<entity>.<feature>`` (``item.views_1h``), read from the row of that entity, whose id comes
  from the event's fields through the entity's keys (:func:`udfs.contract.records.entity_id`).
  An event without those fields (or with a null one) has no row of that entity.

:class:`FeatureCatalog` holds what the definitions provide, as plain values (the scoring job
pickles it to its workers); :meth:`FeatureCatalog.plan` checks a model's names against it once
per model version -- a name the definitions do not provide refuses the version, naming the
feature and why -- and returns the :class:`VectorPlan` that assembles vectors. A value that is
null or absent (every feature of an entity without a row) takes the model's declared default;
without one the record cannot be scored (a :class:`Problem` of stage ``features``). Values must
be finite numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from operator import attrgetter
from typing import Any

from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.records import entity_id
from featurestream.udfs.definitions.model import NUMERIC, Definitions, Feature, Source
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

HOUR_MS = 3_600_000
USER = "user"  # the entity of unqualified names

RECORD_FEATURES: dict[str, Callable[[Event], Any]] = {
    "amount": lambda event: event.amount,
    "hour_of_day": lambda event: event.ts // HOUR_MS % 24,  # UTC
}

Row = Mapping[str, Any]
EntityId = str | Problem | None  # an id, why the event's key is unusable, or no key


FastAssemble = Callable[[Event, Mapping[str, Row]], "list[float] | None"]


class UnknownFeature(ValueError):
    """A model names features the definitions do not provide (the message says which, why)."""


def is_number(feature: Feature, source: Source) -> bool:
    """Whether a feature's value is a number (or a boolean), so a model can take it."""
    if feature.kind == "last_n":
        return False
    if feature.kind == "last":
        kind = source.field_types.get(feature.field or "", "").rstrip("?")
        return kind in NUMERIC or kind == "boolean"
    return True


def model_name(entity: str, feature: str) -> str:
    """How a model names ``feature`` of ``entity`` (the user's unqualified)."""
    return feature if entity == USER else f"{entity}.{feature}"


def _signatures(definitions: Definitions) -> dict[str, str]:
    """Each row feature's definition as canonical text, by model name: the entity and its keys,
    the source and its event time, the feature, and for a ratio the features it divides."""
    declared: dict[tuple[str, str], dict[str, Any]] = {}
    for group in definitions.groups:
        for feature in group.features:
            declared[(group.entity.name, feature.name)] = {
                "entity": [group.entity.name, list(group.entity.keys)],
                "source": [group.source.name, group.source.timestamp],
                "feature": asdict(feature)}
    signatures = {}
    for (entity, name), text in declared.items():
        parts = [text]
        feature = text["feature"]
        for other in (feature["numerator"], feature["denominator"]):
            if other is not None:
                parts.append(declared.get((entity, other), {}))
        signatures[model_name(entity, name)] = json.dumps(parts, sort_keys=True, default=str)
    return signatures


@dataclass(frozen=True)
class FeatureCatalog:
    """What the definitions offer a model, by entity: its key fields and its row features, and
    each feature's definition (a model records those it was trained with)."""

    keys: Mapping[str, tuple[str, ...]]  # entity -> key fields
    numbers: Mapping[str, frozenset[str]]  # entity -> features whose values are numbers
    others: Mapping[str, frozenset[str]]  # entity -> features that are not (strings, lists)
    signatures: Mapping[str, str]  # model name -> definition as canonical text

    @classmethod
    def from_definitions(cls, definitions: Definitions) -> FeatureCatalog:
        """The catalog of validated definitions."""
        numbers: dict[str, set[str]] = {e.name: set() for e in definitions.entities}
        others: dict[str, set[str]] = {e.name: set() for e in definitions.entities}
        for group in definitions.groups:
            for feature in group.features:
                kept = numbers if is_number(feature, group.source) else others
                kept[group.entity.name].add(feature.name)
        return cls({e.name: e.keys for e in definitions.entities},
                   {e: frozenset(f) for e, f in numbers.items()},
                   {e: frozenset(f) for e, f in others.items()},
                   _signatures(definitions))

    def plan(self, names: Sequence[str], trained_with: Mapping[str, str] | None = None
             ) -> VectorPlan:
        """How to assemble the vector of ``names``; :class:`UnknownFeature` when the
        definitions do not provide every one of them, or (``trained_with``: the definitions a
        model was trained with, by feature) define one differently now."""
        slots: list[_Slot] = []
        reasons: list[str] = []
        for name in names:
            extract = RECORD_FEATURES.get(name)
            if extract is not None:
                slots.append(_Slot(name, extract, "", name))
                continue
            entity, _, feature = name.rpartition(".")
            reason = self._why_not(name, entity or USER, feature, qualified=bool(entity))
            if not reason and trained_with and name in trained_with \
                    and trained_with[name] != self.signatures.get(name):
                reason = (f"{name!r}: defined differently than when the model was trained "
                          f"(then {trained_with[name]}, now {self.signatures.get(name)})")
            if reason:
                reasons.append(reason)
            else:
                slots.append(_Slot(name, None, entity or USER, feature))
        if reasons:
            raise UnknownFeature("features the definitions do not provide: " + "; ".join(reasons)
                                 + " (train the model on these definitions, or declare the "
                                 "features in FEATURESTREAM_DEFINITIONS)")
        entities = tuple(dict.fromkeys(s.entity for s in slots if s.entity))
        return VectorPlan(tuple(names), {e: self.keys[e] for e in entities}, tuple(slots),
                          tuple((e, _id_reader(self.keys[e])) for e in entities))

    def _why_not(self, name: str, entity: str, feature: str, qualified: bool) -> str:
        """Why ``name`` is not a usable feature ('' when it is)."""
        if entity not in self.keys:
            if qualified:
                return (f"{name!r}: no entity {entity!r} is defined (entities: "
                        f"{', '.join(sorted(self.keys))})")
            return (f"{name!r}: not a record feature ({', '.join(RECORD_FEATURES)}) and no "
                    f"entity {USER!r} is defined; name an entity's feature as "
                    "<entity>.<feature>")
        if feature in self.numbers[entity]:
            return ""
        if feature in self.others[entity]:
            return (f"{name!r}: the values of feature {feature!r} of entity {entity!r} are not "
                    "numbers; a model takes numbers")
        known = ", ".join(sorted(self.numbers[entity])) or "none"
        if qualified:
            return f"{name!r}: entity {entity!r} has no feature {feature!r} (its features: {known})"
        return (f"{name!r}: not a record feature ({', '.join(RECORD_FEATURES)}) nor a feature "
                f"of entity {USER!r} (its features: {known})")


def _id_reader(keys: tuple[str, ...]) -> Callable[[Event], EntityId]:
    """:func:`entity_id` of an event, without building a dict of its fields for the usual
    entity keyed by one non-empty string field (the scorer does this for every record)."""
    if len(keys) == 1 and keys[0] in Event._fields:
        key = keys[0]
        get = attrgetter(key)

        def read_one(event: Event) -> EntityId:
            value = get(event)
            if type(value) is str and value:
                return value
            return entity_id({key: value}, keys)  # null, empty: the general rule
        return read_one
    return lambda event: entity_id(event._asdict(), keys)


@dataclass(frozen=True, slots=True)
class _Slot:
    """One vector position: a record feature (``extract``) or ``field`` of ``entity``'s row."""

    name: str
    extract: Callable[[Event], Any] | None
    entity: str  # '' for a record feature
    field: str

    def value(self, event: Event, rows: Mapping[str, Row]) -> Any:
        """The raw value for ``event`` (None: null or absent)."""
        if self.extract is not None:
            return self.extract(event)
        row = rows.get(self.entity)
        return None if row is None else row.get(self.field)


@dataclass(frozen=True)
class VectorPlan:
    """A model's vector, checked against the definitions: what to read and in which order."""

    names: tuple[str, ...]
    entities: Mapping[str, tuple[str, ...]]  # the entities whose rows it reads -> key fields
    slots: tuple[_Slot, ...]

    readers: tuple[tuple[str, Callable[[Event], EntityId]], ...]  # per entity: its id

    def entity_ids(self, event: Event) -> dict[str, EntityId]:
        """The id of each entity the vector reads for ``event`` (None: the event lacks a key)."""
        ids = {}
        for entity, read in self.readers:  # a loop: cheaper than a comprehension's frame
            ids[entity] = read(event)
        return ids

    def fast(self, defaults: Mapping[str, float], nulls: bool = False) -> FastAssemble:
        """:meth:`assemble` for one model's ``defaults`` as straight-line code (generated once
        per model version): ``fast(event, rows)`` is the vector, or None whenever
        :meth:`assemble` would return a Problem -- call it then for the reason. The scorer's
        hot path: it does in one call what the loop does slot by slot. ``nulls``: a missing
        value that has a default is NaN instead (values are never NaN otherwise), so the caller
        knows which values were missing -- drift counts them as nulls -- and fills the defaults
        in one vectorized step."""
        scope: dict[str, Any] = {"inf": math.inf}
        lines = ["def fast(event, rows):"]
        lines += [f"    r_{i} = rows.get({entity!r})"
                  for i, entity in enumerate(self.entities)]
        row_var = {entity: f"r_{i}" for i, entity in enumerate(self.entities)}
        values = []
        for position, slot in enumerate(self.slots):
            v = f"v{position}"
            values.append(v)
            if slot.extract is not None:
                scope[f"x{position}"] = slot.extract
                lines.append(f"    {v} = x{position}(event)")
            else:
                row = row_var[slot.entity]
                lines.append(f"    {v} = None if {row} is None else {row}.get({slot.field!r})")
            default: Any = defaults.get(slot.name)
            usable = type(default) in (float, int, bool) and math.isfinite(default)
            scope[f"d{position}"] = (math.nan if nulls else float(default)) if usable else None
            lines.append(f"    if {v} is None:")
            lines.append(f"        {v} = d{position}" if usable else "        return None")
            lines += [f"    elif type({v}) is float:",
                      f"        if not -inf < {v} < inf:",
                      "            return None",
                      f"    elif type({v}) is int or type({v}) is bool:",
                      f"        {v} = float({v})",
                      "    else:",
                      "        return None"]
        lines.append(f"    return [{', '.join(values)}]")
        exec(compile("\n".join(lines), "<featurestream vector>", "exec"), scope)
        fast: FastAssemble = scope["fast"]
        return fast

    def assemble(self, defaults: Mapping[str, float], event: Event, rows: Mapping[str, Row],
                 ids: Mapping[str, EntityId]) -> list[float] | Problem:
        """The vector in :attr:`names` order, or why there is none. ``rows``: the event's row
        of each entity that has one; ``ids``: the entity ids (named in the messages)."""
        vector: list[float] = []
        for slot in self.slots:
            value = slot.value(event, rows)
            if value is None:
                value = defaults.get(slot.name)
                if value is None:
                    return self._missing(slot, event, rows, ids)
            if type(value) not in (float, int, bool):
                return Problem(Stage.FEATURES, ErrorClass.CORRUPT_FEATURE_ROW,
                               f"feature {slot.name!r} {_of(slot, event, ids)} is {value!r}, "
                               "not a number")
            value = float(value)
            if not math.isfinite(value):
                return Problem(Stage.FEATURES, ErrorClass.NON_FINITE_FEATURE,
                               f"feature {slot.name!r} {_of(slot, event, ids)} is {value}")
            vector.append(value)
        return vector

    def without_default(self, defaults: Mapping[str, float], event: Event,
                        rows: Mapping[str, Row]) -> list[str]:
        """The features whose value is null or absent for ``event`` and that have no default:
        every reason at once (:meth:`assemble` names the first)."""
        return [slot.name for slot in self.slots
                if slot.value(event, rows) is None and defaults.get(slot.name) is None]

    def _missing(self, slot: _Slot, event: Event, rows: Mapping[str, Row],
                 ids: Mapping[str, EntityId]) -> Problem:
        entity = slot.entity
        if entity and entity not in rows:
            if entity == USER:
                return Problem(Stage.FEATURES, ErrorClass.UNKNOWN_USER,
                               f"user {event.user_id!r} has no feature row and the model "
                               f"declares no default for {slot.name!r}")
            found = ids.get(entity)
            which = (f"{entity} {found!r} has no feature row" if isinstance(found, str) else
                     f"the event names no {entity} (key {', '.join(self.entities[entity])} "
                     "null or absent)")
            return Problem(Stage.FEATURES, ErrorClass.MISSING_FEATURE,
                           f"{which} and the model declares no default for {slot.name!r}")
        return Problem(Stage.FEATURES, ErrorClass.MISSING_FEATURE,
                       f"feature {slot.name!r} {_of(slot, event, ids)} is null or absent and "
                       "the model declares no default")


def _of(slot: _Slot, event: Event, ids: Mapping[str, EntityId]) -> str:
    if not slot.entity:
        return f"of event {event.event_id!r}"
    return f"of {slot.entity} {ids.get(slot.entity)!r}"
