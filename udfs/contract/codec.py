"""Bytes <-> :class:`Event`: Avro in the Confluent wire format, or plain UTF-8 JSON objects.

Errors are data: :meth:`EventDecoder.decode` returns a :class:`Problem` of stage ``decode`` (a
stable :class:`ErrorClass` and a precise message) instead of raising, so a bad record can be
routed to a dead-letter queue.
Only an unusable schema registry (unreachable, 5xx) raises, because retrying can fix that.

Both formats obey the same contract, ``schemas/user_event.avsc`` plus its documented rules:
non-empty ``event_id`` and ``user_id``; ``amount`` finite and >= 0, required for purchases.
JSON fields not in the schema are ignored, as Avro schema resolution ignores unknown fields.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any, NamedTuple, NoReturn, cast

import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form
from fastavro.types import Schema as ParsedSchema

from featurestream.schemas import load_schema
from featurestream.udfs.contract.events import EVENT_TYPES, Event
from featurestream.udfs.contract.schema_registry import SchemaRegistry, UnknownSchemaId
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

# fastavro types what it reads as any Avro value; a record schema always yields a dict.
_read_record = cast(Callable[[BytesIO, ParsedSchema, ParsedSchema | None], dict[str, Any]],
                    schemaless_reader)

MAGIC_BYTE = 0
HEADER_SIZE = 5  # magic byte + 4-byte big-endian schema id
DEFAULT_SUBJECT = "events-value"
_LONG_RANGE = range(-(2**63), 2**63)
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
_OBJECT_ADDRESS = re.compile(r"\s*(?:from )?<[\w.]+ object at 0x[0-9a-f]+>")


class _Rejected(Exception):
    """Internal: carries a decode :class:`Problem` out of the validation helpers."""

    def __init__(self, error_class: ErrorClass, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(Stage.DECODE, error_class, message)


def _resolution_reason(exc: SchemaResolutionError) -> str:
    """fastavro's reason without the whole schemas it prints (``Schema mismatch: {...} is not
    {...}``: kilobytes of docs in a DLQ header); the schema id says which writer it was."""
    text = str(exc)
    return text[:text.index(" {")].rstrip(":") if " {" in text else text[:200]


class _ReadPlan(NamedTuple):
    """How to read the records of one writer schema id (schemas parsed once)."""

    writer: ParsedSchema
    reader: ParsedSchema | None  # None: written with our own schema, no resolution needed


def read_framed_avro(raw: bytes, cached: Callable[[int], _ReadPlan | None],
                     plan: Callable[[int], _ReadPlan], reader_name: str
                     ) -> tuple[dict[str, Any], bool]:
    """The record in a Confluent-framed Avro value, and whether it was resolved against a
    reader schema; ``cached(id)`` / ``plan(id)`` give the read plan of a writer schema id.
    Raises :class:`_Rejected` with the precise problem (one reader for every decoder)."""
    if len(raw) < HEADER_SIZE:
        raise _Rejected(
            ErrorClass.MALFORMED_RECORD,
            f"Avro frame of {len(raw)} bytes is shorter than its {HEADER_SIZE}-byte header"
            " (magic byte 0 + 4-byte schema id)",
        )
    schema_id = int.from_bytes(raw[1:HEADER_SIZE], "big")
    writer, reader = cached(schema_id) or plan(schema_id)
    buffer = BytesIO(raw)
    buffer.seek(HEADER_SIZE)
    try:
        record = _read_record(buffer, writer, reader)
    except SchemaResolutionError as exc:
        raise _Rejected(
            ErrorClass.INCOMPATIBLE_SCHEMA,
            f"a record of schema id {schema_id} cannot be read as {reader_name}: "
            f"{_resolution_reason(exc)}",
        ) from None
    except Exception as exc:  # fastavro reports corrupt input with many exception types
        # without fastavro's "from <_io.BytesIO object at 0x...>": the same corruption gives
        # the same message (dead letters are grouped by it), and no memory address leaks
        text = _OBJECT_ADDRESS.sub("", str(exc))
        detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        raise _Rejected(
            ErrorClass.MALFORMED_RECORD,
            f"Avro body of {len(raw) - HEADER_SIZE} bytes (schema id {schema_id}) is"
            f" truncated or corrupt ({detail})",
        ) from None
    trailing = len(raw) - buffer.tell()
    if trailing:
        raise _Rejected(
            ErrorClass.MALFORMED_RECORD,
            f"{trailing} trailing bytes after the Avro record (schema id {schema_id})",
        )
    return record, reader is not None


class EventDecoder:
    """Decode raw Kafka values into :class:`Event` objects or decode :class:`Problem` values."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self._registry = registry
        self._reader_schema = load_schema("user_event")
        self._reader_form = to_parsing_canonical_form(self._reader_schema)
        self._plans: dict[int, _ReadPlan] = {}  # by writer schema id

    def decode(self, raw: bytes) -> Event | Problem:
        """The event in ``raw`` (framed Avro or a JSON object), or why it is not one."""
        try:
            if not raw:
                raise _Rejected(ErrorClass.MALFORMED_RECORD, "empty record (0 bytes)")
            if raw[0] == MAGIC_BYTE:
                record, resolved = read_framed_avro(raw, self._plans.get, self._plan,
                                                    "UserEvent")
                # written with our own schema, keys are in Event's field order; resolution
                # appends defaulted fields at the end
                event = Event(**record) if resolved else Event._make(record.values())
            else:
                event = Event._make(_json_fields(raw).values())
            _check_rules(event.event_id, event.user_id, event.event_type, event.amount)
            return event
        except _Rejected as rejected:
            return rejected.problem

    def decode_fields(self, raw: bytes) -> dict[str, Any] | Problem:
        """:meth:`decode` with the event as field -> value (in :class:`Event`'s order), for
        :mod:`udfs.contract.records`: Avro, the usual format, is checked as read, no Event built.
        """
        if not raw:
            event = self.decode(raw)
            assert isinstance(event, Problem)
            return event
        try:
            record = self._read_avro(raw) if raw[0] == MAGIC_BYTE else _json_fields(raw)
            _check_rules(record["event_id"], record["user_id"], record["event_type"],
                         record["amount"])
            return record
        except _Rejected as rejected:
            return rejected.problem

    def _read_avro(self, raw: bytes) -> dict[str, Any]:
        """The Avro record in ``raw``, its keys in :class:`Event`'s field order."""
        record, resolved = read_framed_avro(raw, self._plans.get, self._plan, "UserEvent")
        if not resolved:  # written with our own schema: keys are in Event's field order
            return record
        return {name: record[name] for name in Event._fields}  # resolution appends defaults

    def _plan(self, schema_id: int) -> _ReadPlan:
        try:
            writer = self._registry.schema_by_id(schema_id)
        except UnknownSchemaId as exc:
            raise _Rejected(ErrorClass.UNKNOWN_SCHEMA_ID, str(exc)) from None
        same = to_parsing_canonical_form(writer) == self._reader_form
        # Parsed once here: fastavro would otherwise parse the schemas on every record.
        plan = self._plans[schema_id] = _ReadPlan(
            parse_schema(writer), None if same else parse_schema(self._reader_schema))
        return plan


