"""Records of declared sources: round trips, rejections, entity ids, the built-in adapter;
sources whose schema is a registry subject's (loaded, then decoded and encoded)."""

from __future__ import annotations

import io
import json
import pickle
import textwrap
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.schemas import load_schema, schema_path
from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.events import EVENT_TYPES, Event
from featurestream.udfs.contract.records import (
    BuiltinDecoder,
    RecordDecoder,
    RecordEncoder,
    avro_schema_for,
    decoder_for,
    entity_id,
    is_builtin,
)
from featurestream.udfs.contract.schema_registry import (
    HELD_IDS,
    FileSchemaRegistry,
    Schema,
    canonical_json,
)
from featurestream.udfs.definitions.defaults import events_source
from featurestream.udfs.definitions.load import load_definitions
from featurestream.udfs.definitions.model import Source
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

PAYMENTS = Source("payments", topic="payments", timestamp="ts",
                  fields={"payment_id": "string", "merchant_id": "string", "card_id": "string?",
                          "amount": "double", "status": "string", "ts": "long"})
REGISTRY = FileSchemaRegistry()
DECODER = decoder_for(PAYMENTS, REGISTRY)
ENCODER = RecordEncoder(PAYMENTS, REGISTRY)
VALID: dict[str, Any] = {"payment_id": "p-1", "merchant_id": "m-1", "card_id": "c-1",
                         "amount": 12.5, "status": "declined", "ts": 1_700_000_000_000}
MISSING = object()

texts = st.text(max_size=10)
doubles = st.floats(allow_nan=False, allow_infinity=False)
longs = st.integers(-(2**63), 2**63 - 1)
payments = st.fixed_dictionaries({
    "payment_id": texts, "merchant_id": texts, "card_id": st.none() | texts,
    "amount": doubles, "status": texts, "ts": longs})
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def json_with(**changes: Any) -> bytes:
    record = {**VALID, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not MISSING}).encode()


def frame(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def rejected(result: dict[str, Any] | Problem, error_class: ErrorClass, message: str) -> None:
    assert isinstance(result, Problem), result
    assert result.stage == Stage.DECODE
    assert result.error_class == error_class
    assert message in result.message, result.message


def test_the_built_in_contract_gets_the_event_decoder_and_others_the_record_decoder() -> None:
    builtin_avros = ("user_event", "user_event.avsc", str(schema_path("user_event")))
    for avro in builtin_avros:
        source = Source("events", topic="events", fields={"ts": "long"}, avro=avro)
        assert is_builtin(source)
        assert isinstance(decoder_for(source, REGISTRY), BuiltinDecoder)
    assert isinstance(decoder_for(events_source("events"), REGISTRY), BuiltinDecoder)
    assert not is_builtin(PAYMENTS)
    assert isinstance(DECODER, RecordDecoder)


# --- round trips ------------------------------------------------------------------------------


@given(payments)
def test_avro_and_json_round_trip(record: dict[str, Any]) -> None:
    assert DECODER.decode(ENCODER.avro(record)) == record
    assert DECODER.decode(ENCODER.json(record)) == record


def test_decoded_records_hold_exactly_the_declared_fields_in_order() -> None:
    raw = json.dumps({"extra": [1, 2], **{k: VALID[k] for k in reversed(VALID)}}).encode()
    decoded = DECODER.decode(raw)
    assert decoded == VALID
    assert isinstance(decoded, dict)
    assert list(decoded) == list(PAYMENTS.field_types)
    assert DECODER.decode(json_with(card_id=MISSING)) == {**VALID, "card_id": None}


def test_an_integer_is_a_double_and_becomes_a_float() -> None:
    for raw in (json_with(amount=7), ENCODER.avro({**VALID, "amount": 7})):
        decoded = DECODER.decode(raw)
        assert isinstance(decoded, dict)
        assert decoded["amount"] == 7.0
        assert type(decoded["amount"]) is float


def test_other_fields_pass_unchecked() -> None:
    source = Source("s", topic="s", fields={"ts": "long", "extra": "other"})
    decoder = RecordDecoder(source, REGISTRY)
    assert decoder.decode(b'{"ts": 1, "extra": {"a": [1]}}') == {"ts": 1, "extra": {"a": [1]}}
    assert decoder.decode(b'{"ts": 1}') == {"ts": 1, "extra": None}


def test_encoder_registers_the_derived_schema_under_the_topic_subject() -> None:
    schema = avro_schema_for(PAYMENTS)
    assert [f["type"] for f in schema["fields"]] == [
        "string", "string", ["null", "string"], "double", "string", "long"]
    assert schema["fields"][2]["default"] is None
    schema_id = int.from_bytes(ENCODER.avro(VALID)[1:5], "big")
    assert schema_id in HELD_IDS
    assert REGISTRY.id_for("payments-value", schema) == schema_id
    # Another process (a fresh registry) derives the same id from the same schema.
    fresh = FileSchemaRegistry()
    assert fresh.register("payments-value", schema) == schema_id
    assert RecordDecoder(PAYMENTS, FileSchemaRegistry()).decode(ENCODER.avro(VALID)) == VALID
    # A schema the manifest lists keeps its id under any subject.
    assert fresh.register("other-value", load_schema("user_event")) == 1


def test_a_source_without_an_avro_type_cannot_be_encoded_as_avro() -> None:
    source = Source("s", topic="s", fields={"ts": "long", "extra": "other"})
    with pytest.raises(ValueError, match="field 'extra': type 'other' has no Avro type"):
        RecordEncoder(source, REGISTRY)


# --- Avro sources: the source's schema is the reader schema -------------------------------------


ORDER_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Order", "namespace": "shop",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "status", "type": {"type": "enum", "name": "Status",
                                    "symbols": ["open", "paid"]}},
        {"name": "total", "type": ["null", "double"], "default": None},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}
