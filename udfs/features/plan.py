"""Definitions compiled for the engine: per entity, its windows, accumulators and features.

A feature is computed from one or two accumulators (a mean is a sum and a count; a ratio reads
two other features). Accumulators are shared: two features that need the same accumulator (the
same source, kind, field, filter and window) read one. Each accumulator has a **signature** (its
definition as canonical text): the stored state is matched to the definitions by signature, not
by position (:mod:`udfs.features.layout`), so changed definitions keep what is unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from featurestream.udfs.aggregations.accumulators import (
    Accumulator,
    ApproxDistinct,
    Count,
    Distinct,
    FloatSum,
    IntSum,
    LastN,
    Max,
    Min,
)
from featurestream.udfs.aggregations.windows import WindowSpec
from featurestream.udfs.definitions.filters import Filter
from featurestream.udfs.definitions.model import Definitions, Entity, Feature, FeatureGroup, Source


@dataclass(frozen=True)
class AccumulatorSpec:
    """One accumulator of an entity: ``kind(field) where ...`` over ``window`` of ``source``."""

    source: str
    window: str
    kind: str  # count | sum | min | max | distinct | approx_distinct | last_n
    field: str | None
    where: Filter
    param: int | bool | None = None  # last_n: n; approx_distinct: lg_k; sum: floating

    @property
    def signature(self) -> str:
        """The accumulator's definition as canonical text (its identity in stored state)."""
        return json.dumps([self.source, self.window, self.kind, self.field,
                           [asdict(c) for c in self.where.conditions], self.param],
                          separators=(",", ":"), default=list)

    def make(self) -> Accumulator:
        """The accumulator object (stateless) for this spec."""
        if self.kind == "count":
            return Count()
        if self.kind == "sum":
            return FloatSum() if self.param else IntSum()
        if self.kind == "min":
            return Min()
        if self.kind == "max":
            return Max()
        if self.kind == "distinct":
            return Distinct()
        if self.kind == "approx_distinct":
            return ApproxDistinct(int(self.param or 10))
        return LastN(int(self.param or 1), single=self.param == 0)

    @property
    def takes_time(self) -> bool:
        """True when ``add`` takes ``(ts, value)`` (last values)."""
        return self.kind == "last_n"


@dataclass(frozen=True)
class FeatureSpec:
    """A feature of the row and the accumulators it reads (its value:
    :func:`udfs.features.codegen.compile_row`)."""

    feature: Feature
    accumulators: tuple[int, ...]  # positions in EntityPlan.accumulators
    length_ms: int | None  # the window's length (None: lifetime or no window), for warm-up


@dataclass(frozen=True)
class EntityPlan:
    """Everything the engine needs for one entity."""

    entity: Entity
    sources: tuple[Source, ...]  # index = an event's source number for this entity
    fields: tuple[tuple[str, ...], ...]  # per source: the event fields the engine reads
    windows: tuple[WindowSpec, ...]  # shortest first, lifetime last
    accumulators: tuple[AccumulatorSpec, ...]  # grouped by window, in window order
    features: tuple[FeatureSpec, ...]  # ratios after the features they read
    feature_order: tuple[str, ...]  # the row's order: as declared

    @property
    def layout(self) -> list[str]:
        """Accumulator signatures in position order."""
        return [spec.signature for spec in self.accumulators]

    @property
    def layout_id(self) -> str:
        """A short hash of :attr:`layout` (stored with each entity's state)."""
        text = "\n".join(self.layout)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def slots(self) -> list[list[int]]:
        """Per window, the positions of its accumulators (the window state's order)."""
        return [[p for p, spec in enumerate(self.accumulators) if spec.window == w.name]
                for w in self.windows]

    @property
    def anchors(self) -> list[int | None]:
        """Per window, the slot of a count of every event (no field, no filter), if any: its
        buckets double as the window's bucket record (an event it takes is one the window
        holds), which saves one dict update per window and event."""
        return [next((slot for slot, p in enumerate(slots)
                      if self.accumulators[p].kind == "count"
                      and self.accumulators[p].field is None
                      and not self.accumulators[p].where.conditions), None)
                for slots in self.slots]

    def source_index(self, name: str) -> int:
        """The number of source ``name`` for this entity."""
        return next(i for i, s in enumerate(self.sources) if s.name == name)

    def value_index(self, source: int, field: str) -> int:
        """Where ``field`` is in the values of an event of ``source``."""
        return self.fields[source].index(field)


def compile_plans(definitions: Definitions) -> dict[str, EntityPlan]:
    """One plan per entity, by entity name."""
    return {entity.name: _compile(entity, definitions.groups_of(entity.name))
            for entity in definitions.entities}


def _accumulators_of(group: FeatureGroup, feature: Feature) -> list[AccumulatorSpec]:
    source, kind, window, where = group.source, feature.kind, feature.window, feature.where
    name = source.name
    if kind in ("ratio", "last_event_ts"):
        return []
    assert window is not None  # validated: every other kind has a window
    floating = source.field_types.get(feature.field or "", "").rstrip("?") == "double"
    if kind == "mean":
        return [AccumulatorSpec(name, window, "sum", feature.field, where, True),
                AccumulatorSpec(name, window, "count", feature.field, where)]
    if kind == "sum":
        return [AccumulatorSpec(name, window, "sum", feature.field, where, floating)]
    if kind == "time_since_last":
        return [AccumulatorSpec(name, window, "max", source.timestamp, where)]
    if kind == "last":
        return [AccumulatorSpec(name, window, "last_n", feature.field, where, 0)]
    if kind == "last_n":
        return [AccumulatorSpec(name, window, "last_n", feature.field, where, feature.n)]
    if kind == "approx_distinct":
        return [AccumulatorSpec(name, window, kind, feature.field, where, feature.lg_k)]
    return [AccumulatorSpec(name, window, kind, feature.field, where)]


def _compile(entity: Entity, groups: Sequence[FeatureGroup]) -> EntityPlan:
    sources = tuple(dict.fromkeys(g.source for g in groups))
    needed: dict[tuple[Feature, str], list[AccumulatorSpec]] = {}
    for group in groups:
        for feature in group.features:
            needed[(feature, group.name)] = _accumulators_of(group, feature)
    windows = sorted({WindowSpec.parse(s.window) for specs in needed.values() for s in specs},
                     key=lambda w: (w.length_ms is None, w.length_ms or 0))
    order = {w.name: i for i, w in enumerate(windows)}
    unique = sorted(dict.fromkeys(s for specs in needed.values() for s in specs),
                    key=lambda s: order[s.window])
    position = {spec: i for i, spec in enumerate(unique)}
    fields = []
    for source in sources:
        names: dict[str, None] = {}
        for spec in unique:
            if spec.source == source.name:
                if spec.field is not None:
                    names[spec.field] = None
                names.update(dict.fromkeys(spec.where.fields))
        fields.append(tuple(names))
    plain: list[FeatureSpec] = []
    ratios: list[FeatureSpec] = []
    for group in groups:
        for feature in group.features:
            positions = tuple(position[a] for a in needed[(feature, group.name)])
            computed = FeatureSpec(feature, positions, _length(feature))
            (ratios if feature.kind == "ratio" else plain).append(computed)
    declared = tuple(f.name for g in groups for f in g.features)
    return EntityPlan(entity, sources, tuple(fields), tuple(windows), tuple(unique),
                      tuple(plain + ratios), declared)


def _length(feature: Feature) -> int | None:
    if feature.window is None:
        return None
    return WindowSpec.parse(feature.window).length_ms
