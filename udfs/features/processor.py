"""The per-user feature logic of the feature job, free of Flink.

:class:`FeatureProcessor` counts an event into a user's :class:`UserState` (or rejects it as
late or expired), advances the user's windows in event time, tells when the user's next expiry
is due and builds the user's feature row. :class:`udfs.features.shard.UserShard` drives it for
the users of one state shard.

Row semantics: a row is the user's features *as of* event time ``as_of``, the latest of the
user's event times and the expiry times that have passed. ``version`` counts the events counted
for the user, so rows with the same ``as_of`` (a late event) still order; ``(as_of, version)``
only grows, and a replay from a checkpoint rebuilds the same row under the same pair, which
makes Redis writes idempotent.

Expiry: a user's next expiry is the next bucket expiry (rows fall back as events age out); once
every window is empty, the end of the allowed lateness, when the state is cleared.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

from featurestream.udfs.features.definitions import Feature, Value, compile_feature, window_specs
from featurestream.udfs.features.windows import BUCKETS_PER_WINDOW, Window, WindowSpec
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

Row = dict[str, Value]


class UserState:
    """Everything the job keeps for one user.

    ``expiry`` is the event time at which the user's windows must next be advanced (see
    :meth:`FeatureProcessor.next_expiry`), kept so a restored shard reschedules its users.
    """

    __slots__ = ("as_of", "expiry", "last_event_ts", "version", "windows")

    def __init__(self, specs: Sequence[WindowSpec], as_of: int) -> None:
        self.as_of = as_of
        self.last_event_ts: int | None = None
        self.version = 0
        self.expiry: int | None = None
        self.windows = [Window(spec.track_items) for spec in specs]

    def to_bytes(self) -> bytes:
        """The state as Flink stores it: a pickle of builtins only."""
        return pickle.dumps((self.as_of, self.last_event_ts, self.version, self.expiry,
                             [w.to_plain() for w in self.windows]), protocol=5)

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        """Inverse of :meth:`to_bytes`."""
        state = cls.__new__(cls)
        state.as_of, state.last_event_ts, state.version, state.expiry, windows = \
            pickle.loads(data)
        state.windows = [Window.from_plain(w) for w in windows]
        return state


class FeatureProcessor:
    """Counts events into a user's windows, expires buckets and builds feature rows."""

    def __init__(self, features: Sequence[Feature], allowed_lateness_ms: int) -> None:
        self.features = tuple(features)
        self.specs = window_specs(self.features)
        self.allowed_lateness_ms = allowed_lateness_ms
        self._extractors = [
            (f.name, self._window_index(f.window), compile_feature(f)) for f in self.features
        ]
        self._hops = [spec.hop_ms for spec in self.specs]
        self._indexed_hops = list(enumerate(self._hops))
        self._largest = self.specs[-1]

    def _window_index(self, name: str | None) -> int | None:
        if name is None:
            return None
        return next(i for i, spec in enumerate(self.specs) if spec.name == name)

    def accept(self, state: UserState | None, ts: int, type_index: int, amount: float | None,
               item_id: str | None, watermark: int) -> UserState | Problem:
        """Count one event into ``state`` (created for a new user): the user's state, or why
        the event is not counted (late or expired; a rejected event changes nothing)."""
        if ts < watermark - self.allowed_lateness_ms:
            return Problem(
                Stage.WINDOW, ErrorClass.LATE_EVENT,
                f"event time {ts} is {watermark - ts} ms behind the watermark {watermark}; "
                f"allowed lateness is {self.allowed_lateness_ms} ms",
            )
        if state is None:
            state = UserState(self.specs, ts)
        elif ts > state.as_of:
            self.advance(state, ts)
        elif ts < self._first_live_ts(state.as_of, len(self.specs) - 1):
            return Problem(
                Stage.WINDOW, ErrorClass.EXPIRED_EVENT,
                f"event time {ts} is older than the largest window ({self._largest.name}) "
                f"as of the user's row at {state.as_of}",
            )
        as_of = state.as_of
        windows = state.windows
        for i, hop in self._indexed_hops:
            k = ts // hop
            if k > as_of // hop - BUCKETS_PER_WINDOW:
                windows[i].add(k, type_index, amount, item_id)
        if state.last_event_ts is None or ts > state.last_event_ts:
            state.last_event_ts = ts
        state.version += 1
        return state

    def advance(self, state: UserState, as_of: int) -> bool:
        """Move the user's event time forward to ``as_of``; True if any bucket expired."""
        if as_of <= state.as_of:
            return False
        state.as_of = as_of
        expired = False
        for i, hop in self._indexed_hops:
            if state.windows[i].expire_before(as_of // hop - BUCKETS_PER_WINDOW + 1):
                expired = True
        return expired

    def next_expiry(self, state: UserState) -> int:
        """When the user's windows must next advance: next bucket expiry, or state cleanup."""
        expiries = [
            (window.oldest + BUCKETS_PER_WINDOW) * hop
            for window, hop in zip(state.windows, self._hops, strict=True)
            if window.oldest is not None
        ]
        return min(expiries) if expiries else self.cleanup_time(state)

    def cleanup_time(self, state: UserState) -> int:
        """When an idle user's state may go: late events for this user are accepted until the
        watermark passes ``as_of`` + allowed lateness; after that every new event is newer."""
        return state.as_of + self.allowed_lateness_ms + 1

    @staticmethod
    def is_empty(state: UserState) -> bool:
        """True when every window is empty."""
        return all(window.oldest is None for window in state.windows)

    def _first_live_ts(self, as_of: int, window_index: int) -> int:
        hop = self._hops[window_index]
        return (as_of // hop - BUCKETS_PER_WINDOW + 1) * hop

    def row(self, state: UserState) -> Row:
        """The user's feature row as of ``state.as_of``."""
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
