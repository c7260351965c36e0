"""Score records <-> bytes: Avro (``schemas/score.avsc``) in the Confluent wire format.

The schema id comes from the configured registry under ``<scores topic>-value``; readers resolve
any registered writer schema to the current one.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas import load_schema
from udfs.codec import HEADER_SIZE, MAGIC_BYTE
from udfs.schema_registry import SchemaRegistry

ScoreRecord = dict[str, Any]


class ScoreCodec:
    """Encode and decode score records for one subject."""

    def __init__(self, registry: SchemaRegistry, subject: str) -> None:
        self._registry = registry
        self._subject = subject
        self._schema = load_schema("score")
        self._header: bytes | None = None

    def encode(self, score: ScoreRecord) -> bytes:
        """Magic byte, 4-byte schema id, schemaless Avro body."""
        if self._header is None:
            schema_id = self._registry.id_for(self._subject, self._schema)
            self._header = bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")
        buffer = BytesIO()
        buffer.write(self._header)
        schemaless_writer(buffer, self._schema, score)
        return buffer.getvalue()

    def decode(self, raw: bytes) -> ScoreRecord:
        """The record in ``raw`` (ValueError if it is not a framed Avro record)."""
        if len(raw) < HEADER_SIZE or raw[0] != MAGIC_BYTE:
            raise ValueError("not a Confluent-framed Avro record")
        writer = self._registry.schema_by_id(int.from_bytes(raw[1:HEADER_SIZE], "big"))
        buffer = BytesIO(raw)
        buffer.seek(HEADER_SIZE)
        return schemaless_reader(buffer, writer, self._schema)
