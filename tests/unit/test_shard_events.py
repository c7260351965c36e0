"""Decode and shard: every entity a source feeds gets the event in the stable shard of its state
key, in arrival order, with the fields its plan reads; failures (undecodable, unknown topic,
empty key, too far in the future) kept apart; subtask records (shard groups of events or
checkpoint markers) round-trip through their byte layout, whose header Java reads."""

from __future__ import annotations

import struct
import zlib

from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.records import RecordEncoder, decoder_for
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.definitions.defaults import ITEM, USER, events_source
from featurestream.udfs.definitions.filters import eq
from featurestream.udfs.definitions.model import Entity, Feature, FeatureGroup, Source, validate
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.features.routing import (
    MARKER_TIME,
    EventRouter,
    ShardEvent,
    ShardGroup,
    SubtaskRecord,
    checkpoint_marker,
    decode_subtask_record,
    encode_subtask_record,
    shard_of,
    subtask_record,
)
from featurestream.udfs.wire.dead_letters import ErrorClass, Stage
from featurestream.udfs.wire.frames import encode_source_frame

SCHEMAS = FileSchemaRegistry()
ENCODER = EventEncoder(SCHEMAS)
EVENTS = events_source("events")
PAYMENTS = Source("payments", topic="payments", timestamp="at",
                  fields={"merchant_id": "string", "card": "long", "amount": "double",
                          "at": "long"})
PAIR = Entity("pair", keys=("merchant_id", "card"))
DEFINITIONS = validate([
    FeatureGroup("user_activity", USER, EVENTS, (
        Feature("views_1h", "count", window="1h", where=eq("event_type", "view")),
        Feature("spend_1h", "sum", field="amount", window="1h"))),
    FeatureGroup("item_activity", ITEM, EVENTS, (Feature("events_1h", "count", window="1h"),)),
    FeatureGroup("pair_spend", PAIR, PAYMENTS, (
        Feature("max_1h", "max", field="amount", window="1h"),)),
])
PLANS = compile_plans(DEFINITIONS)


def router(shards: int, now: int = 2_000_000_000_000) -> EventRouter:
    return EventRouter(PLANS, {s.name: decoder_for(s, SCHEMAS) for s in DEFINITIONS.sources},
                       shards, clock=lambda: now)


def frame(offset: int, value: bytes, topic: str = "events") -> bytes:
    return encode_source_frame(topic, 0, offset, 0, value)


def test_each_entity_gets_its_events_grouped_by_shard_in_arrival_order() -> None:
    events = [Event(f"e{i}", f"user-{i % 5}", "purchase" if i % 3 else "view",
                    f"item-{i % 4}" if i % 7 else None, 1.5 if i % 3 else None, 1_000 + i, None)
              for i in range(40)]
    frames = [frame(i, ENCODER.avro(e) if i % 2 else ENCODER.json(e))
              for i, e in enumerate(events)]
    frames.insert(7, frame(99, b"not an event"))
    groups, failed = router(3).group_by_shard(frames)
    assert [(f, error.error_class) for f, error in failed] == [(frames[7], "MalformedRecord")]
    for shard, members in groups.items():
        assert {shard_of(m.key, 3) for m in members} == {shard}
    got = sorted((m for members in groups.values() for m in members),
                 key=lambda m: (m.ts, m.entity))
    user, item = PLANS["user"], PLANS["item"]
    assert user.fields == (("event_type", "amount"),) and item.fields == ((),)
    want = []
    for i, e in enumerate(events):
        source_frame = frames[i + (i >= 7)]
        if e.item_id is not None:  # an event without an item does not count for items
            want.append(ShardEvent("item", f"item:{e.item_id}", e.ts, 0, (), source_frame))
        want.append(ShardEvent("user", f"user:{e.user_id}", e.ts, 0, (e.event_type, e.amount),
                               source_frame))
    assert got == want
    for members in groups.values():
        assert [m.ts for m in members] == sorted(m.ts for m in members)  # arrival order
    shard_groups = [ShardGroup(shard + 100, members) for shard, members in groups.items()]
    record = subtask_record(shard_groups)
    assert record == SubtaskRecord(shard_groups[0].key, max(m.ts for m in got), shard_groups)
    decoded = decode_subtask_record(encode_subtask_record(record))
    assert decoded == record
    assert all(type(m) is ShardEvent for group in decoded.groups for m in group.events)


