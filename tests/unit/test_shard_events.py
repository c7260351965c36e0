"""Decode and shard: events grouped by a stable shard in arrival order, failures kept apart,
and shard records (events or checkpoint markers) round-trip through their byte layout, whose
header Java reads; a shard refuses state written with another shard count."""

from __future__ import annotations

import struct
import zlib

from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.features.routing import (
    MARKER_TIME,
    ShardEvent,
    ShardRecord,
    checkpoint_marker,
    decode_shard_record,
    encode_shard_record,
    group_by_shard,
    shard_of,
    shard_record,
)
from featurestream.udfs.features.shard import shard_count_problem
from featurestream.udfs.features.windows import TYPE_INDEX
from featurestream.udfs.wire.frames import encode_source_frame

SCHEMAS = FileSchemaRegistry()
ENCODER = EventEncoder(SCHEMAS)


def frame(offset: int, value: bytes) -> bytes:
    return encode_source_frame("events", 0, offset, 0, value)


def test_events_are_grouped_by_shard_in_arrival_order_and_failures_kept() -> None:
    events = [Event(f"e{i}", f"user-{i % 5}", "purchase" if i % 3 else "view", f"item-{i}",
                    1.5 if i % 3 else None, 1_000 + i, None) for i in range(40)]
    frames = [frame(i, ENCODER.avro(e) if i % 2 else ENCODER.json(e))
              for i, e in enumerate(events)]
    frames.insert(7, frame(99, b"not an event"))
    groups, failed = group_by_shard(frames, EventDecoder(SCHEMAS), 3)
    assert [(f, error.error_class) for f, error in failed] == [(frames[7], "MalformedRecord")]
    for shard, members in groups.items():
        assert {shard_of(m[0], 3) for m in members} == {shard}
    regrouped = sorted((m for members in groups.values() for m in members),
                       key=lambda m: m[1])
    assert regrouped == [(e.user_id, e.ts, TYPE_INDEX[e.event_type], e.amount, e.item_id,
                          frames[i + (i >= 7)]) for i, e in enumerate(events)]
    for members in groups.values():
        assert [m[1] for m in members] == sorted(m[1] for m in members)  # arrival order
        record = shard_record(shard + 100, members)
        assert record == ShardRecord(shard + 100, max(m.ts for m in members), members)
        assert decode_shard_record(encode_shard_record(record)) == record
        assert all(type(m) is ShardEvent for m in decode_shard_record(
            encode_shard_record(record)).events)


def test_a_shard_record_header_is_its_key_and_newest_event_time() -> None:
    """What ``ShardRecords.java`` reads: i32 key, i64 newest event time, big-endian."""
    events = [ShardEvent("u", ts, 0, None, None, b"f") for ts in (5, -3, 2**40)]
    encoded = encode_shard_record(shard_record(-7, events))
    assert struct.unpack_from(">iq", encoded) == (-7, 2**40)
    marker = encode_shard_record(checkpoint_marker(12))
    assert marker == struct.pack(">iq", 12, MARKER_TIME)
    assert decode_shard_record(marker).is_checkpoint_marker
    assert not decode_shard_record(encoded).is_checkpoint_marker


def test_shards_are_stable_across_processes() -> None:
    assert shard_of("user-42", 16) == zlib.crc32(b"user-42") % 16 == shard_of("user-42", 16)


def test_a_shard_refuses_state_written_with_another_shard_count() -> None:
    assert shard_count_problem(None, 16) is None
    assert shard_count_problem(b"16", 16) is None
    problem = shard_count_problem(b"32", 16)
    assert problem is not None
    assert "written with 32 state shards" in problem
    assert "FEATURESTREAM_STATE_SHARDS is 16: set it back to 32" in problem