ORDER_FIELDS = {"order_id": "string", "status": "string", "total": "double?", "ts": "long"}
ORDER = {"order_id": "o-1", "status": "paid", "total": 3.5, "ts": 1_700_000_000_000}


def avro_source(tmp_path: Path, writers: dict[int, dict[str, Any]]) -> tuple[Source,
                                                                             FileSchemaRegistry]:
    """The orders source (schema in a file) and a registry listing the given writer schemas."""
    (tmp_path / "order.avsc").write_text(json.dumps(ORDER_SCHEMA), encoding="utf-8")
    manifest: dict[str, list[dict[str, Any]]] = {"orders-value": []}
    for schema_id, schema in writers.items():
        (tmp_path / f"w{schema_id}.avsc").write_text(json.dumps(schema), encoding="utf-8")
        manifest["orders-value"].append({"id": schema_id, "file": f"w{schema_id}.avsc"})
    (tmp_path / "registry.json").write_text(json.dumps(manifest), encoding="utf-8")
    source = Source("orders", topic="orders", fields=ORDER_FIELDS,
                    avro=str(tmp_path / "order.avsc"))
    return source, FileSchemaRegistry(tmp_path / "registry.json")


def test_avro_source_reads_logical_types_as_their_avro_type(tmp_path: Path) -> None:
    source, registry = avro_source(tmp_path, {})
    raw = RecordEncoder(source, registry).avro(ORDER)
    assert RecordDecoder(source, registry).decode(raw) == ORDER
    assert RecordDecoder(source, registry).decode(json.dumps(ORDER).encode()) == ORDER