def test_composite_keys_unknown_topics_and_empty_keys() -> None:
    encoder = RecordEncoder(PAYMENTS, SCHEMAS)
    good = frame(1, encoder.json({"merchant_id": "m|1", "card": 42, "amount": 2.5, "at": 9}),
                 "payments")
    empty = frame(2, encoder.avro({"merchant_id": "", "card": 1, "amount": 1.0, "at": 9}),
                  "payments")
    stray = frame(3, b"{}", "elsewhere")
    groups, failed = router(5).group_by_shard([good, empty, stray])
    [[event]] = groups.values()
    assert event == ShardEvent("pair", "pair:m|1|42", 9, 0, (2.5,), good)
    assert next(iter(groups)) == shard_of("pair:m|1|42", 5)
    assert [(f, p.error_class) for f, p in failed] == [
        (empty, ErrorClass.INVALID_VALUE), (stray, ErrorClass.MALFORMED_RECORD)]
    assert "'merchant_id' is empty" in failed[0][1].message
    assert "'elsewhere' is not the topic of any source" in failed[1][1].message
    assert sorted(router(5).topics) == ["events", "payments"]


def test_events_too_far_ahead_of_the_clock_fail_and_the_rest_of_the_batch_is_routed() -> None:
    """The bound is ``now + max_future_skew_ms``, read once per batch: at it, accepted."""
    now, skew, year_3000 = 1_764_000_000_000, 60_000, 32_503_680_000_000
    ticks = iter([now, now + 10**9])  # a second batch would see the next reading
    at_bound = Event("e1", "u1", "view", None, None, now + skew, None)
    poison = Event("e2", "u2", "view", "i1", None, year_3000, None)
    past_bound = Event("e3", "u1", "view", None, None, now + skew + 1, None)
    after = [Event(f"e{4 + i}", f"u{i % 3}", "click", "i2", None, now - i, None)
             for i in range(5)]
    frames = [frame(i, ENCODER.avro(e) if i % 2 else ENCODER.json(e))
              for i, e in enumerate([at_bound, poison, past_bound, *after])]
    shards = EventRouter(PLANS, {s.name: decoder_for(s, SCHEMAS) for s in DEFINITIONS.sources},
                         4, max_future_skew_ms=skew, clock=lambda: next(ticks))
    groups, failed = shards.group_by_shard(frames)
    assert [f for f, _ in failed] == [frames[1], frames[2]]
    for _, problem in failed:
        assert (problem.stage, problem.error_class) == (Stage.WINDOW, ErrorClass.FUTURE_EVENT)
        assert "FEATURESTREAM_MAX_FUTURE_SKEW_MS (60000 ms)" in problem.message
        assert f"wall clock {now} (2025-11-24T16:00:00.000+00:00)" in problem.message
    assert (f"event time {year_3000} (3000-01-01T00:00:00.000+00:00) is "
            f"{year_3000 - now} ms ahead") in failed[0][1].message
    assert f"event time {now + skew + 1} " in failed[1][1].message
    assert "is 60001 ms ahead" in failed[1][1].message
    routed = sorted((e.frame, e.key) for events in groups.values() for e in events)
    want = [(frames[0], "user:u1")] + [
        (frames[3 + i], key) for i, e in enumerate(after)
        for key in (f"user:{e.user_id}", "item:i2")]
    assert routed == sorted(want)
    assert max(e.ts for events in groups.values() for e in events) == now + skew
    assert next(ticks) == now + 10**9, "the clock is read once per batch"


def test_a_future_event_past_the_calendar_still_gets_a_message() -> None:
    micros = Event("e1", "u1", "view", None, None, 1_764_000_000_000_000_000, None)
    _, [(_, problem)] = router(1).group_by_shard([frame(0, ENCODER.json(micros))])
    assert problem.error_class is ErrorClass.FUTURE_EVENT
    assert "(out of the calendar's range) is " in problem.message


def test_a_subtask_record_header_is_its_first_shard_key_and_newest_event_time() -> None:
    """What ``ShardRecords.java`` reads: i32 key, i64 newest event time, big-endian."""
    events = [ShardEvent("user", "user:u", ts, 0, (None,), b"f") for ts in (5, -3, 2**40)]
    encoded = encode_subtask_record(subtask_record([ShardGroup(-7, events[:1]),
                                                    ShardGroup(9, events[1:])]))
    assert struct.unpack_from(">iq", encoded) == (-7, 2**40)
    marker = encode_subtask_record(checkpoint_marker([12, 4]))
    assert struct.unpack_from(">iq", marker) == (12, MARKER_TIME)
    assert [(g.key, g.is_checkpoint_marker) for g in decode_subtask_record(marker).groups] == [
        (12, True), (4, True)]
    assert not any(g.is_checkpoint_marker for g in decode_subtask_record(encoded).groups)


def test_shards_are_stable_across_processes() -> None:
    assert shard_of("user:42", 16) == zlib.crc32(b"user:42") % 16 == shard_of("user:42", 16)
