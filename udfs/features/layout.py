"""What a shard's stored state was built from, and carrying state over changed definitions.

Each state shard keeps one entry (key :data:`LAYOUT_ENTRY`) beside its entities: the shard
count, and per entity its key fields, the accumulator layouts its states use (layout id ->
signatures in position order) and, for accumulators added to existing state, the event time
since which they count. An entity's state names its layout id, so a restore with changed
definitions matches accumulators by signature (:func:`convert`): unchanged ones keep their
state, added ones start empty and report warming up until a full window has passed since
they were added (a lifetime one added later never catches up: it says so for good), removed
ones are dropped. Only changes that cannot be carried over are refused
(:class:`StoredLayoutMismatch`): another shard count (every entity would be looked up in the
wrong shard) or another entity key (the stored ids mean something else).

:func:`describe` gives the job's layout as published for ``featurestream plan`` and
:func:`plan_changes` compares two of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from featurestream.udfs.features.plan import EntityPlan

LAYOUT_ENTRY = ""  # the map entry holding the layout (entity state keys are never empty)
FORMAT = 2


class StoredLayoutMismatch(RuntimeError):
    """The stored state cannot be used with these settings or definitions."""


@dataclass
class EntityLayout:
    """One entity's part of a shard's layout."""

    keys: list[str]
    layouts: dict[str, list[str]] = field(default_factory=dict)
    since: dict[str, int] = field(default_factory=dict)


@dataclass
class ShardLayout:
    """A shard's stored layout (see the module docstring)."""

    shards: int
    entities: dict[str, EntityLayout]

    def to_bytes(self) -> bytes:
        plain = {"format": FORMAT, "shards": self.shards,
                 "entities": {name: vars(e) for name, e in self.entities.items()}}
        return json.dumps(plain, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ShardLayout:
        text = data.decode()
        if text.isdigit():
            raise StoredLayoutMismatch(
                f"this state was written by a featurestream release before feature definitions "
                f"({text} shards, windows stored by position): it cannot be carried over "
                "safely. Start the feature job without the savepoint (it re-reads the topic "
                "from the earliest offset) or keep running the earlier release")
        plain = json.loads(text)
        return cls(plain["shards"], {name: EntityLayout(**e)
                                     for name, e in plain["entities"].items()})


def reconcile(stored: ShardLayout | None, plans: Mapping[str, EntityPlan], shards: int,
              now: int | None) -> ShardLayout:
    """The layout to run with: ``stored`` extended with the current plans' layouts.

    Accumulators that are new to existing state count from ``now`` (the shard's latest event
    time; None when the shard holds nothing yet, so nothing is missing). Raises
    :class:`StoredLayoutMismatch` for changes that cannot be carried over.
    """
    if stored is None:
        return ShardLayout(shards, {name: EntityLayout(list(plan.entity.keys),
                                                       {plan.layout_id: plan.layout})
                                    for name, plan in plans.items()})
    if stored.shards != shards:
        raise StoredLayoutMismatch(
            f"this state was written with {stored.shards} state shards, but "
            f"FEATURESTREAM_STATE_SHARDS is {shards}: set it back to {stored.shards} (the shard "
            "count is fixed for the life of the state)")
    entities: dict[str, EntityLayout] = {}
    for name, plan in plans.items():
        old = stored.entities.get(name)
        keys = list(plan.entity.keys)
        if old is None:
            entities[name] = EntityLayout(keys, {plan.layout_id: plan.layout})
            continue
        if old.keys != keys:
            raise StoredLayoutMismatch(
                f"entity {name!r}: its stored state is keyed by {', '.join(old.keys)}, the "
                f"definitions key it by {', '.join(keys)}: the stored ids would mean something "
                f"else. Keep the keys, or give the new key a new entity name (it starts empty)")
        known = {sig for sigs in old.layouts.values() for sig in sigs}
        since = {sig: t for sig, t in old.since.items() if sig in plan.layout}
        if now is not None:
            since.update({sig: now for sig in plan.layout if sig not in known})
        entities[name] = EntityLayout(keys, {**old.layouts, plan.layout_id: plan.layout}, since)
    return ShardLayout(shards, entities)


def convert(windows: list, from_layout: list[str], plan: EntityPlan, empty: list) -> list:
    """Stored windows (``(sizes, accumulator states)`` in ``from_layout`` order) re-packed in
    the plan's order; accumulators the stored state lacks take their state from ``empty``
    (the plan's empty windows in stored form), removed ones are dropped.

    A window's bucket sizes are kept when any of its accumulators carries over; they only
    schedule expiries, and a bucket an accumulator does not hold expires as a no-op.
    """
    stored: dict[str, Any] = {}
    sizes_of: dict[str, dict] = {}
    position = 0
    window_names = [json.loads(sig)[1] for sig in from_layout]
    for sizes, accs in windows:
        for acc in accs:
            stored[from_layout[position]] = acc
            sizes_of[window_names[position]] = sizes
            position += 1
    out = []
    specs = plan.accumulators
    position = 0
    for wi, window in enumerate(plan.windows):
        accs = []
        for blank in empty[wi][1]:
            accs.append(stored.get(specs[position].signature, blank))
            position += 1
        out.append((sizes_of.get(window.name, {}), accs))
    return out


def warming(plan: EntityPlan, since: Mapping[str, int]) -> list[tuple[str, int | None]]:
    """The features still warming up, with when they are complete (None: never, a lifetime
    aggregation added to existing state); compared with each row's ``as_of``."""
    out = []
    for feature in plan.features:
        starts = [since[sig] for p in feature.accumulators
                  if (sig := plan.accumulators[p].signature) in since]
        if starts:
            length = feature.length_ms
            out.append((feature.feature.name, None if length is None else max(starts) + length))
    return out


# -- Published layout and plans -------------------------------------------------------------


def describe(plans: Mapping[str, EntityPlan], shards: int) -> dict[str, Any]:
    """The layout a job runs, as it publishes it (JSON-ready) for ``featurestream plan``."""
    return {"format": FORMAT, "shards": shards, "entities": {
        name: {"keys": list(plan.entity.keys),
               "features": {f.feature.name: _feature_text(f.feature) for f in plan.features},
               "accumulators": plan.layout}
        for name, plan in plans.items()}}


def _feature_text(feature: Any) -> str:
    parts = [feature.kind]
    for attr in ("field", "window", "n", "numerator", "denominator"):
        value = getattr(feature, attr)
        if value is not None:
            parts.append(f"{attr}={value}")
    if feature.where.conditions:
        parts.append(f"where {feature.where.describe()}")
    if feature.kind == "approx_distinct":
        parts.append(f"lg_k={feature.lg_k}")
    return " ".join(parts)


@dataclass
class PlanReport:
    """What resubmitting with new definitions would do to a running job's state."""

    added: list[str] = field(default_factory=list)  # "entity.feature (definition)"
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why the job would refuse to start

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.refused)