def test_avro_source_resolves_other_writer_schemas(tmp_path: Path) -> None:
    newer = {**ORDER_SCHEMA, "fields": [*ORDER_SCHEMA["fields"],
                                        {"name": "channel", "type": "string", "default": "web"}]}
    older = {**ORDER_SCHEMA, "fields": [f for f in ORDER_SCHEMA["fields"] if f["name"] != "total"]}
    wider = json.loads(json.dumps(ORDER_SCHEMA))
    wider["fields"][1]["type"]["symbols"].append("refunded")
    source, registry = avro_source(tmp_path, {5: newer, 6: older, 7: wider})
    decoder = RecordDecoder(source, registry)
    assert decoder.decode(frame(5, newer, {**ORDER, "channel": "app"})) == ORDER
    assert decoder.decode(frame(6, older, ORDER)) == {**ORDER, "total": None}
    assert decoder.decode(frame(7, wider, ORDER)) == ORDER
    rejected(decoder.decode(frame(7, wider, {**ORDER, "status": "refunded"})),
             ErrorClass.INCOMPATIBLE_SCHEMA, "schema id 7 cannot be read as shop.Order")


def test_declared_types_win_over_the_avro_schema(tmp_path: Path) -> None:
    source, registry = avro_source(tmp_path, {})
    strict = Source("orders", topic="orders", fields={**ORDER_FIELDS, "total": "double"},
                    avro=source.avro)
    rejected(RecordDecoder(strict, registry).decode(
        RecordEncoder(source, registry).avro({**ORDER, "total": None})),
        ErrorClass.SCHEMA_VIOLATION, "field 'total' must be a number, got null")


# --- registry sources: the subject's latest schema, carried in the Source, is the reader schema


class SpyRegistry:
    """A registry that records what it is asked (and is no FileSchemaRegistry, so decoders and
    encoders do not hold schemas in it)."""

    def __init__(self, registry: FileSchemaRegistry) -> None:
        self._registry = registry
        self.calls: list[str] = []

    def schema_by_id(self, schema_id: int) -> Schema:
        self.calls.append(f"schema_by_id {schema_id}")
        return self._registry.schema_by_id(schema_id)

    def id_for(self, subject: str, schema: Schema) -> int:
        self.calls.append(f"id_for {subject}")
        return self._registry.id_for(subject, schema)

    def latest(self, subject: str) -> Schema:
        self.calls.append(f"latest {subject}")
        return self._registry.latest(subject)


ORDERS_DEFINITIONS = textwrap.dedent("""
    from featurestream.definitions import *  # noqa: F403
    orders = Source("orders", topic="orders", registry_subject="orders-value")
    order = Entity("order", keys="order_id")
    g = FeatureGroup("g", order, orders, [Feature("n", "count", window="1h")])
""")


def test_a_registry_source_loads_then_decodes_avro_and_json(tmp_path: Path) -> None:
    """Load (latest version: field types, schema carried), pickle to the job, decode any writer
    id against the carried reader schema without asking the registry for it, encode under the
    subject's id."""
    older = {**ORDER_SCHEMA, "fields": [f for f in ORDER_SCHEMA["fields"] if f["name"] != "total"]}
    wider = json.loads(json.dumps(ORDER_SCHEMA))
    wider["fields"][1]["type"]["symbols"].append("refunded")
    versions = {5: older, 7: wider, 6: ORDER_SCHEMA}  # the latest last
    for schema_id, schema in versions.items():
        (tmp_path / f"w{schema_id}.avsc").write_text(json.dumps(schema), encoding="utf-8")
    (tmp_path / "registry.json").write_text(json.dumps({"orders-value": [
        {"id": schema_id, "file": f"w{schema_id}.avsc"} for schema_id in versions]}))
    (tmp_path / "defs.py").write_text(ORDERS_DEFINITIONS)
    manifest = tmp_path / "registry.json"
    source = load_definitions(str(tmp_path / "defs.py"), ("1h",), "events",
                              lambda: FileSchemaRegistry(manifest)).sources[0]
    assert source.field_types == ORDER_FIELDS
    job_side = pickle.loads(pickle.dumps(source))
    spy = SpyRegistry(FileSchemaRegistry(manifest))
    decoder = decoder_for(job_side, spy)
    assert isinstance(decoder, RecordDecoder)
    assert decoder.decode(frame(6, ORDER_SCHEMA, ORDER)) == ORDER
    assert decoder.decode(frame(5, older, ORDER)) == {**ORDER, "total": None}
    assert decoder.decode(json.dumps(ORDER).encode()) == ORDER
    rejected(decoder.decode(frame(7, wider, {**ORDER, "status": "refunded"})),
             ErrorClass.INCOMPATIBLE_SCHEMA, "schema id 7 cannot be read as shop.Order")
    assert spy.calls == ["schema_by_id 6", "schema_by_id 5", "schema_by_id 7"]
    raw = RecordEncoder(source, FileSchemaRegistry(manifest)).avro(ORDER)
    assert raw[:5] == b"\x00\x00\x00\x00\x06"  # the subject's latest id
    assert decoder.decode(raw) == ORDER


