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
from dataclasses import dataclass, field, replace
from typing import Any

from featurestream.udfs.definitions.model import Feature
from featurestream.udfs.features.plan import EntityPlan, FeatureSpec

LAYOUT_ENTRY = ""  # the map entry holding the layout (entity state keys are never empty)
FORMAT = 2


class StoredLayoutMismatch(RuntimeError):
    """The stored state cannot be used with these settings or definitions."""


@dataclass
class EntityLayout:
    """One entity's part of a shard's layout."""

    keys: list[str]
    layouts: dict[str, list[str]] = field(default_factory=dict)
    # accumulator signature -> event time it counts from; None: from the shard's first event
    # after the change (the shard held no state when it was made)
    since: dict[str, int | None] = field(default_factory=dict)

    def start_pending(self, ts: int) -> bool:
        """Record ``ts`` as the start of accumulators still waiting for their first event;
        True if there were any."""
        pending = [sig for sig, start in self.since.items() if start is None]
        for sig in pending:
            self.since[sig] = ts
        return bool(pending)


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
    time), or, when the shard holds no state, from its first event after the change (they are
    pending: :meth:`EntityLayout.start_pending`): the job read earlier events without counting
    them, and a longer window or a lifetime one would have held some. An accumulator is new
    unless every stored layout has it or it is already counting from a recorded time (one
    removed and added back starts empty again); so is every accumulator of an entity the stored
    layout does not have. Raises :class:`StoredLayoutMismatch` for changes that cannot be
    carried over.
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
        if old is not None and old.keys != keys:
            raise StoredLayoutMismatch(
                f"entity {name!r}: its stored state is keyed by {', '.join(old.keys)}, the "
                f"definitions key it by {', '.join(keys)}: the stored ids would mean something "
                f"else. Keep the keys, or give the new key a new entity name (it starts empty)")
        layouts = {} if old is None or now is None else dict(old.layouts)  # still referenced
        kept = set() if old is None else set(plan.layout).intersection(*old.layouts.values())
        since = {} if old is None else {sig: t for sig, t in old.since.items()
                                        if sig in plan.layout}
        since.update({sig: now for sig in plan.layout if sig not in kept and sig not in since})
        entities[name] = EntityLayout(keys, {**layouts, plan.layout_id: plan.layout}, since)
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


def warming(plan: EntityPlan, since: Mapping[str, int | None]) -> list[tuple[str, int | None]]:
    """The features still warming up, with when they are complete (None: never, a lifetime
    aggregation added to existing state); compared with each row's ``as_of``. A ratio warms
    up as long as what it divides does (ratios come after the features they read). Pending
    starts (None) must be recorded first: a row exists only after an event."""
    ends: dict[str, int | None] = {}
    for feature in plan.features:
        f = feature.feature
        if f.kind == "ratio":
            parts = [ends[p] for p in (f.numerator, f.denominator) if p in ends]
            if parts:
                ends[f.name] = None if None in parts else max(p for p in parts if p is not None)
            continue
        starts = [since[sig] for p in feature.accumulators
                  if (sig := plan.accumulators[p].signature) in since]
        known = [t for t in starts if t is not None]
        if known:
            length = feature.length_ms
            ends[f.name] = None if length is None else max(known) + length
    return list(ends.items())


# -- Published layout and plans -------------------------------------------------------------

PUBLISHED_FORMAT = 1  # of describe()'s output, which a job publishes in Redis


def describe(plans: Mapping[str, EntityPlan], shards: int) -> dict[str, Any]:
    """The layout a job runs, as it publishes it (JSON-ready) for ``featurestream plan``.

    Per entity: its keys, its accumulator signatures, and per feature its definition as text,
    the signatures it reads (a feature whose accumulators the running job keeps loses nothing,
    whatever it is called), its window's length (warm-up) and, for a ratio, what it divides.
    """
    return {"format": PUBLISHED_FORMAT, "shards": shards, "entities": {
        name: {"keys": list(plan.entity.keys), "accumulators": plan.layout,
               "features": {f.feature.name: _published(plan, f) for f in plan.features}}
        for name, plan in plans.items()}}


def _published(plan: EntityPlan, spec: FeatureSpec) -> dict[str, Any]:
    accumulators = [plan.accumulators[p] for p in spec.accumulators]
    feature = spec.feature
    return {"definition": feature_text(feature, accumulators[0].source if accumulators else None),
            "accumulators": [a.signature for a in accumulators],
            "window_ms": spec.length_ms,
            "reads": [p for p in (feature.numerator, feature.denominator) if p is not None]}