def plan_changes(running: Mapping[str, Any], new: Mapping[str, Any]) -> PlanReport:
    """Compare a published layout (:func:`describe`) with the layout of new definitions."""
    report = PlanReport()
    if running.get("shards") != new.get("shards"):
        report.refused.append(
            f"state shards {running.get('shards')} -> {new.get('shards')}: the shard count is "
            "fixed for the life of the state; set FEATURESTREAM_STATE_SHARDS back")
    old_entities, new_entities = running.get("entities", {}), new.get("entities", {})
    for name, entity in new_entities.items():
        old = old_entities.get(name)
        if old is None:
            report.added += [f"{name}.{f} ({text}) [new entity]"
                             for f, text in entity["features"].items()]
            continue
        if old["keys"] != entity["keys"]:
            report.refused.append(
                f"entity {name!r}: keys {', '.join(old['keys'])} -> {', '.join(entity['keys'])}"
                ": stored ids would mean something else; use a new entity name")
        for feature, text in entity["features"].items():
            before = old["features"].get(feature)
            label = f"{name}.{feature} ({text})"
            if before is None:
                report.added.append(label)
            elif before != text:
                report.changed.append(f"{name}.{feature}: {before} -> {text}")
            else:
                report.unchanged.append(label)
        for feature, text in old["features"].items():
            if feature not in entity["features"]:
                report.removed.append(f"{name}.{feature} ({text})")
    for name, old in old_entities.items():
        if name not in new_entities:
            report.removed += [f"{name}.{f} ({text}) [entity removed]"
                               for f, text in old["features"].items()]
    return report
