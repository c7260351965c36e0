"""Score records <-> bytes: Avro (``schemas/score.avsc``) in the Confluent wire format.

The schema id comes from the configured registry under ``<scores topic>-value``; readers resolve
any registered writer schema to the current one.

Encoding is the scoring job's hottest step (a score carries every feature it used in a map), so
:meth:`ScoreCodec.encode` writes the Avro binary encoding of this one schema directly, with the
map's keys encoded once per feature list; a property test pins it to fastavro's bytes. Decoding
(consumers, tests) goes through fastavro.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any, NotRequired, TypedDict

from fastavro import parse_schema, schemaless_reader

from featurestream.schemas import load_schema
from featurestream.udfs.contract.codec import HEADER_SIZE, MAGIC_BYTE
from featurestream.udfs.contract.schema_registry import SchemaRegistry


class ShadowScore(TypedDict):
    """The shadow model's output on the same record (score None where it could not score)."""

    version: int
    score: float | None


class ScoreRecord(TypedDict):
    """One score on the ``scores`` topic: the fields of ``schemas/score.avsc``, documented there.

    A typed dict rather than a class: it is the record fastavro reads and writes, and costs
    nothing to build on the hot path. ``experiment`` (the registry's experiment record id) may be
    left out: written as null, like a score of the settings' split.
    """

    event_id: str
    user_id: str
    event_type: str
    ts: int
    model: str
    version: int
    variant: str
    score: float
    features: dict[str, float]
    features_missing: bool
    as_of: int | None
    scored_at: int
    shadow: ShadowScore | None
    experiment: NotRequired[str | None]


_DOUBLE = struct.Struct("<d")


def _zigzag_varint(n: int) -> bytes:
    """An Avro int or long: zig-zag, then a base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Lengths and versions are small: their one-byte encodings, looked up instead of computed.
_ONE_BYTE = {n: _zigzag_varint(n) for n in range(-64, 64)}


def _long(n: int) -> bytes:
    """An Avro int or long (see :func:`_zigzag_varint`)."""
    return _ONE_BYTE.get(n) or _zigzag_varint(n)


def _string(text: str) -> bytes:
    data = text.encode()
    return _long(len(data)) + data


class _DoubleMap:
    """Writes ``map<double>`` values with one fixed key order: one ``struct.pack`` a map."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        encoded = [_string(k) for k in keys]
        self._keys = encoded
        self._format = struct.Struct("<" + "".join(f"{len(k)}sd" for k in encoded))
        self._count = _long(len(keys)) if keys else b""

    def encode(self, values: Any) -> bytes:
        if not self._keys:
            return b"\x00"
        args: list[Any] = [None] * (2 * len(self._keys))
        args[0::2] = self._keys
        args[1::2] = values
        return self._count + self._format.pack(*args) + b"\x00"


class ScoreCodec:
    """Encode and decode score records for one subject."""

    def __init__(self, registry: SchemaRegistry, subject: str) -> None:
        self._registry = registry
        self._subject = subject
        self._schema = load_schema("score")
        self._parsed = parse_schema(self._schema)  # fastavro parses once, not per record
        self._writers: dict[int, Any] = {}  # schema id -> parsed writer schema
        self._maps: dict[tuple[str, ...], _DoubleMap] = {}  # feature names -> their map writer
        self._header: bytes | None = None

    def encode(self, score: ScoreRecord) -> bytes:
        """Magic byte, 4-byte schema id, schemaless Avro body."""
        if self._header is None:
            schema_id = self._registry.id_for(self._subject, self._schema)
            self._header = bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")
        features = score["features"]
        names = tuple(features)
        writer = self._maps.get(names)
        if writer is None:
            writer = self._maps[names] = _DoubleMap(names)
        as_of, shadow, experiment = score["as_of"], score["shadow"], score.get("experiment")
        return b"".join((
            self._header,
            _string(score["event_id"]), _string(score["user_id"]), _string(score["event_type"]),
            _long(score["ts"]), _string(score["model"]), _long(score["version"]),
            _string(score["variant"]), _DOUBLE.pack(score["score"]),
            writer.encode(features.values()),
            b"\x01" if score["features_missing"] else b"\x00",
            b"\x00" if as_of is None else b"\x02" + _long(as_of),
            _long(score["scored_at"]),
            b"\x00" if shadow is None else b"\x02" + _long(shadow["version"]) + (
                b"\x00" if shadow["score"] is None else b"\x02" + _DOUBLE.pack(shadow["score"])),
            b"\x00" if experiment is None else b"\x02" + _string(experiment),
        ))

    def decode(self, raw: bytes) -> dict[str, Any]:
        """The record in ``raw``, shaped like :class:`ScoreRecord` but a plain dict for its
        consumers to reshape (ValueError if it is not a framed Avro record)."""
        if len(raw) < HEADER_SIZE or raw[0] != MAGIC_BYTE:
            raise ValueError("not a Confluent-framed Avro record")
        schema_id = int.from_bytes(raw[1:HEADER_SIZE], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._writers[schema_id] = parse_schema(
                self._registry.schema_by_id(schema_id))
        buffer = BytesIO(raw)
        buffer.seek(HEADER_SIZE)
        record = schemaless_reader(buffer, writer, self._parsed)
        if not isinstance(record, dict):
            raise ValueError("not a score record")
        return record
