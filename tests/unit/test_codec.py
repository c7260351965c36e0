"""The event codec: round trips, precise rejections, and schema evolution."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.types import Schema as ParsedSchema
from hypothesis import given
from hypothesis import strategies as st

from featurestream.schemas import schema_path
from featurestream.udfs.contract.codec import (
    EventDecoder,
    EventEncoder,
    _Rejected,
    read_json_object,
)
from featurestream.udfs.contract.events import EVENT_TYPES, Event
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

REGISTRY = FileSchemaRegistry()
DECODER = EventDecoder(REGISTRY)
ENCODER = EventEncoder(REGISTRY)
MISSING = object()
VALID: dict[str, Any] = {
    "event_id": "e-1", "user_id": "u-1", "event_type": "purchase", "item_id": "i-1",
    "amount": 9.5, "ts": 1_700_000_000_000, "context": {"device": "mobile", "country": "DE"},
}

texts = st.text(max_size=12)
non_empty = st.text(min_size=1, max_size=12)
amounts = st.floats(min_value=0, allow_nan=False, allow_infinity=False)


@st.composite
def events(draw: st.DrawFn) -> Event:
    event_type = draw(st.sampled_from(EVENT_TYPES))
    return Event(
        event_id=draw(non_empty),
        user_id=draw(non_empty),
        event_type=event_type,
        item_id=draw(st.none() | texts),
        amount=draw(amounts if event_type == "purchase" else st.none() | amounts),
        ts=draw(st.integers(-(2**63), 2**63 - 1)),
        context=draw(st.none() | st.dictionaries(texts, texts, max_size=3)),
    )


def json_with(**changes: Any) -> bytes:
    record = {**VALID, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not MISSING}).encode()


def frame(schema_id: int, schema: ParsedSchema, record: dict) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def event_schema_json() -> dict:
    return json.loads(schema_path("user_event").read_text(encoding="utf-8"))


@given(events())
def test_avro_round_trip(event: Event) -> None:
    assert DECODER.decode(ENCODER.avro(event)) == event


@given(events())
def test_json_round_trip(event: Event) -> None:
    assert DECODER.decode(ENCODER.json(event)) == event


def test_encoders_accept_mappings_and_frame_with_the_subjects_id() -> None:
    event = DECODER.decode(json_with())
    assert isinstance(event, Event)
    assert ENCODER.avro(VALID) == ENCODER.avro(event)
    assert ENCODER.avro(event)[:5] == b"\x00\x00\x00\x00\x01"
    assert json.loads(ENCODER.json(event)) == VALID


def test_json_tolerates_whitespace_unknown_fields_and_absent_optionals() -> None:
    raw = b"\n  " + json_with(item_id=MISSING, context=MISSING, extra="ignored")
    assert DECODER.decode(raw) == Event("e-1", "u-1", "purchase", None, 9.5,
                                        1_700_000_000_000, None)


def test_integer_json_amount_becomes_a_float() -> None:
    event = DECODER.decode(json_with(amount=12))
    assert isinstance(event, Event)
    assert event.amount == 12.0
    assert type(event.amount) is float


def avro_with(**changes: Any) -> bytes:
    return ENCODER.avro({**VALID, **changes})


BAD_RECORDS = [
    # (raw bytes, error class, fragment the message must contain)
    pytest.param(b"", ErrorClass.MALFORMED_RECORD, "empty", id="empty"),
    pytest.param(b"\x07garbage", ErrorClass.MALFORMED_RECORD, "magic byte", id="bad-magic"),
    pytest.param(b"hello", ErrorClass.MALFORMED_RECORD, "neither Avro", id="not-json"),
    pytest.param(b"\x00\x00\x01", ErrorClass.MALFORMED_RECORD, "header", id="short-header"),
    pytest.param(b"\x00\x00\x00\x00\x63" + avro_with()[5:], ErrorClass.UNKNOWN_SCHEMA_ID,
                 "99", id="unknown-id"),
    pytest.param(avro_with()[:-4], ErrorClass.MALFORMED_RECORD, "truncated", id="truncated"),
    pytest.param(avro_with()[:5], ErrorClass.MALFORMED_RECORD, "truncated", id="no-body"),
    pytest.param(avro_with() + b"\x02x", ErrorClass.MALFORMED_RECORD, "2 trailing bytes",
                 id="trailing"),
    pytest.param(b'{"event_id": "\xff"}', ErrorClass.MALFORMED_RECORD, "UTF-8", id="bad-utf8"),
    pytest.param(b'{"event_id": ', ErrorClass.MALFORMED_RECORD, "invalid JSON",
                 id="bad-json"),
    pytest.param(b"[1, 2]", ErrorClass.MALFORMED_RECORD, "array", id="json-array"),
    pytest.param(b'"text"', ErrorClass.MALFORMED_RECORD, "string", id="json-string"),
    pytest.param(b"{" * 100_000, ErrorClass.MALFORMED_RECORD, "invalid JSON", id="deep"),
    *[pytest.param(json_with(**{name: MISSING}), ErrorClass.SCHEMA_VIOLATION,
                   f"missing required field '{name}'", id=f"missing-{name}")
      for name in ("event_id", "user_id", "event_type", "ts")],
    pytest.param(json_with(ts=1.5), ErrorClass.SCHEMA_VIOLATION, "'ts'", id="ts-float"),
    pytest.param(json_with(ts=True), ErrorClass.SCHEMA_VIOLATION, "'ts'", id="ts-bool"),
    pytest.param(json_with(ts="1700000000000"), ErrorClass.SCHEMA_VIOLATION, "'ts'",
                 id="ts-string"),
    pytest.param(json_with(ts=None), ErrorClass.SCHEMA_VIOLATION, "'ts'", id="ts-null"),
    pytest.param(json_with(ts=2**63), ErrorClass.SCHEMA_VIOLATION, "'ts'", id="ts-range"),
    pytest.param(json_with(user_id=7), ErrorClass.SCHEMA_VIOLATION, "'user_id'",
                 id="user-id-int"),
    pytest.param(json_with(item_id=["i"]), ErrorClass.SCHEMA_VIOLATION, "'item_id'",
                 id="item-id-list"),
    pytest.param(json_with(amount="9.5"), ErrorClass.SCHEMA_VIOLATION, "'amount'",
                 id="amount-string"),
    pytest.param(json_with(amount=False), ErrorClass.SCHEMA_VIOLATION, "'amount'",
                 id="amount-bool"),
    pytest.param(json_with(context=["mobile"]), ErrorClass.SCHEMA_VIOLATION, "'context'",
                 id="context-list"),
    pytest.param(json_with(context={"screens": 2}), ErrorClass.SCHEMA_VIOLATION,
                 "'context.screens'", id="context-value-int"),
    pytest.param(json_with(event_type="buy"), ErrorClass.SCHEMA_VIOLATION, "'event_type'",
                 id="unknown-event-type"),
    pytest.param(json_with(user_id=""), ErrorClass.INVALID_VALUE, "'user_id'",
                 id="empty-user-id"),
    pytest.param(json_with(event_id=""), ErrorClass.INVALID_VALUE, "'event_id'",
                 id="empty-event-id"),
    pytest.param(json_with(amount=float("nan")), ErrorClass.INVALID_VALUE, "'amount'",
                 id="amount-nan"),
    pytest.param(json_with(amount=float("inf")), ErrorClass.INVALID_VALUE, "'amount'",
                 id="amount-inf"),
    pytest.param(json_with()[:-1].replace(b"9.5", b"1e999") + b"}", ErrorClass.INVALID_VALUE,
                 "'amount'", id="amount-overflows"),
    pytest.param(json_with(amount=10**400), ErrorClass.INVALID_VALUE, "'amount'",
                 id="amount-huge-int"),
    pytest.param(json_with(amount=-0.01), ErrorClass.INVALID_VALUE, "'amount'",
                 id="amount-negative"),
    pytest.param(json_with(amount=MISSING), ErrorClass.INVALID_VALUE, "'amount'",
                 id="purchase-without-amount"),
    pytest.param(json_with(amount=None), ErrorClass.INVALID_VALUE, "'amount'",
                 id="purchase-null-amount"),
    pytest.param(avro_with(user_id=""), ErrorClass.INVALID_VALUE, "'user_id'",
                 id="avro-empty-user-id"),
    pytest.param(avro_with(amount=float("nan")), ErrorClass.INVALID_VALUE, "'amount'",
                 id="avro-amount-nan"),
    pytest.param(avro_with(amount=None), ErrorClass.INVALID_VALUE, "'amount'",
                 id="avro-purchase-without-amount"),
]


@pytest.mark.parametrize(("raw", "error_class", "fragment"), BAD_RECORDS)
def test_bad_records_are_rejected_precisely(raw: bytes, error_class: str, fragment: str) -> None:
    result = DECODER.decode(raw)
    assert isinstance(result, Problem), result
    assert result.stage == Stage.DECODE
    assert result.error_class == error_class
    assert fragment in result.message


def test_decode_error_is_plain_data() -> None:
    error = DECODER.decode(b"")
    assert error == Problem(Stage.DECODE, ErrorClass("MalformedRecord"), "empty record (0 bytes)")
    assert str(error) == "MalformedRecord: empty record (0 bytes)"


def test_decode_error_classes_keep_their_header_names() -> None:
    """Users alert on these exact strings (the DLQ's exception class header)."""
    assert [ErrorClass.MALFORMED_RECORD, ErrorClass.UNKNOWN_SCHEMA_ID,
            ErrorClass.INCOMPATIBLE_SCHEMA, ErrorClass.SCHEMA_VIOLATION,
            ErrorClass.INVALID_VALUE] == ["MalformedRecord", "UnknownSchemaId",
                                          "IncompatibleSchema", "SchemaViolation", "InvalidValue"]
    assert Stage.DECODE.value == "decode"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(DECODER.decode(raw), Event | Problem)


@given(events(), st.data())
def test_corrupted_avro_never_raises(event: Event, data: st.DataObject) -> None:
    raw = bytearray(ENCODER.avro(event))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(5, len(raw) - 1))] = data.draw(st.integers(0, 255))
    assert isinstance(DECODER.decode(bytes(raw)), Event | Problem)


