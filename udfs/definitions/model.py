"""What users declare: sources of events, entities, and feature groups of named aggregations.

Declarations are frozen dataclasses of plain values, so they pickle into the Flink functions,
compare for ``featurestream plan`` and hash into a model's sidecar. :func:`validate` checks a
whole set at load time and raises one :class:`DefinitionError` naming the definition, the
field and the fix (:mod:`udfs.definitions.load` calls it).

Example (a Python module named by ``FEATURESTREAM_DEFINITIONS``)::

    payments = Source("payments", topic="payments", timestamp="ts",
                      fields={"merchant_id": "string", "amount": "double", "status": "string",
                              "ts": "long"})
    merchant = Entity("merchant", keys=("merchant_id",))
    merchant_velocity = FeatureGroup("merchant_velocity", merchant, payments, [
        Feature("payments_15m", "count", window="15m"),
        Feature("declined_1h", "count", window="1h", where=eq("status", "declined")),
        Feature("max_amount_1h", "max", field="amount", window="1h"),
    ])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any

from featurestream.udfs.definitions.filters import NULL_OPS, ORDERED_OPS, VALUE_OPS, Filter
from featurestream.udfs.durations import parse_duration_ms
from featurestream.udfs.store.redis_layout import RESERVED_ENTITY_NAMES

LIFETIME = "lifetime"  # the window that never expires (its state lives as long as the entity)
FIELD_TYPES = ("string", "long", "double", "boolean")
NUMERIC = frozenset({"long", "double"})
KEY_TYPES = frozenset({"string", "long"})  # what an entity key may be
ROW_META = frozenset({"as_of", "version", "updated_at", "warming_up"})  # reserved row fields
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_LAST_N = 100


@dataclass(frozen=True)
class KindRules:
    """What a kind of aggregation takes."""

    field: str  # "none", "optional", "any" or "numeric"
    window: bool  # takes a window (else it has none)
    where: bool = True
    doc: str = ""


KINDS: dict[str, KindRules] = {
    "count": KindRules("optional", True, doc="events (with a non-null `field`, if given)"),
    "sum": KindRules("numeric", True, doc="sum of `field`"),
    "mean": KindRules("numeric", True, doc="mean of `field` (null without values)"),
    "min": KindRules("numeric", True, doc="smallest `field`"),
    "max": KindRules("numeric", True, doc="largest `field`"),
    "distinct": KindRules("any", True, doc="exact number of distinct `field` values"),
    "approx_distinct": KindRules("any", True, doc="HyperLogLog estimate of distinct values"),
    "last": KindRules("any", True, doc="`field` of the latest event (by event time)"),
    "last_n": KindRules("any", True, doc="`field` of the `n` latest events, newest first"),
    "time_since_last": KindRules("none", True,
                                 doc="ms from the latest (matching) event to the row's as_of"),
    "ratio": KindRules("none", False, where=False,
                       doc="`numerator` / `denominator` (two features of the group)"),
    "last_event_ts": KindRules("none", False, where=False,
                               doc="event time of the entity's latest event"),
}


class DefinitionError(ValueError):
    """A definition is wrong: the message names the definition, the field and the fix."""


@dataclass(frozen=True)
class Source:
    """A topic of events: their fields and types, and which field is the event time.

    Give the fields as an Avro schema, either a file (``avro``: a name in ``schemas/`` or a
    path to an ``.avsc`` file) or the latest version of a schema registry subject
    (``registry_subject``, e.g. ``"payments-value"``), and records may then be Avro or JSON; or
    as JSON field types only (``fields``: name -> ``string``, ``long``, ``double`` or
    ``boolean``, with a ``?`` suffix for nullable). Fields declared beside a schema override
    its types. ``timestamp`` names a ``long`` field holding the event time in epoch ms.

    The loader fills ``schema_json`` with the subject's schema (canonical JSON text), so the
    definitions carry it into the jobs and decoding never asks the registry for it.
    """

    name: str
    topic: str
    timestamp: str = "ts"
    fields: tuple[tuple[str, str], ...] | Mapping[str, str] = ()
    avro: str | None = None
    registry_subject: str | None = None
    schema_json: str | None = None  # set by the loader from registry_subject

    def __post_init__(self) -> None:
        if isinstance(self.fields, Mapping):
            object.__setattr__(self, "fields", tuple(self.fields.items()))

    @property
    def field_types(self) -> dict[str, str]:
        """Field name -> type (``?`` suffix: nullable), as declared or read from Avro."""
        return dict(self.fields)


@dataclass(frozen=True)
class Entity:
    """What features describe (a user, an item, a merchant and card pair...): its name and
    the event fields whose values identify one (joined with ``|`` when several)."""

    name: str
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.keys, str):
            object.__setattr__(self, "keys", (self.keys,))
        else:
            object.__setattr__(self, "keys", tuple(self.keys))


@dataclass(frozen=True)
class Feature:
    """One named aggregation: ``kind(field, where=filter)`` over ``window``.

    ``window`` is a whole number of minutes (``15m``, ``1h``, ``7d``) or ``lifetime``; the
    trailing edge is rounded to the window's hop (its length / 60, see :mod:`udfs.aggregations`).
    """

    name: str
    kind: str
    field: str | None = None
    window: str | None = None
    where: Filter = dataclasses.field(default_factory=Filter)
    n: int | None = None  # last_n
    numerator: str | None = None  # ratio
    denominator: str | None = None  # ratio
    lg_k: int = 10  # approx_distinct: 2**lg_k registers (relative error ~ 1.04 / 2**(lg_k/2))


@dataclass(frozen=True)
class FeatureGroup:
    """Features of one entity computed from one source. Every group of an entity writes the
    same row (one Redis hash per entity instance)."""

    name: str
    entity: Entity
    source: Source
    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))


@dataclass(frozen=True)
class Definitions:
    """A validated set of groups (and the entities and sources they use)."""

    groups: tuple[FeatureGroup, ...]

    @property
    def sources(self) -> tuple[Source, ...]:
        """The sources the groups read, in first-use order."""
        return tuple(dict.fromkeys(g.source for g in self.groups))

    @property
    def entities(self) -> tuple[Entity, ...]:
        """The entities the groups describe, in first-use order."""
        return tuple(dict.fromkeys(g.entity for g in self.groups))

    def entity(self, name: str) -> Entity:
        """The entity called ``name`` (KeyError if none)."""
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(name)

    def features_of(self, entity: str) -> tuple[Feature, ...]:
        """The features of an entity's row, in declaration order."""
        return tuple(f for g in self.groups if g.entity.name == entity for f in g.features)

    def groups_of(self, entity: str) -> tuple[FeatureGroup, ...]:
        """The groups of an entity."""
        return tuple(g for g in self.groups if g.entity.name == entity)

    @property
    def largest_window_ms(self) -> int:
        """The longest sliding window of any feature (0 without one): the default allowed
        lateness."""
        lengths = [window_ms(f.window) for g in self.groups for f in g.features
                   if f.window is not None]
        return max((n for n in lengths if n is not None), default=0)

    def fingerprint(self) -> str:
        """A stable hash of everything declared (recorded with models trained on it).

        An Avro source counts by its schema's file name and field types: the loader resolves
        the schema to an absolute path, which differs between a checkout and a job's copy. A
        registry source counts likewise by its subject and field types (not the schema's text),
        and a source without one hashes as it did before sources could name a subject."""
        declared = [asdict(g) for g in self.groups]
        for group in declared:
            source = group["source"]
            if source["avro"] is not None:
                source["avro"] = PurePath(source["avro"]).name
            del source["schema_json"]
            if source["registry_subject"] is None:
                del source["registry_subject"]
        text = json.dumps(declared, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def window_ms(window: str) -> int | None:
    """A window's length in ms (None for ``lifetime``); ValueError if not whole minutes."""
    if window == LIFETIME:
        return None
    try:
        length = parse_duration_ms(window) if isinstance(window, str) else 0
    except ValueError:
        length = 0  # "1.5h", "soon": the same fix as for "90s"
    if length < 60_000 or length % 60_000:
        raise ValueError(f"window {window!r} must be a whole number of minutes (e.g. 1m, 15m, "
                         f"1h, 7d) or {LIFETIME!r}")
    return length


# -- Validation ---------------------------------------------------------------------------


def validate(groups: Iterable[FeatureGroup]) -> Definitions:
    """Check every declaration; the first mistake raises :class:`DefinitionError`."""
    groups = tuple(groups)
    if not groups:
        raise DefinitionError("no feature groups: declare at least one FeatureGroup")
    _unique("feature group", [g.name for g in groups])
    sources = {g.source.name: g.source for g in groups}
    entities = {g.entity.name: g.entity for g in groups}
    for kind, kinds, declared in (("source", "sources", [g.source for g in groups]),
                                  ("entity", "entities", [g.entity for g in groups])):
        for item in declared:
            other = sources.get(item.name) if kind == "source" else entities.get(item.name)
            if other != item:
                raise DefinitionError(f"{kind} {item.name!r}: two different {kinds} share this "
                                      "name; rename one")
    topics: dict[str, str] = {}
    for source in sources.values():
        _check_source(source)
        if topics.setdefault(source.topic, source.name) != source.name:
            raise DefinitionError(f"source {source.name!r}, field 'topic': topic "
                                  f"{source.topic!r} is also source {topics[source.topic]!r}; "
                                  "declare one source per topic")
    for entity in entities.values():
        _check_name("entity", entity.name, f"entity {entity.name!r}")
        if entity.name in RESERVED_ENTITY_NAMES:
            raise DefinitionError(f"entity {entity.name!r}: the name is taken by the Redis "
                                  "layout (score hashes); rename the entity")
        if not entity.keys:
            raise DefinitionError(f"entity {entity.name!r}, field 'keys': name at least one "
                                  "event field")
    row_features: dict[str, dict[str, str]] = {}  # entity -> feature -> group
    for group in groups:
        _check_group(group)
        seen = row_features.setdefault(group.entity.name, {})
        for feature in group.features:
            if feature.name in seen:
                raise DefinitionError(
                    f"feature group {group.name!r}, feature {feature.name!r}: entity "
                    f"{group.entity.name!r} already has this feature (group {seen[feature.name]!r}"
                    "); the groups of an entity share one row, so rename one")
            seen[feature.name] = group.name
    return Definitions(groups)


def _unique(kind: str, names: list[str]) -> None:
    for name in names:
        if names.count(name) > 1:
            raise DefinitionError(f"{kind} {name!r} is declared twice; rename one")


def _check_name(kind: str, name: str, where: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(f"{where}: {kind} name {name!r} must be lower case letters, "
                              "digits and underscores, starting with a letter")


def _check_source(source: Source) -> None:
    where = f"source {source.name!r}"
    _check_name("source", source.name, where)
    if not source.topic:
        raise DefinitionError(f"{where}, field 'topic': name the Kafka topic")
    if source.registry_subject is not None:
        _check_subject(source, where)
    try:
        types = source.field_types
    except (TypeError, ValueError):
        types = {}  # fields given as a list of names, say: the same fix as none at all
    if not types:
        raise DefinitionError(f"{where}, field 'fields': declare the event fields (fields="
                              "{'name': 'string', ...}), an Avro schema (avro='name.avsc') or a "
                              "schema registry subject (registry_subject='<topic>-value')")
    for name, kind in types.items():
        if kind.rstrip("?") not in FIELD_TYPES and kind != "other":
            raise DefinitionError(f"{where}, field {name!r}: type {kind!r} is not one of "
                                  f"{', '.join(FIELD_TYPES)} (add ? for nullable)")
    ts_type = types.get(source.timestamp)
    if ts_type != "long":
        found = "missing" if ts_type is None else f"of type {ts_type!r}"
        raise DefinitionError(f"{where}, field 'timestamp': the event-time field "
                              f"{source.timestamp!r} is {found}; it must be a non-null long "
                              "(epoch ms)")


def _check_subject(source: Source, where: str) -> None:
    subject = source.registry_subject
    what = f"{where}, field 'registry_subject'"
    if not isinstance(subject, str) or not subject:
        raise DefinitionError(f"{what}: {subject!r} is not a subject name; name one, e.g. "
                              f"registry_subject='{source.topic}-value'")
    if source.avro is not None:
        raise DefinitionError(f"{what}: the source also names the Avro file {source.avro!r}; "
                              "take the schema from one of them, remove the other")
    if source.schema_json is None:
        raise DefinitionError(f"{what}: the schema of subject {subject!r} was not fetched; load "
                              "the definitions with load_definitions (it asks the registry)")


def _check_group(group: FeatureGroup) -> None:
    where = f"feature group {group.name!r}"
    _check_name("feature group", group.name, where)
    types = group.source.field_types
    for key in group.entity.keys:
        kind = types.get(key)
        if kind is None or kind.rstrip("?") not in KEY_TYPES:
            found = "not a field" if kind is None else f"a {kind!r} field"
            raise DefinitionError(
                f"{where}, entity {group.entity.name!r}, field 'keys': {key!r} is {found} of "
                f"source {group.source.name!r}; entity keys must be string or long fields of the "
                f"source ({', '.join(k for k, t in types.items() if t.rstrip('?') in KEY_TYPES)})")
    if not group.features:
        raise DefinitionError(f"{where}, field 'features': list at least one Feature")
    names = [f.name for f in group.features]
    for feature in group.features:
        _check_feature(group, feature, names)


def _check_feature(group: FeatureGroup, feature: Feature, names: list[str]) -> None:
    where = f"feature group {group.name!r}, feature {feature.name!r}"
    _check_name("feature", feature.name, f"feature group {group.name!r}")
    if feature.name in ROW_META:
        raise DefinitionError(f"{where}: the name is reserved for row metadata "
                              f"({', '.join(sorted(ROW_META))}); rename it")
    rules = KINDS.get(feature.kind)
    if rules is None:
        raise DefinitionError(f"{where}, field 'kind': {feature.kind!r} is not one of "
                              f"{', '.join(KINDS)}")
    types = group.source.field_types
    _check_field(where, feature, rules, types, group.source.name)
    if rules.window:
        if feature.window is None:
            raise DefinitionError(f"{where}, field 'window': {feature.kind} needs a window, "
                                  f"e.g. window='1h' or window={LIFETIME!r}")
        try:
            window_ms(feature.window)
        except ValueError as exc:
            raise DefinitionError(f"{where}, field 'window': {exc}") from None
    elif feature.window is not None:
        raise DefinitionError(f"{where}, field 'window': {feature.kind} takes no window; "
                              "remove it")
    if not isinstance(feature.where, Filter):
        raise DefinitionError(f"{where}, field 'where': {feature.where!r} is not a filter; build "
                              "one with eq, ne, gt, ge, lt, le, isin, is_null, not_null, all_of")
    if feature.where.conditions and not rules.where:
        raise DefinitionError(f"{where}, field 'where': {feature.kind} takes no filter; "
                              "filter its parts instead")
    for condition in feature.where.conditions:
        _check_condition(where, condition, types, group.source.name)
    if feature.kind == "last_n":
        if not isinstance(feature.n, int) or not 1 <= feature.n <= MAX_LAST_N:
            raise DefinitionError(f"{where}, field 'n': last_n keeps 1 to {MAX_LAST_N} values; "
                                  "set n=, e.g. n=5")
    elif feature.n is not None:
        raise DefinitionError(f"{where}, field 'n': only last_n takes n; remove it")
    if feature.kind == "approx_distinct" and not (
            isinstance(feature.lg_k, int) and 4 <= feature.lg_k <= 16):
        raise DefinitionError(f"{where}, field 'lg_k': {feature.lg_k!r} is out of range; use 4 "
                              "to 16 (10 gives ~3% error)")
    if feature.kind == "ratio":
        numbers = [f.name for f in group.features
                   if f.name != feature.name and _is_number(f, types)]
        for part in ("numerator", "denominator"):
            ref = getattr(feature, part)
            if ref is None or ref not in names or ref == feature.name:
                raise DefinitionError(f"{where}, field {part!r}: name another feature of the "
                                      f"group ({', '.join(numbers)})")
            if ref not in numbers:
                raise DefinitionError(f"{where}, field {part!r}: {ref!r} is not a number; name "
                                      f"one of {', '.join(numbers)} (not a ratio, last_n or a "
                                      "last of a non-numeric field)")
    elif feature.numerator is not None or feature.denominator is not None:
        raise DefinitionError(f"{where}: only ratio takes numerator and denominator; remove them")


def _is_number(feature: Feature, types: Mapping[str, str]) -> bool:
    """Whether the feature's value is a number (so a ratio may divide it)."""
    if feature.kind in ("ratio", "last_n"):
        return False
    if feature.kind == "last":
        return types.get(feature.field or "", "").rstrip("?") in NUMERIC
    return feature.kind in KINDS


def _check_field(where: str, feature: Feature, rules: KindRules, types: Mapping[str, str],
                 source: str) -> None:
    name = feature.field
    if rules.field == "none":
        if name is not None:
            raise DefinitionError(f"{where}, field 'field': {feature.kind} reads no field; "
                                  "remove it")
        return
    if name is None:
        if rules.field == "optional":
            return
        raise DefinitionError(f"{where}, field 'field': {feature.kind} needs a field of source "
                              f"{source!r} ({', '.join(types)})")
    kind = types.get(name)
    if kind is None:
        raise DefinitionError(f"{where}, field 'field': {name!r} is not a field of source "
                              f"{source!r} ({', '.join(types)})")
    if kind == "other":
        raise DefinitionError(f"{where}, field 'field': {name!r} is a nested value; aggregate "
                              "a string, long, double or boolean field")
    if rules.field == "numeric" and kind.rstrip("?") not in NUMERIC:
        raise DefinitionError(f"{where}, field 'field': {feature.kind} needs a numeric field, "
                              f"and {name!r} is {kind!r}")


def _check_condition(where: str, condition: Any, types: Mapping[str, str], source: str) -> None:
    kind = types.get(condition.field)
    what = f"{where}, field 'where' ({condition.describe()})"
    if kind is None or kind == "other":
        filterable = ", ".join(k for k, t in types.items() if t != "other")
        raise DefinitionError(f"{what}: {condition.field!r} is not a filterable field of source "
                              f"{source!r} ({filterable})")
    base = kind.rstrip("?")
    if condition.op in NULL_OPS:
        return
    if condition.op not in VALUE_OPS:
        raise DefinitionError(f"{what}: unknown operator {condition.op!r}; use eq, ne, gt, ge, "
                              "lt, le, isin, is_null or not_null")
    if condition.op in ORDERED_OPS and base not in NUMERIC:
        raise DefinitionError(f"{what}: {condition.op} compares numbers, and "
                              f"{condition.field!r} is {kind!r}; use eq, ne or isin")
    values = condition.value if condition.op == "in" else (condition.value,)
    if condition.op == "in" and (not isinstance(values, tuple) or not values):
        raise DefinitionError(f"{what}: isin needs a list of at least one value, e.g. "
                              f"isin({condition.field!r}, [...])")
    for value in values:
        if not _fits(value, base):
            raise DefinitionError(f"{what}: {value!r} is not a {base} value and "
                                  f"{condition.field!r} is a {base} field; compare it with "
                                  f"{base} values")


def _fits(value: Any, base: str) -> bool:
    if base == "string":
        return isinstance(value, str)
    if base == "boolean":
        return isinstance(value, bool)
    if base == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)
