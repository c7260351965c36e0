"""The feature operator's keyed glue, driven through the harness's in-memory ports: the stored
layout entry and its refusals (another shard count, state of a release before definitions),
dead letters, counters and freshness, and idle shards that leave no entities and no timers
behind."""

from __future__ import annotations

import pytest

from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.layout import LAYOUT_ENTRY, ShardLayout, StoredLayoutMismatch
from featurestream.udfs.features.routing import shard_of
from featurestream.udfs.telemetry.catalog import (
    APPEND_FRESHNESS,
    DEAD_LETTERS,
    EVENT_FRESHNESS,
    EVENTS_IN,
    ROWS_WRITTEN,
)
from featurestream.udfs.telemetry.freshness import LE_LABELS
from featurestream.udfs.wire.dead_letters import ErrorClass, Stage
from tests.harness import DAY, MapState, ShardHarness, record_of, user_definitions


def harness(shards: int = 4, lateness: int = 60_000) -> ShardHarness:
    return ShardHarness(user_definitions(("1m", "1h")), lateness=lateness, shard_count=shards)


def events(count: int, users: int = 9) -> list[Event]:
    return [Event(f"e{i}", f"u{i % users}", "purchase", f"i{i % 4}", 2.0, 10_000 + i * 1_000,
                  None) for i in range(count)]


def test_a_shard_records_its_layout_when_first_touched() -> None:
    h = harness(shards=3)
    h.process_bundle(events(20))
    plan = h.processors["user"].plan
    assert sorted(h.layouts()) == sorted(h.operator.shards)
    for layout in h.layouts().values():
        assert layout.shards == 3 and list(layout.entities) == ["user"]
        assert layout.entities["user"].keys == ["user_id"]
        assert layout.entities["user"].layouts == {plan.layout_id: plan.layout}
        assert layout.entities["user"].since == {}
    h.checkpoint()  # the marker touches every shard
    assert sorted(h.layouts()) == [0, 1, 2]
    stored = {n: m[LAYOUT_ENTRY] for n, m in h.map_states.items()}
    h.checkpoint()
    h.restart()
    h.checkpoint()  # the same definitions: the entry is left as it is
    assert {n: m[LAYOUT_ENTRY] for n, m in h.map_states.items()} == stored


def test_state_written_with_another_shard_count_is_refused_on_events_and_timers() -> None:
    written = harness(shards=4)
    written.process_bundle(events(30))
    written.checkpoint()
    for first_touch in ("event", "timer"):
        restored = harness(shards=8)
        restored.map_states = {n: MapState(m) for n, m in written.map_states.items()}
        restored.timers = {n: set(ts) for n, ts in written.timers.items()}
        with pytest.raises(StoredLayoutMismatch, match=(
                "this state was written with 4 state shards, but FEATURESTREAM_STATE_SHARDS "
                "is 8: set it back to 4")):
            if first_touch == "event":
                restored.process_bundle(events(30))
            else:
                restored.advance_watermark(2 * DAY)
        assert restored.rows == [] and restored.rejected == []


def test_state_of_a_release_before_definitions_is_refused() -> None:
    """Such state kept the shard count alone under the entry (``b"16"``) and its windows by
    position: nothing says what they hold."""
    h = harness(shards=16)
    h.map_states = {n: MapState({LAYOUT_ENTRY: b"16", "u1": b"old pickle"}) for n in range(16)}
    h.timers = {n: {120_000} for n in range(16)}
    for touch in (lambda: h.process_bundle(events(3)), lambda: h.advance_watermark(DAY)):
        with pytest.raises(StoredLayoutMismatch, match=(
                "written by a featurestream release before feature definitions \\(16 shards")):
            touch()
    with pytest.raises(StoredLayoutMismatch, match="Start the feature job without the savepoint"):
        ShardLayout.from_bytes(b"16")
    assert h.rows == [] and all(m[LAYOUT_ENTRY] == b"16" for m in h.map_states.values())


def test_a_restarted_operator_loads_each_shard_when_first_touched() -> None:
    h = harness(shards=4)
    h.process_bundle(events(30))
    h.checkpoint()
    h.restart()
    assert h.entities() == {} and dict(h.operator.shards) == {}
    h.process(Event("again", "u0", "view", None, None, 60_000, None))
    shard = shard_of("user:u0", 4)
    assert list(h.operator.shards) == [shard]
    assert h.entities().keys() == h.stored[shard].keys()
    in_memory = h.shards[shard].entities
    assert h.state_bytes(in_memory) != h.stored[shard]  # u0 counted "again"; not stored yet
    h.checkpoint()
    assert h.state_bytes(in_memory) == h.stored[shard]


def test_rejected_events_go_to_the_dead_letters_and_are_counted() -> None:
    h = harness(lateness=60_000)
    h.process_bundle(events(3))
    h.advance_watermark(10 * 60_000)
    late = Event("late", "u1", "view", None, None, 10 * 60_000 - 60_001, None)
    fine = Event("fine", "u1", "view", None, None, 10 * 60_000, None)
    h.process_bundle([late, fine])
    [(event, problem)] = h.rejected
    assert record_of(event) == late._asdict() and event.key == "user:u1"
    assert (problem.stage, problem.error_class) == (Stage.WINDOW, ErrorClass.LATE_EVENT)
    m = h.metrics
    assert (m.value(EVENTS_IN), m.value(ROWS_WRITTEN)) == (5, len(h.rows))
    assert m.value(DEAD_LETTERS, stage="window", reason="LateEvent") == 1
    assert m.value(DEAD_LETTERS, stage="window", reason="ExpiredEvent") == 0  # registered
    assert m.value(EVENT_FRESHNESS, 1) == 4  # the late event's row was never written


def test_freshness_is_observed_per_counted_event_when_its_row_is_written() -> None:
    h = harness()
    h.now_ms, h.append_ms = 1_000_000, 1_000_000 - 120
    h.process_bundle([Event(f"e{i}", f"u{i}", "view", None, None, 1_000_000 - age, None)
                      for i, age in enumerate((0, 300, 300, 4_000, 90_000))])
    buckets = {le: h.metrics.value(EVENT_FRESHNESS, le=le) for le in LE_LABELS}
    assert buckets == dict(zip(LE_LABELS, (1, 1, 1, 3, 3, 3, 3, 4, 4, 4, 4, 5), strict=True))
    assert h.metrics.value(EVENT_FRESHNESS, 1) == 5
    appended = [h.metrics.value(APPEND_FRESHNESS, le=le) for le in LE_LABELS]
    assert appended == [0, 0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]  # 120 ms: le 0.25
    h.advance_watermark(10 * DAY)  # expiries write rows, but of no new event
    assert h.metrics.value(EVENT_FRESHNESS, 1) == 5


def test_idle_shards_keep_only_their_layout_and_no_timers() -> None:
    h = harness(shards=3, lateness=60_000)
    h.process_bundle(events(40))
    h.checkpoint()
    assert h.timers and h.stored
    layouts = {n: m[LAYOUT_ENTRY] for n, m in h.map_states.items()}
    h.advance_watermark(3 * DAY)
    h.checkpoint()
    assert h.timers == {} and h.entities() == {} and h.stored == {}
    assert {n: dict(m) for n, m in h.map_states.items()} == {
        n: {LAYOUT_ENTRY: entry} for n, entry in layouts.items()}
    h.restart()
    h.advance_watermark(4 * DAY)
    assert h.timers == {} and h.entities() == {}
