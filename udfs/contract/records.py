"""Bytes <-> records of a declared :class:`Source`: a dict of the source's fields, or a Problem.

The user-declared counterpart of :mod:`udfs.contract.codec` (same wire formats, same
:class:`ErrorClass` values, same message style; errors are data, only an unusable schema
registry raises). API:

- :func:`decoder_for` ``(source, registry) -> RecordDecoding``: the decoder the job uses. For
  the built-in contract (``source.avro`` names ``schemas/user_event.avsc``) a
  :class:`BuiltinDecoder`, which keeps :class:`EventDecoder`'s stricter documented rules
  (non-empty ids, an amount for purchases...); otherwise a :class:`RecordDecoder`.
- ``decoder.decode(raw) -> dict[str, Any] | Problem``: the record as field -> value, every
  field the source declares present (a nullable field may be None) in declaration order,
  fields it does not declare dropped; or a :class:`Problem` of stage ``decode``.
- :func:`entity_id` ``(record, keys) -> str | Problem | None``: which entity instance a decoded
  record belongs to (the decoder cannot know: each group names its own entity keys). The key
  values as text (a long in decimal) joined with ``|``; None when a key is null (the event does
  not count for that entity, which is not an error); an INVALID_VALUE Problem for an empty
  string key.
- :class:`RecordEncoder` ``(source, registry, subject=None)`` with ``.avro(record)`` and
  ``.json(record)``, for tests, the generator and the bench; :func:`avro_schema_for` derives
  the Avro schema of a source declared with field types only.

Records are Avro in the Confluent wire format (magic byte 0, 4-byte schema id, the writer
schema from the registry, resolved to the source's own Avro schema when it has one: its
``avro`` file, or the ``schema_json`` the loader fetched for its ``registry_subject``) or UTF-8
JSON objects. Both are then checked against ``source.field_types``: ``string``, ``long``,
``double``, ``boolean`` (``?``: nullable) and ``other`` (any value, unchecked). A missing
non-nullable field or a wrong type is a SCHEMA_VIOLATION (a boolean is not a long; an integer
is a fine double and becomes a float; a long must fit Avro's 64 bits); NaN and infinities are
INVALID_VALUE. The event-time field (``source.timestamp``) must be a non-null long. JSON
records are checked against these types only (an Avro enum's symbols are not enforced). Avro
logical types are read as their underlying type (a ``timestamp-millis`` as its epoch-ms long),
as the definitions' field types describe them.

With the file-backed registry, decoder and encoder hold the source's own schema in memory
(:meth:`FileSchemaRegistry.register`) under ``<topic>-value``: its id derives from the schema,
so a producer and the job agree on it without a manifest entry (a schema the registry already
has keeps its id). The encoder writes under the source's ``registry_subject`` if it names one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from fastavro import parse_schema, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from fastavro.types import Schema as ParsedSchema

from featurestream.schemas import load_schema, parse_schema_file, schema_path
from featurestream.udfs.contract.codec import (
    MAGIC_BYTE,
    EventDecoder,
    _describe,
    _ReadPlan,
    _Rejected,
    read_framed_avro,
    read_json_object,
)
from featurestream.udfs.contract.schema_registry import (
    FileSchemaRegistry,
    Schema,
    SchemaRegistry,
    UnknownSchemaId,
)
from featurestream.udfs.definitions.defaults import BUILTIN_SCHEMA
from featurestream.udfs.definitions.model import Source
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

_LONG_RANGE = range(-(2**63), 2**63)
_AVRO_TYPES = {"string": "string", "long": "long", "double": "double", "boolean": "boolean"}
_EXPECTED = {"string": "a string", "long": "an integer", "double": "a number",
             "boolean": "a boolean"}


class RecordDecoding(Protocol):
    """What the job needs from a decoder: bytes -> record or why not."""

    def decode(self, raw: bytes) -> dict[str, Any] | Problem:
        """The record in ``raw``, or the decode Problem."""
        ...


def decoder_for(source: Source, registry: SchemaRegistry) -> RecordDecoding:
    """The decoder of ``source``: the built-in contract's own rules, or its declared fields."""
    if is_builtin(source):
        return BuiltinDecoder(registry)
    return RecordDecoder(source, registry)


def is_builtin(source: Source) -> bool:
    """Whether the source reads the built-in ``schemas/user_event.avsc`` contract."""
    avro = source.avro
    if avro is None:
        return False
    return avro in (BUILTIN_SCHEMA, f"{BUILTIN_SCHEMA}.avsc") or (
        Path(avro).is_file() and Path(avro).resolve() == schema_path(BUILTIN_SCHEMA))