HELD = FileSchemaRegistry()
HELD.register("orders-value", ORDER_SCHEMA)  # a subject registered in memory
REGISTRY_ORDERS = Source("orders", topic="orders", fields=ORDER_FIELDS,
                         registry_subject="orders-value",
                         schema_json=canonical_json(HELD.latest("orders-value")))
orders = st.fixed_dictionaries({
    "order_id": texts, "status": st.sampled_from(["open", "paid"]),
    "total": st.none() | doubles, "ts": longs})


@given(orders)
def test_registry_sources_round_trip(record: dict[str, Any]) -> None:
    encoder = RecordEncoder(REGISTRY_ORDERS, HELD)
    decoder = RecordDecoder(REGISTRY_ORDERS, HELD)
    assert decoder.decode(encoder.avro(record)) == record
    assert decoder.decode(encoder.json(record)) == record
    assert HELD.id_for("orders-value", ORDER_SCHEMA) == int.from_bytes(
        encoder.avro(record)[1:5], "big")


# --- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "error_class", "message"), [
    (b"", ErrorClass.MALFORMED_RECORD, "empty record (0 bytes)"),
    (b"\x00\x00\x01", ErrorClass.MALFORMED_RECORD, "shorter than its 5-byte header"),
    (b"\x00\x00\x00\x00\x63\x02", ErrorClass.UNKNOWN_SCHEMA_ID, "unknown schema id 99"),
    (b"\x00\x00\x00\x00\x01", ErrorClass.MALFORMED_RECORD, "truncated or corrupt"),
    (b"\xff\xfe", ErrorClass.MALFORMED_RECORD, "neither Avro (first byte is 0xff"),
    (b'{"ts": ', ErrorClass.MALFORMED_RECORD, "invalid JSON at line 1"),
    (b"[1, 2]", ErrorClass.MALFORMED_RECORD,
     "JSON value is an array [1, 2], expected an object with the fields of source 'payments'"),
    (json_with(payment_id=MISSING), ErrorClass.SCHEMA_VIOLATION,
     "missing required field 'payment_id'"),
    (json_with(ts=MISSING), ErrorClass.SCHEMA_VIOLATION, "missing required field 'ts'"),
    (json_with(amount=None), ErrorClass.SCHEMA_VIOLATION,
     "field 'amount' must be a number, got null"),
    (json_with(amount="12.5"), ErrorClass.SCHEMA_VIOLATION,
     "field 'amount' must be a number, got a string \"12.5\""),
    (json_with(amount=True), ErrorClass.SCHEMA_VIOLATION,
     "field 'amount' must be a number, got a boolean true"),
    (json_with(card_id=5), ErrorClass.SCHEMA_VIOLATION,
     "field 'card_id' must be a string or null, got an integer 5"),
    (json_with(ts=True), ErrorClass.SCHEMA_VIOLATION,
     "field 'ts' must be an integer (event time, epoch ms), got a boolean true"),
    (json_with(ts=1.5), ErrorClass.SCHEMA_VIOLATION,
     "field 'ts' must be an integer (event time, epoch ms), got a number 1.5"),
    (json_with(ts=None), ErrorClass.SCHEMA_VIOLATION,
     "field 'ts' must be an integer (event time, epoch ms), got null"),
    (json_with(ts=2**63), ErrorClass.SCHEMA_VIOLATION,
     f"field 'ts' is {2**63}, outside Avro's long"),
    (json_with(amount=10**400), ErrorClass.INVALID_VALUE,
     "field 'amount' is too large for a double"),
    (json_with(amount=float("nan")), ErrorClass.INVALID_VALUE,
     "field 'amount' is nan, must be finite"),
    (json_with(amount=float("-inf")), ErrorClass.INVALID_VALUE,
     "field 'amount' is -inf, must be finite"),
    (json_with(amount=1e400), ErrorClass.INVALID_VALUE, "field 'amount' is inf, must be finite"),
])
def test_rejections_name_the_class_and_the_problem(raw: bytes, error_class: ErrorClass,
                                                   message: str) -> None:
    rejected(DECODER.decode(raw), error_class, message)


