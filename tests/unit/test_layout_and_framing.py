"""Redis row encoding, Kafka frames (the Python twins of the Java framers), DLQ records, the
built-in definitions' compiled plan, and the stored shard layout (its bytes, and the refusal of
state from before definitions; ``featurestream plan`` is tested in test_plan.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream.udfs.features.layout import (
    EntityLayout,
    ShardLayout,
    StoredLayoutMismatch,
)
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.store.redis_layout import (
    RowValue,
    decode_row,
    decode_value,
    encode_value,
    upsert_rows_args,
    user_key,
)
from featurestream.udfs.wire.dead_letters import (
    HEADER_ORIGINAL_BYTES,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    ErrorClass,
    Problem,
    Stage,
    dlq_frame,
)
from featurestream.udfs.wire.frames import (
    SourceRecord,
    decode_sink_frame,
    decode_source_frame,
    encode_batch,
    encode_sink_frame,
    encode_source_frame,
    split_batch,
)
from tests.harness import user_definitions

scalars = st.one_of(st.none(), st.integers(-(2**62), 2**62),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                    st.booleans())
values = st.one_of(scalars, st.lists(scalars, max_size=4),
                   st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers())))


@given(values)
def test_values_round_trip_exactly(value: RowValue) -> None:
    assert decode_value(encode_value(value).encode()) == value


def test_upsert_rows_args_and_decode_row() -> None:
    rows: list[dict[str, RowValue]] = [
        {"as_of": 10, "version": 3, "events_1m": 2, "avg_spend_1h": None, "spend_1m": 2.5,
         "warming_up": {"spend_1m": 70, "total": None}},
        {"as_of": 11, "version": 1, "events_1m": 0, "avg_spend_1h": 0.1, "last": ["a", "b"]}]
    args = upsert_rows_args(rows, updated_at_ms=99, ttl_seconds=60)
    assert args[:2] == ["60", "99"]
    at = 2
    for row in rows:
        texts = args[at + 1:at + 1 + int(args[at])]
        assert texts[:4] == ["as_of", str(row["as_of"]), "version", str(row["version"])]
        fields = dict(zip(texts[::2], texts[1::2], strict=True))
        assert decode_row({k.encode(): v.encode() for k, v in fields.items()}) == row
        at += 1 + int(args[at])
    assert at == len(args)
    assert user_key("fs:", "u-1") == "fs:user:u-1"


@given(st.text(min_size=1, max_size=30), st.integers(0, 2**31 - 1), st.integers(0, 2**62),
       st.integers(-1, 2**62), st.binary(max_size=300))
def test_source_frames_round_trip(topic: str, partition: int, offset: int, timestamp: int,
                                  value: bytes) -> None:
    frame = encode_source_frame(topic, partition, offset, timestamp, value)
    assert decode_source_frame(frame) == SourceRecord(topic, partition, offset, timestamp, value)


@given(st.text(min_size=1, max_size=30), st.one_of(st.none(), st.binary(max_size=40)),
       st.binary(max_size=300), st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)),
                                         max_size=8))
def test_sink_frames_round_trip(topic: str, key: bytes | None, value: bytes,
                                headers: list[tuple[str, bytes]]) -> None:
    frame = encode_sink_frame(topic, key, value, headers)
    assert decode_sink_frame(frame) == (topic, key, headers, value)


def test_dlq_frame_keeps_original_bytes_and_names_the_error() -> None:
    record = SourceRecord("events", 1, 42, 1000, b"\x00garbage")
    topic, key, headers, value = decode_sink_frame(
        dlq_frame("events.dlq", record,
                  Problem(Stage.DECODE, ErrorClass.MALFORMED_RECORD, "bad magic byte")))
    assert (topic, key, value) == ("events.dlq", None, b"\x00garbage")
    assert dict(headers) == {
        "__connect.errors.topic": b"events",
        "__connect.errors.partition": b"1",
        "__connect.errors.offset": b"42",
        "__connect.errors.stage": b"decode",
        "__connect.errors.exception.class.name": b"MalformedRecord",
        "__connect.errors.exception.message": b"bad magic byte",
    }


def test_a_dead_letter_is_bounded_so_the_producer_never_refuses_it() -> None:
    """A 2 MiB bad record with a 5 KB key and a long message: its dead letter keeps the first
    512 KiB and says how large the record was (the Java producer refuses records over 1 MiB,
    and the job would fail on it at every replay); one under the bound is kept whole."""
    record = SourceRecord("events", 0, 7, 1000, bytes(range(256)) * 8192)
    problem = Problem(Stage.DECODE, ErrorClass.MALFORMED_RECORD, "x" * 5_000)
    frame = dlq_frame("events.dlq", record, problem, key=b"k" * 5_000)
    _, key, headers, value = decode_sink_frame(frame)
    assert len(frame) < 600 * 1024 < 1024 * 1024
    assert value == record.value[:MAX_VALUE_BYTES] and key == b"k" * MAX_KEY_BYTES
    assert dict(headers)[HEADER_ORIGINAL_BYTES] == str(len(record.value)).encode()
    message = dict(headers)["__connect.errors.exception.message"].decode()
    assert message.startswith("x" * 1_000) and message.endswith("(5,000 characters)")
    whole = SourceRecord("events", 0, 8, 1000, b"y" * MAX_VALUE_BYTES)
    _, _, headers, value = decode_sink_frame(dlq_frame("events.dlq", whole, problem))
    assert value == whole.value and HEADER_ORIGINAL_BYTES not in dict(headers)


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_batches_split_back_into_their_frames(frames: list[bytes]) -> None:
    assert split_batch(encode_batch(frames)) == frames


def test_the_built_in_definitions_compile_to_the_documented_row() -> None:
    [plan] = compile_plans(user_definitions()).values()
    names = [f.feature.name for f in plan.features]
    assert len(names) == len(set(names)) == 4 * 5 + 2 * 2 + 1 + 1
    assert {"ctr_1h", "avg_spend_24h", "distinct_items_1h", "last_event_ts"} <= set(names)
    assert names[-1] == "ctr_1h"  # a ratio comes after what it reads
    assert [(w.name, w.hop_ms) for w in plan.windows] == [
        ("1m", 1_000), ("5m", 5_000), ("1h", 60_000), ("24h", 1_440_000)]
    assert [s.kind for s in plan.accumulators if s.window == "1h"] == [
        "count", "count", "count", "count", "sum", "count", "distinct"]  # spend and avg share
    assert len(set(plan.layout)) == len(plan.layout)  # shared: one accumulator per definition
    assert plan.fields == (("event_type", "amount", "item_id"),)


def test_a_shard_layout_round_trips_through_its_entry() -> None:
    layout = ShardLayout(8, {"user": EntityLayout(["user_id"], {"abc": ["s1", "s2"]},
                                                  {"s2": 5}),
                             "pair": EntityLayout(["a", "b"])})
    assert ShardLayout.from_bytes(layout.to_bytes()) == layout
    assert json.loads(layout.to_bytes())["format"] == 2


def test_the_entry_of_a_release_before_definitions_is_refused_with_the_fix() -> None:
    with pytest.raises(StoredLayoutMismatch) as refused:
        ShardLayout.from_bytes(b"16")
    message = str(refused.value)
    assert "release before feature definitions (16 shards" in message
    assert "Start the feature job without the savepoint" in message
    assert "keep running the earlier release" in message