# --- schema evolution -------------------------------------------------------------------------


def write_manifest(tmp_path: Path, entries: dict[int, dict]) -> FileSchemaRegistry:
    """A registry with user_event.avsc as id 1 plus the given writer schemas."""
    manifest = {"events-value": [{"id": 1, "file": str(schema_path("user_event"))}]}
    for schema_id, schema in entries.items():
        path = tmp_path / f"writer_{schema_id}.avsc"
        path.write_text(json.dumps(schema), encoding="utf-8")
        manifest["events-value"].append({"id": schema_id, "file": path.name})
    (tmp_path / "registry.json").write_text(json.dumps(manifest), encoding="utf-8")
    return FileSchemaRegistry(tmp_path / "registry.json")


def test_older_writer_schema_resolves_to_the_reader_schema(tmp_path: Path) -> None:
    # v0: no item_id, no context, and a field the current contract dropped.
    old = event_schema_json()
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("item_id", "context")]
    old["fields"].append({"name": "legacy_source", "type": "string", "doc": "dropped"})
    registry = write_manifest(tmp_path, {7: old})
    record = {"event_id": "e", "user_id": "u", "event_type": "purchase", "amount": 3.0,
              "ts": 5, "legacy_source": "web"}
    raw = frame(7, fastavro.parse_schema(old), record)
    assert EventDecoder(registry).decode(raw) == Event("e", "u", "purchase", None, 3.0, 5, None)