class EventEncoder:
    """Encode events as framed Avro (schema id of ``subject``) or as compact UTF-8 JSON.

    Encoding trusts its input to satisfy the contract; validate untrusted input with
    :class:`EventDecoder` first. The schema id is looked up (or registered) on first use.
    """

    def __init__(self, registry: SchemaRegistry, subject: str = DEFAULT_SUBJECT) -> None:
        self._registry = registry
        self._subject = subject
        self._schema = load_schema("user_event")
        self._parsed = parse_schema(self._schema)
        self._header: bytes | None = None

    def avro(self, event: Event | Mapping[str, Any]) -> bytes:
        """Confluent wire format: magic byte, 4-byte schema id, schemaless Avro body."""
        if self._header is None:
            schema_id = self._registry.id_for(self._subject, self._schema)
            self._header = bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")
        buffer = BytesIO()
        buffer.write(self._header)
        schemaless_writer(buffer, self._parsed, _as_record(event))
        return buffer.getvalue()

    def json(self, event: Event | Mapping[str, Any]) -> bytes:
        """One compact JSON object with the schema's field names (no trailing newline)."""
        text = json.dumps(_as_record(event), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
        return text.encode("utf-8")


def _as_record(event: Event | Mapping[str, Any]) -> Mapping[str, Any]:
    return event._asdict() if isinstance(event, Event) else event


_HUGE = 2.0**63


def _holds_huge_float(value: dict[str, Any] | list[Any]) -> bool:
    """Whether a parsed JSON object or array holds a float of magnitude 2**63 or more, at any
    depth. A loop, not recursion: orjson reads 1,023 levels, deeper than Python's (and the
    Flink worker's) recursion limit, and a RecursionError here would escape the decoder."""
    pending: list[Any] = [value]
    while pending:
        container = pending.pop()
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is float:
                if not -_HUGE < item < _HUGE:
                    return True
            elif kind is dict or kind is list:
                pending.append(item)
    return False


def read_json_object(raw: bytes, expected: str) -> dict[str, Any]:
    """The JSON object in ``raw``; raises :class:`_Rejected` saying why it is not one (for
    every decoder; ``expected`` ends the message for a value that is not an object).

    orjson reads it (three times faster); the standard library reads again what orjson
    refuses -- invalid JSON, but also the ``NaN`` literal, which the checks then judge -- and
    any text holding a number of 2**63 or more, which may be an integer beyond 64 bits that
    orjson reads as a float, so every verdict and message is the standard library's."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = _read_json_slowly(raw)
    else:
        if type(value) is not dict or _holds_huge_float(value):
            value = _read_json_slowly(raw)
    if type(value) is not dict:
        raise _Rejected(ErrorClass.MALFORMED_RECORD,
                        f"JSON value is {_describe(value)}, expected {expected}")
    return value


def _read_json_slowly(raw: bytes) -> Any:
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        _reject_non_json(raw, f"invalid UTF-8 at byte {exc.start} ({exc.reason})")
    except RecursionError:
        _reject_non_json(raw, "JSON nested too deeply")
    except json.JSONDecodeError as exc:
        _reject_non_json(raw, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        _reject_non_json(raw, f"invalid JSON: {exc}")
    if _holds_lone_surrogate(value):  # orjson refuses these; the standard library reads them
        _reject_non_json(raw, "a \\u escape is a lone UTF-16 surrogate, not a character")
    return value


def _holds_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a string (or key) with a lone surrogate such as
    ``"\\ud800"``: no text, it cannot be encoded (an id with one failed the sharding stage)."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif kind is dict:
            pending += item
            pending += item.values()
        elif kind is list:
            pending += item
    return False


def _json_fields(raw: bytes) -> dict[str, Any]:
    """The checked fields of a JSON event, in :class:`Event`'s order."""
    value = read_json_object(raw, "an object with the UserEvent fields")
    return {
        "event_id": _string(value, "event_id"),
        "user_id": _string(value, "user_id"),
        "event_type": _event_type(value),
        "item_id": _optional_string(value, "item_id"),
        "amount": _amount(value),
        "ts": _timestamp(value),
        "context": _context(value),
    }


def _reject_non_json(raw: bytes, problem: str) -> NoReturn:
    """Reject unreadable JSON; if it does not even start like an object, say it is neither."""
    if raw.lstrip()[:1] == b"{":
        raise _Rejected(ErrorClass.MALFORMED_RECORD, problem)
    raise _Rejected(
        ErrorClass.MALFORMED_RECORD,
        f"neither Avro (first byte is 0x{raw[0]:02x}, not the magic byte 0x00) nor a JSON"
        f" object ({problem})",
    )


def _required(obj: Mapping[str, Any], name: str) -> Any:
    try:
        return obj[name]
    except KeyError:
        raise _Rejected(ErrorClass.SCHEMA_VIOLATION, f"missing required field {name!r}") from None


def _wrong_type(name: str, expected: str, value: Any) -> _Rejected:
    return _Rejected(
        ErrorClass.SCHEMA_VIOLATION, f"field {name!r} must be {expected}, got {_describe(value)}"
    )


def _string(obj: Mapping[str, Any], name: str) -> str:
    value = _required(obj, name)
    if type(value) is not str:
        raise _wrong_type(name, "a string", value)
    return value


def _optional_string(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and type(value) is not str:
        raise _wrong_type(name, "a string or null", value)
    return value


def _event_type(obj: Mapping[str, Any]) -> str:
    value = _string(obj, "event_type")
    if value not in _EVENT_TYPE_SET:
        raise _Rejected(
            ErrorClass.SCHEMA_VIOLATION,
            # quoted up to 40 characters: the message is a DLQ header, and a 1 MB value would
            # make the dead letter larger than the broker takes
            f"field 'event_type' is {value[:40]!r}{'...' if len(value) > 40 else ''},"
            f" expected one of {', '.join(EVENT_TYPES)}",
        )
    return value


def _amount(obj: Mapping[str, Any]) -> float | None:
    value = obj.get("amount")
    if value is None:
        return None
    if type(value) not in (int, float):
        raise _wrong_type("amount", "a number or null", value)
    try:
        return float(value)
    except OverflowError:
        raise _Rejected(
            ErrorClass.INVALID_VALUE, "field 'amount' is too large for a double"
        ) from None


def _timestamp(obj: Mapping[str, Any]) -> int:
    value = _required(obj, "ts")
    if type(value) is not int:
        raise _wrong_type("ts", "an integer (event time, epoch ms)", value)
    if value not in _LONG_RANGE:
        raise _Rejected(ErrorClass.SCHEMA_VIOLATION, f"field 'ts' is {value}, outside Avro's long")
    return value


def _context(obj: Mapping[str, Any]) -> dict[str, str] | None:
    value = obj.get("context")
    if value is None:
        return None
    if type(value) is not dict:
        raise _wrong_type("context", "an object of strings or null", value)
    for key, item in value.items():
        if type(item) is not str:
            raise _wrong_type(f"context.{key}", "a string", item)
    return value


def _check_rules(event_id: str, user_id: str, event_type: str, amount: float | None) -> None:
    """The contract's rules beyond types, shared by both formats."""
    if not event_id:
        raise _Rejected(ErrorClass.INVALID_VALUE, "field 'event_id' is empty")
    if not user_id:
        raise _Rejected(ErrorClass.INVALID_VALUE, "field 'user_id' is empty")
    if amount is None:
        if event_type == "purchase":
            raise _Rejected(ErrorClass.INVALID_VALUE, "field 'amount' is null or missing;"
                            " a purchase needs an amount")
    elif not math.isfinite(amount):
        raise _Rejected(ErrorClass.INVALID_VALUE, f"field 'amount' is {amount}, must be finite")
    elif amount < 0:
        raise _Rejected(ErrorClass.INVALID_VALUE, f"field 'amount' is {amount}, must be >= 0")


def _describe(value: Any) -> str:
    """A JSON value's type and a short excerpt, for messages."""
    if value is None:
        return "null"
    kinds = {bool: "a boolean", str: "a string", int: "an integer", float: "a number",
             list: "an array", dict: "an object"}
    kind = kinds.get(type(value), type(value).__name__)
    try:
        excerpt = json.dumps(value, ensure_ascii=False, default=str)
    except RecursionError:  # orjson reads 1,023 levels, more than json.dumps can write
        excerpt = "nested too deeply to quote"
    return f"{kind} {excerpt[:40]}{'...' if len(excerpt) > 40 else ''}"