def test_avro_rejections() -> None:
    raw = ENCODER.avro(VALID)
    rejected(DECODER.decode(raw + b"\x00\x00"), ErrorClass.MALFORMED_RECORD,
             "2 trailing bytes after the Avro record")
    rejected(DECODER.decode(ENCODER.avro({**VALID, "amount": float("nan")})),
             ErrorClass.INVALID_VALUE, "field 'amount' is nan, must be finite")


def test_avro_writers_are_checked_against_the_declared_types(tmp_path: Path) -> None:
    """Without its own Avro schema a source reads each writer schema as is, then checks."""
    as_text = {"type": "record", "name": "payments", "fields": [
        {"name": n, "type": "string"} for n in PAYMENTS.field_types]}
    no_card = {**avro_schema_for(PAYMENTS)}
    no_card["fields"] = [f for f in no_card["fields"] if f["name"] not in ("card_id", "status")]
    for i, schema in enumerate((as_text, no_card, "string")):
        (tmp_path / f"{i}.avsc").write_text(json.dumps(schema), encoding="utf-8")
    (tmp_path / "registry.json").write_text(json.dumps({"payments-value": [
        {"id": i + 1, "file": f"{i}.avsc"} for i in range(3)]}), encoding="utf-8")
    decoder = RecordDecoder(PAYMENTS, FileSchemaRegistry(tmp_path / "registry.json"))
    text_record = {k: str(v) for k, v in VALID.items()}
    rejected(decoder.decode(frame(1, as_text, text_record)), ErrorClass.SCHEMA_VIOLATION,
             "field 'amount' must be a number, got a string \"12.5\"")
    rejected(decoder.decode(frame(2, no_card, VALID)), ErrorClass.SCHEMA_VIOLATION,
             "missing required field 'status'")
    rejected(decoder.decode(b"\x00\x00\x00\x00\x03\x02a"), ErrorClass.INCOMPATIBLE_SCHEMA,
             "schema id 3 is not an Avro record schema")


def test_the_event_time_is_required_even_if_declared_nullable() -> None:
    source = Source("s", topic="s", timestamp="at", fields={"at": "long?"})
    rejected(RecordDecoder(source, REGISTRY).decode(b'{"at": null}'),
             ErrorClass.SCHEMA_VIOLATION, "field 'at' must be an integer (event time, epoch ms)")


def test_booleans_and_longs() -> None:
    source = Source("s", topic="s", fields={"ts": "long", "n": "long?", "flag": "boolean"})
    decoder = RecordDecoder(source, REGISTRY)
    assert decoder.decode(b'{"ts": 1, "flag": false}') == {"ts": 1, "n": None, "flag": False}
    rejected(decoder.decode(b'{"ts": 1, "n": true, "flag": false}'),
             ErrorClass.SCHEMA_VIOLATION, "field 'n' must be an integer or null, got a boolean")
    rejected(decoder.decode(b'{"ts": 1, "flag": 1}'), ErrorClass.SCHEMA_VIOLATION,
             "field 'flag' must be a boolean, got an integer 1")
    rejected(decoder.decode(b'{"ts": 1, "n": -9223372036854775809, "flag": true}'),
             ErrorClass.SCHEMA_VIOLATION, "field 'n' is -9223372036854775809, outside Avro's long")


# --- fuzz: never raises ----------------------------------------------------------------------