class BuiltinDecoder:
    """:class:`EventDecoder` (and its stricter rules) returning the event as a dict."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.decode = EventDecoder(registry).decode_fields


class _Field(NamedTuple):
    """How to check one declared field."""

    name: str
    kind: str  # string, long, double, boolean or other
    nullable: bool
    expected: str  # for messages: "a string", "a number or null"...


class RecordDecoder:
    """Decode raw Kafka values of a declared source into checked dicts or decode Problems."""

    def __init__(self, source: Source, registry: SchemaRegistry) -> None:
        self._source = source
        self._registry = registry
        own = source_schema(source)
        self._reader_schema = own if has_own_schema(source) else None
        self._reader_name = str(own["name"]) if self._reader_schema and own else ""
        self._reader_form = (to_parsing_canonical_form(self._reader_schema)
                             if self._reader_schema else None)
        if own is not None and isinstance(registry, FileSchemaRegistry):
            registry.register(f"{source.topic}-value", own)
        self._fields = tuple(_field(name, kind, name == source.timestamp)
                             for name, kind in source.field_types.items())
        self._plans: dict[int, _ReadPlan] = {}  # by writer schema id

    def decode(self, raw: bytes) -> dict[str, Any] | Problem:
        """The record in ``raw`` (framed Avro or a JSON object), or why it is not one."""
        try:
            if not raw:
                raise _Rejected(ErrorClass.MALFORMED_RECORD, "empty record (0 bytes)")
            record = self._read_avro(raw) if raw[0] == MAGIC_BYTE else self._read_json(raw)
            return self._checked(record)
        except _Rejected as rejected:
            return rejected.problem

    def _read_avro(self, raw: bytes) -> dict[str, Any]:
        return read_framed_avro(raw, self._plans.get, self._plan, self._reader_name)[0]

    def _plan(self, schema_id: int) -> _ReadPlan:
        try:
            writer = self._registry.schema_by_id(schema_id)
        except UnknownSchemaId as exc:
            raise _Rejected(ErrorClass.UNKNOWN_SCHEMA_ID, str(exc)) from None
        if self._reader_schema is None and not (
                isinstance(writer, dict) and writer.get("type") == "record"):
            raise _Rejected(ErrorClass.INCOMPATIBLE_SCHEMA,
                            f"schema id {schema_id} is not an Avro record schema, so its values"
                            f" cannot be records of source {self._source.name!r}")
        same = (self._reader_form is not None
                and to_parsing_canonical_form(writer) == self._reader_form)
        reader = None if same or self._reader_schema is None else _plain(self._reader_schema)
        # Parsed once here: fastavro would otherwise parse the schemas on every record.
        plan = self._plans[schema_id] = _ReadPlan(_plain(writer), reader)
        return plan

    def _read_json(self, raw: bytes) -> dict[str, Any]:
        return read_json_object(raw, f"an object with the fields of source {self._source.name!r}")

    def _checked(self, record: dict[str, Any]) -> dict[str, Any]:
        """The declared fields of ``record``, checked against their types."""
        checked: dict[str, Any] = {}
        for field in self._fields:
            value = record.get(field.name)
            if value is None:
                if not field.nullable:
                    if field.name not in record:
                        raise _Rejected(ErrorClass.SCHEMA_VIOLATION,
                                        f"missing required field {field.name!r}")
                    raise _wrong_type(field, value)
            elif field.kind == "string":
                if type(value) is not str:
                    raise _wrong_type(field, value)
            elif field.kind == "long":
                if type(value) is not int:
                    raise _wrong_type(field, value)
                if value not in _LONG_RANGE:
                    raise _Rejected(ErrorClass.SCHEMA_VIOLATION,
                                    f"field {field.name!r} is {value}, outside Avro's long")
            elif field.kind == "double":
                value = _double(field, value)
            elif field.kind == "boolean" and type(value) is not bool:
                raise _wrong_type(field, value)
            checked[field.name] = value
        return checked


def _field(name: str, declared: str, is_timestamp: bool) -> _Field:
    kind, nullable = declared.rstrip("?"), declared.endswith("?")
    if kind == "other":
        return _Field(name, kind, True, "")
    if is_timestamp:  # the event time is never optional
        return _Field(name, "long", False, "an integer (event time, epoch ms)")
    expected = _EXPECTED[kind] + (" or null" if nullable else "")
    return _Field(name, kind, nullable, expected)


def _wrong_type(field: _Field, value: Any) -> _Rejected:
    return _Rejected(ErrorClass.SCHEMA_VIOLATION,
                     f"field {field.name!r} must be {field.expected}, got {_describe(value)}")


def _double(field: _Field, value: Any) -> float:
    if type(value) is float:
        number = value
    elif type(value) is int:
        try:
            number = float(value)
        except OverflowError:
            raise _Rejected(ErrorClass.INVALID_VALUE,
                            f"field {field.name!r} is too large for a double") from None
    else:
        raise _wrong_type(field, value)
    if not math.isfinite(number):
        raise _Rejected(ErrorClass.INVALID_VALUE,
                        f"field {field.name!r} is {number}, must be finite")
    return number


def _plain(schema: Any) -> ParsedSchema:
    """``schema`` parsed without logical types (read as their underlying Avro type)."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()
                    if k != "logicalType" and not k.startswith("__")}
        if isinstance(node, list):
            return [strip(item) for item in node]
        return node

    return parse_schema(strip(schema))