def feature_text(feature: Feature, source: str | None) -> str:
    """A feature's definition as one line, e.g. ``sum(amount) over 1h of events where
    eq('event_type', 'purchase')``."""
    if feature.kind == "ratio":
        return f"ratio({feature.numerator} / {feature.denominator})"
    args = [feature.field] if feature.field is not None else []
    if feature.kind == "last_n":
        args.append(f"n={feature.n}")
    if feature.kind == "approx_distinct":
        args.append(f"lg_k={feature.lg_k}")
    text = f"{feature.kind}({', '.join(a for a in args if a)})"
    if feature.window is not None:
        text += f" over {feature.window}"
    if source is not None:
        text += f" of {source}"
    if feature.where.conditions:
        text += f" where {feature.where.describe()}"
    return text


def parse_published(text: str | bytes) -> dict[str, Any]:
    """A published layout read back (ValueError naming the problem if it is not one)."""
    try:
        layout = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"it is not JSON ({exc})") from None
    if not isinstance(layout, dict) or layout.get("format") != PUBLISHED_FORMAT:
        found = layout.get("format") if isinstance(layout, dict) else None
        raise ValueError(f"it has format {found!r} and this release reads format "
                         f"{PUBLISHED_FORMAT}: run the plan with the job's release")
    return layout


@dataclass(frozen=True)
class FeatureChange:
    """An added, changed or removed feature (``definition``: the new one; removed: the
    running one) and, for the first two, how it warms up."""

    entity: str
    feature: str
    definition: str
    before: str | None = None  # changed: the running definition
    starts_empty: bool = False  # some of what it reads is new: it misses the history
    complete_after_ms: int | None = None  # starts_empty: its window; None: never (lifetime)
    whole_entity: bool = False  # the entity is added (or removed) with it

    @property
    def name(self) -> str:
        """``entity.feature``."""
        return f"{self.entity}.{self.feature}"


@dataclass(frozen=True)
class Refusal:
    """A change the job cannot carry over: it would refuse to start."""

    subject: str  # "state shards", "entity 'user'"
    reason: str
    fix: str


@dataclass
class PlanReport:
    """What resubmitting with new definitions would do to a running job's state."""

    added: list[FeatureChange] = field(default_factory=list)
    removed: list[FeatureChange] = field(default_factory=list)
    changed: list[FeatureChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # "entity.feature"
    refused: list[Refusal] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.refused)

    @property
    def can_apply(self) -> bool:
        """Whether the job would start from its savepoint with the new definitions."""
        return not self.refused


def plan_changes(running: Mapping[str, Any], new: Mapping[str, Any]) -> PlanReport:
    """Compare a published layout (:func:`describe`) with the layout of new definitions.

    As :func:`reconcile` does on restore: a feature starts empty when one of the accumulators
    it reads is not in the running layout (a ratio when what it divides does), and warms up
    for its window; one that only reads kept accumulators (renamed, say) keeps its state.
    Refused: another shard count, another entity key.
    """
    report = PlanReport()
    if running["shards"] != new["shards"]:
        report.refused.append(Refusal(
            "state shards", f"{running['shards']} -> {new['shards']}: the shard count is fixed "
            "for the life of the state", f"set FEATURESTREAM_STATE_SHARDS back to "
            f"{running['shards']}"))
    old_entities, new_entities = running["entities"], new["entities"]
    for name, entity in new_entities.items():
        old = old_entities.get(name)
        if old is not None and old["keys"] != entity["keys"]:
            report.refused.append(Refusal(
                f"entity {name!r}", f"keys {', '.join(old['keys'])} -> "
                f"{', '.join(entity['keys'])}: the stored ids would mean something else",
                "keep the keys, or give the new key a new entity name (it starts empty)"))
        kept = set(old["accumulators"]) if old is not None else set()
        warm = _warm_ups(entity["features"], kept)
        old_features = old["features"] if old is not None else {}
        for feature, now in entity["features"].items():
            before = old_features.get(feature)
            change = FeatureChange(name, feature, now["definition"], whole_entity=old is None,
                                   starts_empty=feature in warm,
                                   complete_after_ms=warm.get(feature))
            if before is None:
                report.added.append(change)
            elif (before["definition"], before["accumulators"]) != (
                    now["definition"], now["accumulators"]):
                report.changed.append(replace(change, before=before["definition"]))
            else:
                report.unchanged.append(change.name)
        report.removed += [FeatureChange(name, f, text["definition"]) for f, text
                           in old_features.items() if f not in entity["features"]]
    for name, old in old_entities.items():
        if name not in new_entities:
            report.removed += [FeatureChange(name, f, text["definition"], whole_entity=True)
                               for f, text in old["features"].items()]
    return report


def _warm_ups(features: Mapping[str, Any], kept: set[str]) -> dict[str, int | None]:
    """The features that start empty, with how long they warm up (None: never complete),
    given the accumulators the running job keeps (the rule of :func:`warming`)."""
    ends: dict[str, int | None] = {}
    for name, feature in features.items():
        if set(feature["accumulators"]) - kept:
            ends[name] = feature["window_ms"]
    for name, feature in features.items():
        parts = [ends[p] for p in feature["reads"] if p in ends]
        if parts:
            ends[name] = None if None in parts else max(p for p in parts if p is not None)
    return ends
