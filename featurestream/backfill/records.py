"""What every backfill input yields: one record of history and where it came from."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from math import isfinite
from typing import Any, NamedTuple

import orjson

NO_TIMESTAMP = 0  # a file record's Kafka timestamp: it has none (the event time is in the value)


class Position(NamedTuple):
    """Where a record came from: a Kafka topic's partition and offset, or a file's record
    number (``partition`` None; the line number for JSON lines), 0-based."""

    input: str  # "kafka:<topic>" or the file's path
    partition: int | None
    offset: int

    def __str__(self) -> str:
        if self.partition is None:
            return f"{self.input}:{self.offset + 1}"
        return f"{self.input}[{self.partition}]@{self.offset}"


class HistoryRecord(NamedTuple):
    """One record of history: the source it feeds (its name in the definitions), the value
    bytes (framed Avro or a JSON object, as on the source's topic), where it came from, and
    its Kafka timestamp (:data:`NO_TIMESTAMP` for a file)."""

    source: str
    value: bytes
    position: Position
    timestamp: int


def json_value(record: dict[str, Any]) -> bytes:
    """A record read from a file (Avro, Parquet) as the JSON object value the job decodes.

    A NaN or infinite field is written as such (``NaN``), so the job's decoder refuses it with
    its own reason, as it would on the topic (orjson, the fast path, would write null); inside
    a nested value (an ``other`` field, which the job does not check) it becomes null. Bytes
    become base64 text, decimals numbers, and any other value JSON lacks its text."""
    for value in record.values():
        if type(value) is float and not isfinite(value):
            return json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                              default=_plain).encode()
    return orjson.dumps(record, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return float(value)
    return str(value)