def entity_id(record: Mapping[str, Any], keys: Sequence[str]) -> str | Problem | None:
    """The id of the entity instance ``record`` belongs to: its ``keys`` values as text joined
    with ``|``; None when a key is null (the event does not count for that entity); an
    INVALID_VALUE Problem when a key is an empty string."""
    parts = []
    for key in keys:
        value = record.get(key)
        if value is None:
            return None
        if type(value) is not str:
            value = str(value)  # a long key, in decimal
        elif not value:
            return Problem(Stage.DECODE, ErrorClass.INVALID_VALUE,
                           f"field {key!r} is empty; it is an entity key")
        parts.append(value)
    return parts[0] if len(parts) == 1 else "|".join(parts)


# -- Encoding ---------------------------------------------------------------------------------


def has_own_schema(source: Source) -> bool:
    """Whether ``source`` comes with an Avro schema (a file or a registry subject's), which is
    then the reader schema, rather than field types only."""
    return source.avro is not None or source.schema_json is not None


def source_schema(source: Source) -> Schema | None:
    """The Avro schema of ``source``: its own (the registry subject's schema the loader
    fetched, or a path or a name in ``schemas/``), else one derived from its field types; None
    when a field's type (``other``) has no derivation."""
    if source.schema_json is not None:
        return parse_schema(json.loads(source.schema_json))  # type: ignore[return-value]
    if source.avro is not None:
        path = Path(source.avro)
        return parse_schema_file(path) if path.is_file() else load_schema(source.avro)
    if any(kind == "other" for kind in source.field_types.values()):
        return None
    return avro_schema_for(source)


def avro_schema_for(source: Source) -> Schema:
    """An Avro record schema from the source's field types (nullable: ``["null", T]``,
    default null), named after the source. ValueError for an ``other`` field."""
    fields: list[dict[str, Any]] = []
    for name, declared in source.field_types.items():
        kind = _AVRO_TYPES.get(declared.rstrip("?"))
        if kind is None:
            raise ValueError(f"source {source.name!r}, field {name!r}: type {declared!r} has no "
                             "Avro type; give the source an Avro schema (avro=...)")
        if declared.endswith("?") and name != source.timestamp:
            fields.append({"name": name, "type": ["null", kind], "default": None})
        else:
            fields.append({"name": name, "type": kind})
    schema = {"type": "record", "name": source.name, "namespace": "featurestream.sources",
              "fields": fields}
    return parse_schema(schema)  # type: ignore[return-value]


class RecordEncoder:
    """Encode records of ``source`` as framed Avro (schema id of ``subject``, by default the
    source's ``registry_subject`` or ``<topic>-value``) or compact UTF-8 JSON.

    Encoding trusts its input; validate untrusted input with a decoder. The schema is the
    source's own or :func:`avro_schema_for`'s; its id is looked up (or registered) on first use.
    """

    def __init__(self, source: Source, registry: SchemaRegistry,
                 subject: str | None = None) -> None:
        schema = source_schema(source)
        if schema is None:
            schema = avro_schema_for(source)  # raises, naming the field without an Avro type
        self._registry = registry
        self._subject = subject or source.registry_subject or f"{source.topic}-value"
        self._schema = schema
        self._parsed = _plain(schema)
        self._header: bytes | None = None

    def avro(self, record: Mapping[str, Any]) -> bytes:
        """Confluent wire format: magic byte, 4-byte schema id, schemaless Avro body."""
        if self._header is None:
            registry = self._registry
            register: Callable[[str, Schema], int] = (
                registry.register if isinstance(registry, FileSchemaRegistry) else registry.id_for)
            schema_id = register(self._subject, self._schema)
            self._header = bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")
        buffer = BytesIO()
        buffer.write(self._header)
        schemaless_writer(buffer, self._parsed, record)
        return buffer.getvalue()

    def json(self, record: Mapping[str, Any]) -> bytes:
        """One compact JSON object (no trailing newline)."""
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
