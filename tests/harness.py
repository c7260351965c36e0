"""A tiny keyed-operator harness: drives :class:`FeatureProcessor` like Flink would.

It keeps per-key state and event-time timers, applies each :class:`Outcome` exactly as the
Flink adapter does, and fires timers in time order when the watermark advances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from udfs.events import Event
from udfs.feature_processor import FeatureProcessor, Outcome, Rejection, Row, UserState

MIN_WATERMARK = -(2**63)


@dataclass
class KeyedHarness:
    processor: FeatureProcessor
    watermark: int = MIN_WATERMARK
    state: dict[str, UserState] = field(default_factory=dict)
    timers: dict[str, set[int]] = field(default_factory=dict)
    rows: list[tuple[str, Row]] = field(default_factory=list)
    rejected: list[tuple[Event, Rejection]] = field(default_factory=list)

    def process(self, event: Event) -> None:
        outcome = self.processor.on_event(self.state.get(event.user_id), event, self.watermark)
        if outcome.rejection is not None:
            self.rejected.append((event, outcome.rejection))
        self._apply(event.user_id, outcome)

    def advance_watermark(self, watermark: int) -> None:
        self.watermark = max(self.watermark, watermark)
        while True:
            due = [(t, key) for key, ts in self.timers.items() for t in ts if t <= self.watermark]
            if not due:
                return
            t, key = min(due)
            self.timers[key].discard(t)
            self._apply(key, self.processor.on_timer(self.state.get(key), t))

    def _apply(self, key: str, outcome: Outcome) -> None:
        timers = self.timers.setdefault(key, set())
        if outcome.delete_timer is not None:
            timers.discard(outcome.delete_timer)
        if outcome.register_timer is not None:
            timers.add(outcome.register_timer)
        if not timers:
            del self.timers[key]
        if outcome.state is None:
            self.state.pop(key, None)
        else:
            self.state[key] = outcome.state
        if outcome.row is not None:
            self.rows.append((key, outcome.row))

    def latest_rows(self) -> dict[str, Row]:
        latest: dict[str, Row] = {}
        for key, row in self.rows:
            latest[key] = row
        return latest