def is_decoded(result: object) -> bool:
    return (isinstance(result, Problem) and result.stage == Stage.DECODE) or (
        isinstance(result, dict) and list(result) == list(PAYMENTS.field_types))


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert is_decoded(DECODER.decode(raw))
    assert is_decoded(DECODER.decode(b"\x00" + raw))


@settings(max_examples=300)
@given(json_values | st.dictionaries(st.sampled_from([*VALID, "x"]), json_values))
def test_arbitrary_json_never_raises(value: Any) -> None:
    assert is_decoded(DECODER.decode(json.dumps(value).encode()))


@given(payments, st.data())
def test_corrupted_avro_never_raises(record: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(ENCODER.avro(record))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(5, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(5, len(raw)))
    assert is_decoded(DECODER.decode(bytes(raw[:cut])))


# --- entity ids -------------------------------------------------------------------------------


def test_entity_ids_join_the_key_values() -> None:
    record = {"merchant_id": "m-1", "card_id": "c-9", "terminal": 42, "none": None, "empty": ""}
    assert entity_id(record, ("merchant_id",)) == "m-1"
    assert entity_id(record, ("merchant_id", "terminal", "card_id")) == "m-1|42|c-9"
    assert entity_id({"n": -(2**63)}, ("n",)) == str(-(2**63))
    assert entity_id(record, ("merchant_id", "none")) is None  # does not count: not an error
    problem = entity_id(record, ("merchant_id", "empty"))
    assert problem == Problem(Stage.DECODE, ErrorClass.INVALID_VALUE,
                              "field 'empty' is empty; it is an entity key")


# --- the built-in contract through the adapter -------------------------------------------------

BUILTIN = decoder_for(events_source("events"), REGISTRY)
EVENTS = EventDecoder(REGISTRY)
EVENT_ENCODER = EventEncoder(REGISTRY)


@st.composite
def raw_user_events(draw: st.DrawFn) -> bytes:
    """Valid and invalid user events, as Avro or JSON, sometimes corrupted."""
    event_type = draw(st.sampled_from(EVENT_TYPES))
    record: dict[str, Any] = {
        "event_id": draw(texts), "user_id": draw(texts), "event_type": event_type,
        "item_id": draw(st.none() | texts),
        "amount": draw(st.none() | st.floats(allow_nan=True)),
        "ts": draw(longs), "context": draw(st.none() | st.dictionaries(texts, texts, max_size=2)),
    }
    if draw(st.booleans()):
        raw = bytearray(EVENT_ENCODER.avro(record))
        if draw(st.booleans()):
            raw[draw(st.integers(5, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    if draw(st.booleans()):
        record[draw(st.sampled_from(list(record)))] = draw(json_values)
    return json.dumps(record).encode()


@given(raw_user_events())
def test_the_adapter_returns_what_the_event_decoder_does(raw: bytes) -> None:
    expected = EVENTS.decode(raw)
    got = BUILTIN.decode(raw)
    if isinstance(expected, Problem):
        assert got == expected
    else:
        assert isinstance(got, dict)
        assert Event(**got) == expected
        assert list(got) == list(Event._fields)


def test_the_adapter_resolves_older_writer_schemas(tmp_path: Path) -> None:
    old = json.loads(schema_path("user_event").read_text(encoding="utf-8"))
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("item_id", "context")]
    (tmp_path / "old.avsc").write_text(json.dumps(old), encoding="utf-8")
    (tmp_path / "registry.json").write_text(json.dumps({"events-value": [
        {"id": 7, "file": "old.avsc"}]}), encoding="utf-8")
    registry = FileSchemaRegistry(tmp_path / "registry.json")
    raw = frame(7, old, {"event_id": "e", "user_id": "u", "event_type": "purchase",
                         "amount": 3.0, "ts": 5})
    decoded = decoder_for(events_source("events"), registry).decode(raw)
    assert decoded == Event("e", "u", "purchase", None, 3.0, 5, None)._asdict()
    assert isinstance(decoded, dict)
    assert list(decoded) == list(Event._fields)