def test_newer_writer_schema_with_an_added_field_still_decodes(tmp_path: Path) -> None:
    new = event_schema_json()
    new["fields"].append({"name": "channel", "type": "string", "default": "web", "doc": "new"})
    registry = write_manifest(tmp_path, {8: new})
    raw = frame(8, fastavro.parse_schema(new), {**VALID, "channel": "app"})
    assert EventDecoder(registry).decode(raw) == Event(**VALID)


def test_writer_with_an_unknown_event_type_is_incompatible(tmp_path: Path) -> None:
    wider = event_schema_json()
    wider["fields"][2]["type"]["symbols"].append("refund")
    registry = write_manifest(tmp_path, {9: wider})
    decoder = EventDecoder(registry)
    schema = fastavro.parse_schema(wider)
    assert decoder.decode(frame(9, schema, {**VALID, "event_type": "view"})) == Event(
        **{**VALID, "event_type": "view"})
    result = decoder.decode(frame(9, schema, {**VALID, "event_type": "refund"}))
    assert isinstance(result, Problem)
    assert result.error_class == ErrorClass.INCOMPATIBLE_SCHEMA
    assert "refund" in result.message


def test_writer_missing_a_required_field_is_incompatible(tmp_path: Path) -> None:
    no_ts = event_schema_json()
    no_ts["fields"] = [f for f in no_ts["fields"] if f["name"] != "ts"]
    registry = write_manifest(tmp_path, {10: no_ts})
    record = {k: v for k, v in VALID.items() if k != "ts"}
    result = EventDecoder(registry).decode(frame(10, fastavro.parse_schema(no_ts), record))
    assert isinstance(result, Problem)
    assert result.error_class == ErrorClass.INCOMPATIBLE_SCHEMA
    assert "ts" in result.message


