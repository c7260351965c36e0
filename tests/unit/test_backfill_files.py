"""Backfill inputs from files: JSON lines kept byte for byte and in order (a broken line is a
record, not a gap), Avro and Parquet rows as the JSON objects the job decodes (logical types
and timestamps as epoch ms), positions, formats, times, and one-line errors."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestream.backfill.files import count_of, format_of, read_file
from featurestream.backfill.records import HistoryRecord, Position, json_value
from featurestream.backfill.times import parse_time_ms
from featurestream.errors import UserFacingError

ROWS: list[dict[str, Any]] = [
    {"event_id": f"e{i}", "user_id": f"u{i % 3}", "ts": 1_700_000_000_000 + i,
     "amount": None if i % 2 else 1.5 * i} for i in range(25)]


def values(records: list[HistoryRecord]) -> list[dict]:
    return [json.loads(r.value) for r in records]


def test_json_lines_keep_every_line_and_its_number(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a":1}\r\n\n{broken\n{"a":"\xc3\xa9"}')  # no newline at the end
    records = list(read_file(path, "events", "jsonl"))
    assert [r.value for r in records] == [b'{"a":1}', b"", b"{broken", b'{"a":"\xc3\xa9"}']
    assert {r.source for r in records} == {"events"}
    assert [str(r.position) for r in records] == [f"{path}:{n}" for n in (1, 2, 3, 4)]


def test_avro_records_become_json_objects_with_logical_types_as_longs(tmp_path: Path) -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "E", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "user_id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "amount", "type": ["null", "double"]}]})
    path = tmp_path / "events.avro"
    with path.open("wb") as f:
        fastavro.writer(f, schema, ROWS, codec="deflate", sync_interval=200)  # several blocks
    records = list(read_file(path, "events", format_of(path, None)))
    assert values(records) == ROWS
    assert [r.position for r in records] == [Position(str(path), None, i) for i in range(25)]


def test_a_file_that_is_not_avro_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "events.avro"
    path.write_bytes(b"not avro at all")
    with pytest.raises(UserFacingError, match="not a readable Avro container file"):
        list(read_file(path, "events", "avro"))


def test_parquet_streams_row_groups_with_timestamps_as_epoch_ms(tmp_path: Path) -> None:
    table = pa.table({
        "event_id": [r["event_id"] for r in ROWS], "user_id": [r["user_id"] for r in ROWS],
        "ts": pa.array([r["ts"] * 1000 for r in ROWS], pa.timestamp("us", "UTC")),
        "amount": [r["amount"] for r in ROWS]})
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=7)
    assert count_of(path, "parquet") == 25
    records = list(read_file(path, "events", "parquet"))
    assert values(records) == ROWS
    assert records[24].position == Position(str(path), None, 24)


def test_json_values_keep_what_the_decoder_must_refuse() -> None:
    value = json.loads(json_value({"x": math.nan, "b": b"\x00\xff", "d": 1}))
    assert math.isnan(value["x"]) and value["d"] == 1
    assert base64.b64decode(value["b"]) == b"\x00\xff"


def test_formats_by_extension_or_option(tmp_path: Path) -> None:
    assert format_of(tmp_path / "a.ndjson", None) == "jsonl"
    assert format_of(tmp_path / "a.PQ", None) == "parquet"
    assert format_of(tmp_path / "a.txt", "avro") == "avro"
    with pytest.raises(UserFacingError, match="--format"):
        format_of(tmp_path / "a.txt", None)
    with pytest.raises(UserFacingError, match="does not exist"):
        read_file(tmp_path / "missing.jsonl", "events", "jsonl")


def test_positions_read_as_kafka_or_file_coordinates() -> None:
    assert str(Position("kafka:events", 1, 42)) == "kafka:events[1]@42"
    assert str(Position("a.jsonl", None, 0)) == "a.jsonl:1"


@pytest.mark.parametrize(("text", "ms"), [
    ("1714564800000", 1_714_564_800_000), ("2024-05-01T12:00:00Z", 1_714_564_800_000),
    ("2024-05-01T12:00:00", 1_714_564_800_000), ("2024-05-01T14:00:00.5+02:00", 1_714_564_800_500),
])
def test_times_are_iso_or_epoch_ms(text: str, ms: int) -> None:
    assert parse_time_ms(text, "--start") == ms


def test_a_bad_time_names_the_option() -> None:
    with pytest.raises(UserFacingError, match="--end 'yesterday'"):
        parse_time_ms("yesterday", "--end")
