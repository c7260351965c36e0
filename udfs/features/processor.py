"""The per-entity feature logic of the feature job, free of Flink.

:class:`FeatureProcessor` counts an event into an entity's :class:`EntityState` (or rejects it as
late or expired), advances the entity's windows in event time, tells when its next expiry is due
and builds its feature row, following one :class:`udfs.features.plan.EntityPlan`.
:class:`udfs.features.shard.EntityShard` drives it for the entities of one state shard.

Row semantics: a row is the entity's features *as of* event time ``as_of``, the latest of its
event times and the expiry times that have passed. ``version`` counts the events counted for
the entity, so rows with the same ``as_of`` (a late event) still order; ``(as_of, version)``
only grows, and a replay from a checkpoint rebuilds the same row under the same pair, which
makes Redis writes idempotent.

Expiry: an entity's next expiry is its next bucket expiry (rows fall back as events age out);
once every window is empty, the end of the allowed lateness, when the state is cleared. An
entity with a lifetime aggregation keeps its state for good.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from featurestream.udfs.aggregations.windows import BUCKETS_PER_WINDOW
from featurestream.udfs.features.codegen import RowOf, compile_feed, compile_row, compile_windows
from featurestream.udfs.features.plan import EntityPlan
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

Row = dict[str, Any]

# A window's state: [bucket -> events, oldest live bucket or None, accumulator states].
WindowState = list


class EntityState:
    """Everything the job keeps for one entity instance.

    ``expiry`` is the event time at which the entity's windows must next be advanced (see
    :meth:`FeatureProcessor.next_expiry`), kept so a restored shard reschedules it. ``layout`` is
    the plan's layout id the accumulator states follow (:mod:`udfs.features.layout`).
    """

    __slots__ = ("as_of", "expiry", "last_event_ts", "layout", "version", "windows")

    def __init__(self, layout: str, windows: list[WindowState], as_of: int) -> None:
        self.layout = layout
        self.as_of = as_of
        self.last_event_ts: int | None = None
        self.version = 0
        self.expiry: int | None = None
        self.windows = windows


class FeatureProcessor:
    """Counts events into an entity's windows, expires buckets and builds feature rows."""

    def __init__(self, plan: EntityPlan, allowed_lateness_ms: int) -> None:
        self.plan = plan
        self.allowed_lateness_ms = allowed_lateness_ms
        self.layout_id = plan.layout_id
        self._accumulators = [spec.make() for spec in plan.accumulators]
        windows = plan.windows
        self._slots = plan.slots
        self._anchors = plan.anchors
        self._feeds = [compile_feed(plan, source, self._accumulators)
                       for source in range(len(plan.sources))]
        self.new_windows, self._advance, self._next_bucket_expiry = compile_windows(
            plan, self._accumulators)
        # (window, hop) of the sliding windows, shortest first; the largest decides which events
        # are too old to count, unless a lifetime window takes everything
        sliding = [(i, w.hop_ms) for i, w in enumerate(windows) if w.hop_ms is not None]
        self._keeps_state = len(sliding) < len(windows)  # a lifetime window
        self._largest = None if self._keeps_state or not sliding else sliding[-1]
        self.row: RowOf = compile_row(plan, self._accumulators)  # the entity's row, as of as_of

    def empty_stored(self) -> list:
        """Empty windows in stored form (what :meth:`load_windows` takes)."""
        return [({}, [self._accumulators[p].dump(self._accumulators[p].initialize())
                      for p in slots]) for slots in self._slots]

    def accept(self, state: EntityState | None, ts: int, source: int, values: Sequence[Any],
               watermark: int) -> EntityState | Problem:
        """Count one event into ``state`` (created for a new entity): the state, or why the
        event is not counted (late or expired; a rejected event changes nothing)."""
        if ts < watermark - self.allowed_lateness_ms:
            return Problem(
                Stage.WINDOW, ErrorClass.LATE_EVENT,
                f"event time {ts} is {watermark - ts} ms behind the watermark {watermark}; "
                f"allowed lateness is {self.allowed_lateness_ms} ms",
            )
        if state is None:
            state = EntityState(self.layout_id, self.new_windows(), ts)
        elif ts > state.as_of:
            self.advance(state, ts)
        elif self._largest is not None and ts < self._first_live_ts(state.as_of):
            return Problem(
                Stage.WINDOW, ErrorClass.EXPIRED_EVENT,
                f"event time {ts} is older than the largest window "
                f"({self.plan.windows[self._largest[0]].name}) as of the row at {state.as_of}",
            )
        self._feeds[source](state.windows, ts, values, state.as_of)
        if state.last_event_ts is None or ts > state.last_event_ts:
            state.last_event_ts = ts
        state.version += 1
        return state

    def advance(self, state: EntityState, as_of: int) -> bool:
        """Move the entity's event time forward to ``as_of``; True if any bucket expired."""
        if as_of <= state.as_of:
            return False
        state.as_of = as_of
        return self._advance(state.windows, as_of)

    def next_expiry(self, state: EntityState) -> int | None:
        """When the entity's windows must next advance: its next bucket expiry, else state
        cleanup; None when a lifetime window keeps the state for good."""
        due = self._next_bucket_expiry(state.windows)
        if due is not None:
            return due
        if self._keeps_state:
            return None
        return self.cleanup_time(state)

    def cleanup_time(self, state: EntityState) -> int:
        """When an idle entity's state may go: late events for it are accepted until the
        watermark passes ``as_of`` + allowed lateness; after that every new event is newer."""
        return state.as_of + self.allowed_lateness_ms + 1

    def is_empty(self, state: EntityState) -> bool:
        """True when every window is empty and nothing is kept for good."""
        return (not self._keeps_state
                and all(window[1] is None for window in state.windows))

    def _first_live_ts(self, as_of: int) -> int:
        hop = self._largest[1]  # type: ignore[index]
        return (as_of // hop - BUCKETS_PER_WINDOW + 1) * hop

    # -- Stored form ------------------------------------------------------------------------

    def to_bytes(self, state: EntityState) -> bytes:
        """The state as Flink stores it: a pickle of builtins only."""
        windows = [(w[0], [self._accumulators[p].dump(s)
                           for p, s in zip(self._slots[wi], w[2], strict=True)])
                   for wi, w in enumerate(state.windows)]
        return pickle.dumps((state.layout, state.as_of, state.last_event_ts, state.version,
                             state.expiry, windows), protocol=5)

    def from_bytes(self, data: bytes) -> tuple[EntityState, list]:
        """The stored state and its windows as stored (``layout`` names their order); the
        windows are usable only when ``state.layout == self.layout_id``
        (:func:`udfs.features.layout.convert` carries other layouts over)."""
        layout, as_of, last_ts, version, expiry, stored = pickle.loads(data)
        state = EntityState(layout, [], as_of)
        state.last_event_ts, state.version, state.expiry = last_ts, version, expiry
        return state, stored

    def load_windows(self, state: EntityState, stored: list) -> None:
        """Install windows stored in this plan's layout. A window with an anchor count uses its
        buckets as the bucket record again; buckets only other accumulators hold (an anchor
        added to existing state) enter it with a count of 0."""
        windows = []
        for wi, (sizes, stored_accs) in enumerate(stored):
            accs = [self._accumulators[p].load(s)
                    for p, s in zip(self._slots[wi], stored_accs, strict=True)]
            anchor = self._anchors[wi]
            if anchor is not None:
                buckets = accs[anchor][0]
                for k in sizes:
                    buckets.setdefault(k, 0)
                sizes = buckets
            windows.append([sizes, min(sizes) if sizes else None, accs])
        state.windows = windows