def test_encoder_uses_the_id_the_registry_gives_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"events-value": [
        {"id": 42, "file": str(schema_path("user_event"))}]}), encoding="utf-8")
    registry = FileSchemaRegistry(path)
    raw = EventEncoder(registry, subject="other-topic-value").avro(VALID)
    assert raw[:5] == b"\x00\x00\x00\x00\x2a"
    assert EventDecoder(registry).decode(raw) == Event(**VALID)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=5)
    | st.integers(-(2**70), 2**70) | st.sampled_from([2**63, -(2**63) - 1, 1e300, 2.0**63]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=8)


def _verdict(raw: bytes) -> Any:
    try:
        return read_json_object(raw, "an object")
    except _Rejected as rejected:
        return rejected.problem


@given(value=st.dictionaries(st.text(max_size=4), json_values, max_size=4),
       garble=st.sampled_from([b"", b"}", b" x", b"\\ud800"]))
def test_the_fast_json_reader_gives_the_standard_librarys_values_and_verdicts(
        value: dict[str, Any], garble: bytes) -> None:
    """orjson reads most JSON; whatever it reads differently (NaN, integers beyond 64 bits)
    or refuses goes through the standard library, so values and messages are its."""
    text = json.dumps(value).encode() + garble
    try:
        expected: Any = json.loads(text.decode())
    except ValueError:
        expected = None
    got = _verdict(text)
    if isinstance(expected, dict):
        assert got == expected or (json.dumps(got) == json.dumps(expected)), (text, got)
        assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]
    else:
        assert isinstance(got, Problem) and got.error_class == ErrorClass.MALFORMED_RECORD


def test_a_record_of_another_schema_is_incompatible_in_a_few_words(tmp_path: Path) -> None:
    """fastavro's reason prints both schemas whole (kilobytes with their docs): the dead
    letter's message keeps the reason and the writer's schema id only."""
    other = {"type": "record", "name": "io.example.Other", "doc": "x" * 5_000,
             "fields": [{"name": "amount", "type": "double", "doc": "y" * 5_000}]}
    registry = write_manifest(tmp_path, {12: other})
    result = EventDecoder(registry).decode(frame(12, fastavro.parse_schema(other),
                                                 {"amount": 1.0}))
    assert isinstance(result, Problem)
    assert result.error_class == ErrorClass.INCOMPATIBLE_SCHEMA
    assert result.message.startswith("a record of schema id 12 cannot be read as")
    assert "Schema mismatch" in result.message and len(result.message) < 200, result.message
