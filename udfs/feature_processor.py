"""The per-user feature logic of the feature job, free of Flink.

The Flink ``KeyedProcessFunction`` is a thin adapter: it loads the user's :class:`UserState`,
calls :meth:`FeatureProcessor.on_event` or :meth:`FeatureProcessor.on_timer` and applies the
:class:`Outcome` (store or clear the state, write the row, keep exactly one event-time timer,
send a rejected event to the DLQ). Unit tests drive the same processor with a tiny harness.

Row semantics: a row is the user's features *as of* event time ``as_of``, the latest of the
user's event times and the expiry times that have passed. ``version`` counts the rows emitted
for the user so rows with the same ``as_of`` (a late event) still order; ``(as_of, version)``
only grows, which makes Redis writes idempotent under replay.

Timers: a user has one timer, at the next bucket expiry (rows fall back as events age out);
once every window is empty, at the end of the allowed lateness, when the state is cleared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from udfs.events import Event
from udfs.features import Feature, Value, compile_feature, window_specs
from udfs.windows import BUCKETS_PER_WINDOW, TYPE_INDEX, Window, WindowSpec

Row = dict[str, Value]


class UserState:
    """Everything the job keeps for one user, in one value (one state round trip)."""

    __slots__ = ("as_of", "last_event_ts", "timer", "version", "windows")

    def __init__(self, specs: Sequence[WindowSpec], as_of: int) -> None:
        self.as_of = as_of
        self.last_event_ts: int | None = None
        self.version = 0
        self.timer: int | None = None
        self.windows = [Window(spec.track_items) for spec in specs]

    def __getstate__(self) -> tuple:
        return (self.as_of, self.last_event_ts, self.version, self.timer, self.windows)

    def __setstate__(self, state: tuple) -> None:
        self.as_of, self.last_event_ts, self.version, self.timer, self.windows = state


@dataclass(frozen=True)
class Rejection:
    """Why an event was not counted (it goes to the DLQ with this reason)."""

    error_class: str
    message: str


@dataclass
class Outcome:
    """What the adapter must do after one event or timer, in this order.

    Delete ``delete_timer``, register ``register_timer``, then store ``state`` (None: clear
    it), write ``row`` and dead-letter the event if ``rejection`` says why.
    """

    state: UserState | None
    row: Row | None = None
    rejection: Rejection | None = None
    delete_timer: int | None = None
    register_timer: int | None = None


class FeatureProcessor:
    """Applies events and expiry timers to a user's windows and builds feature rows."""

    def __init__(self, features: Sequence[Feature], allowed_lateness_ms: int) -> None:
        self.features = tuple(features)
        self.specs = window_specs(self.features)
        self.allowed_lateness_ms = allowed_lateness_ms
        self._extractors = [
            (f.name, self._window_index(f.window), compile_feature(f)) for f in self.features
        ]
        self._hops = [spec.hop_ms for spec in self.specs]
        self._largest = self.specs[-1]

    def _window_index(self, name: str | None) -> int | None:
        if name is None:
            return None
        return next(i for i, spec in enumerate(self.specs) if spec.name == name)

    def on_event(self, state: UserState | None, event: Event, watermark: int) -> Outcome:
        """Count ``event`` (or reject it as late/expired) and return the new row."""
        ts = event.ts
        if ts < watermark - self.allowed_lateness_ms:
            return Outcome(state, rejection=Rejection(
                "LateEvent",
                f"event time {ts} is {watermark - ts} ms behind the watermark {watermark}; "
                f"allowed lateness is {self.allowed_lateness_ms} ms",
            ))
        if state is None:
            state = UserState(self.specs, ts)
        elif ts > state.as_of:
            self._advance(state, ts)
        elif ts < self._first_live_ts(state.as_of, len(self.specs) - 1):
            return Outcome(state, rejection=Rejection(
                "ExpiredEvent",
                f"event time {ts} is older than the largest window ({self._largest.name}) "
                f"as of the user's row at {state.as_of}",
            ))
        type_index = TYPE_INDEX[event.event_type]
        for i, window in enumerate(state.windows):
            k = ts // self._hops[i]
            if k >= state.as_of // self._hops[i] - BUCKETS_PER_WINDOW + 1:
                window.add(k, type_index, event.amount, event.item_id)
        if state.last_event_ts is None or ts > state.last_event_ts:
            state.last_event_ts = ts
        return self._with_timer(Outcome(state, row=self._row(state)))

    def on_timer(self, state: UserState | None, timestamp: int) -> Outcome:
        """Advance event time to ``timestamp``: expire buckets, or clear an idle user."""
        if state is None:
            return Outcome(None)
        if state.timer == timestamp:
            state.timer = None  # this timer has fired
        if self._is_empty(state) and timestamp >= self._cleanup_time(state):
            return Outcome(None, delete_timer=state.timer)
        row = None
        if timestamp > state.as_of and self._advance(state, timestamp):
            row = self._row(state)
        return self._with_timer(Outcome(state, row=row))

    def _with_timer(self, outcome: Outcome) -> Outcome:
        """Move the user's single timer to the next time it must fire."""
        state = outcome.state
        wanted = self._next_timer(state)
        if wanted != state.timer:
            outcome.delete_timer = state.timer
            outcome.register_timer = wanted
            state.timer = wanted
        return outcome

    def _next_timer(self, state: UserState) -> int:
        """When this user's next timer must fire: next bucket expiry, or state cleanup."""
        expiries = [
            (oldest + BUCKETS_PER_WINDOW) * hop
            for window, hop in zip(state.windows, self._hops, strict=True)
            if (oldest := window.oldest_bucket()) is not None
        ]
        return min(expiries) if expiries else self._cleanup_time(state)

    def _cleanup_time(self, state: UserState) -> int:
        # Late events for this user are still accepted until the watermark passes
        # as_of + allowed lateness; after that every new event is newer than as_of.
        return state.as_of + self.allowed_lateness_ms + 1

    @staticmethod
    def _is_empty(state: UserState) -> bool:
        return not any(window.buckets for window in state.windows)

    def _first_live_ts(self, as_of: int, window_index: int) -> int:
        hop = self._hops[window_index]
        return (as_of // hop - BUCKETS_PER_WINDOW + 1) * hop

    def _advance(self, state: UserState, as_of: int) -> bool:
        state.as_of = as_of
        expired = False
        for i, window in enumerate(state.windows):
            if window.expire_before(as_of // self._hops[i] - BUCKETS_PER_WINDOW + 1):
                expired = True
        return expired

    def _row(self, state: UserState) -> Row:
        state.version += 1
        row: Row = {"as_of": state.as_of, "version": state.version}
        windows = state.windows
        last_ts = state.last_event_ts
        for name, wi, extract in self._extractors:
            if wi is None:
                row[name] = extract([], None, last_ts)
            else:
                window = windows[wi]
                row[name] = extract(window.totals, window.items, last_ts)
        return row
