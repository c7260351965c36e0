"""The feature operator's keyed glue, driven through the harness's in-memory ports: the stored
layout check, the shard-count entry, dead letters and counters, and idle shards that leave no
users and no timers behind."""

from __future__ import annotations

import pytest

from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.definitions import default_features
from featurestream.udfs.features.operator import StoredLayoutMismatch
from featurestream.udfs.features.processor import FeatureProcessor
from featurestream.udfs.features.routing import shard_of
from featurestream.udfs.features.shard import SHARD_COUNT_ENTRY
from featurestream.udfs.wire.dead_letters import ErrorClass, Stage
from tests.harness import ShardHarness

DAY = 86_400_000


def harness(shards: int = 4, lateness: int = 60_000) -> ShardHarness:
    processor = FeatureProcessor(default_features(("1m", "1h")), allowed_lateness_ms=lateness)
    return ShardHarness(processor, shard_count=shards)


def events(count: int, users: int = 9) -> list[Event]:
    return [Event(f"e{i}", f"u{i % users}", "purchase", f"i{i % 4}", 2.0, 10_000 + i * 1_000,
                  None) for i in range(count)]


def test_a_shard_records_the_shard_count_when_first_touched() -> None:
    h = harness(shards=3)
    h.process_bundle(events(20))
    assert {n: m[SHARD_COUNT_ENTRY] for n, m in h.map_states.items()} == {
        n: b"3" for n in h.operator.shards}
    h.checkpoint()  # the marker touches every shard
    assert sorted(h.map_states) == [0, 1, 2]
    assert all(m[SHARD_COUNT_ENTRY] == b"3" for m in h.map_states.values())


def test_state_written_with_another_shard_count_is_refused_on_events_and_timers() -> None:
    written = harness(shards=4)
    written.process_bundle(events(30))
    written.checkpoint()
    for first_touch in ("event", "timer"):
        restored = harness(shards=8)
        restored.map_states = {n: type(m)(m) for n, m in written.map_states.items()}
        restored.timers = {n: set(ts) for n, ts in written.timers.items()}
        with pytest.raises(StoredLayoutMismatch, match=(
                "this state was written with 4 state shards, but FEATURESTREAM_STATE_SHARDS "
                "is 8: set it back to 4")):
            if first_touch == "event":
                restored.process_bundle(events(30))
            else:
                restored.advance_watermark(2 * DAY)
        assert restored.rows == [] and restored.rejected == []


def test_a_restarted_operator_loads_each_shard_when_first_touched() -> None:
    h = harness(shards=4)
    h.process_bundle(events(30))
    h.checkpoint()
    h.restart()
    assert h.users() == {} and dict(h.operator.shards) == {}
    h.process(Event("again", "u0", "view", None, None, 60_000, None))
    shard = shard_of("u0", 4)
    assert list(h.operator.shards) == [shard]
    assert h.users().keys() == h.stored[shard].keys()


def test_rejected_events_go_to_the_dead_letters_and_are_counted() -> None:
    h = harness(lateness=60_000)
    h.process_bundle(events(3))
    h.advance_watermark(10 * 60_000)
    late = Event("late", "u1", "view", None, None, 10 * 60_000 - 60_001, None)
    fine = Event("fine", "u1", "view", None, None, 10 * 60_000, None)
    h.process_bundle([late, fine])
    [(event, problem)] = h.rejected
    assert event.frame == b"late" and event.user_id == "u1"
    assert (problem.stage, problem.error_class) == (Stage.WINDOW, ErrorClass.LATE_EVENT)
    counts = {name: count.n for name, count in h.counts.items()}
    assert counts == {"events_in": 5, "late_events": 1, "expired_events": 0,
                      "rows_written": len(h.rows)}


def test_idle_shards_keep_only_the_shard_count_and_no_timers() -> None:
    h = harness(shards=3, lateness=60_000)
    h.process_bundle(events(40))
    h.checkpoint()
    assert h.timers and h.stored
    h.advance_watermark(3 * DAY)
    h.checkpoint()
    assert h.timers == {} and h.users() == {} and h.stored == {}
    assert all(dict(m) == {SHARD_COUNT_ENTRY: b"3"} for m in h.map_states.values())
    h.restart()
    h.advance_watermark(4 * DAY)
    assert h.timers == {} and h.users() == {}
