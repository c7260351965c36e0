"""History from files: JSON lines, Avro container files and Parquet, streamed in file order.

Every record becomes the value the job would read from the source's topic:

- **JSON lines** (``.jsonl``, ``.ndjson``, ``.json``): each line's bytes, as they are (a blank
  or broken line is the job's ``MalformedRecord``, never dropped);
- **Avro container files** (``.avro``): each record as a JSON object, with logical types read
  as their underlying type (a ``timestamp-millis`` as its epoch-ms long), as the job reads Avro;
- **Parquet** (``.parquet``, ``.pq``): row group by row group, each row as a JSON object;
  timestamp columns become epoch milliseconds.

A record's position is its 0-based number in the file (the line for JSON lines).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastavro import block_reader, parse_schema, schemaless_reader

from featurestream.backfill.records import NO_TIMESTAMP, HistoryRecord, Position, json_value
from featurestream.errors import UserFacingError

FORMATS = ("jsonl", "avro", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".avro": "avro",
               ".parquet": "parquet", ".pq": "parquet"}
_PARQUET_BATCH = 8_192
# fastavro types what it reads as any Avro value; the file's records are records (dicts).
_read_record = cast(Callable[[Any, Any, None], dict[str, Any]], schemaless_reader)


def format_of(path: Path, given: str | None) -> str:
    """The file's format: ``given`` (``--format``), else by its extension."""
    if given:
        return given
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise UserFacingError(
            f"cannot tell the format of {path} from its extension; name it .jsonl, .avro or "
            f".parquet, or pass --format {{{','.join(FORMATS)}}}")
    return found


def read_file(path: Path, source: str, fmt: str) -> Iterator[HistoryRecord]:
    """The records of the file, in file order, for ``source``."""
    if not path.is_file():
        raise UserFacingError(f"input file {path} does not exist; give an existing file or "
                              "kafka:TOPIC")
    readers = {"jsonl": _json_lines, "avro": _avro, "parquet": _parquet}
    return readers[fmt](path, source)


def count_of(path: Path, fmt: str) -> int | None:
    """How many records the file holds, when its metadata says so cheaply (Parquet)."""
    if fmt == "parquet":
        return int(_parquet_file(path).metadata.num_rows)
    return None


def _json_lines(path: Path, source: str) -> Iterator[HistoryRecord]:
    name = str(path)
    with path.open("rb") as lines:
        for number, line in enumerate(lines):
            yield HistoryRecord(source, line.rstrip(b"\r\n"), Position(name, None, number),
                                NO_TIMESTAMP)


def _avro(path: Path, source: str) -> Iterator[HistoryRecord]:
    """Avro blocks decoded record by record with the writer schema stripped of logical types
    (fastavro's file reader would turn a timestamp-millis into a datetime)."""
    name, number = str(path), 0
    with path.open("rb") as file:
        try:
            blocks = block_reader(file)
            schema = parse_schema(_without_logical_types(blocks.writer_schema))
            for block in blocks:
                data = cast(Any, block).bytes_  # documented; missing from the stubs
                for _ in range(block.num_records):
                    yield HistoryRecord(source, json_value(_read_record(data, schema, None)),
                                        Position(name, None, number), NO_TIMESTAMP)
                    number += 1
        except (ValueError, EOFError, OSError, StopIteration, TypeError) as exc:
            raise UserFacingError(
                f"{path} is not a readable Avro container file (at record {number + 1}: "
                f"{type(exc).__name__}: {exc}); give an Avro file, or the right --format"
            ) from None


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items()
                if k != "logicalType" and not k.startswith("__")}
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    return node


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(str(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserFacingError(f"{path} is not a readable Parquet file ({exc}); give a Parquet "
                              "file, or the right --format") from None


def _parquet(path: Path, source: str) -> Iterator[HistoryRecord]:
    name, number = str(path), 0
    for batch in _parquet_file(path).iter_batches(batch_size=_PARQUET_BATCH):
        for row in _epoch_ms(batch).to_pylist():
            yield HistoryRecord(source, json_value(row), Position(name, None, number),
                                NO_TIMESTAMP)
            number += 1


def _epoch_ms(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Timestamp columns as int64 epoch milliseconds (event times are longs in the job)."""
    columns = []
    for column in batch.columns:
        if pa.types.is_timestamp(column.type):
            column = pc.cast(pc.cast(column, pa.timestamp("ms", column.type.tz), safe=False),
                             pa.int64())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
