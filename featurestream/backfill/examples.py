"""``--examples FILE``: the points in time a training set is built for, instead of every
scored event.

A Parquet or CSV file with one example per row: ``ts`` (epoch ms; a Parquet timestamp column
works too), the key columns of the entities the model reads (``user_id``, ``item_id``...:
named as in the definitions), and optionally ``label``, ``event_id`` (else
``example-<row number>``), ``event_type`` and the record features' fields (``amount``). Each
example gets each entity's row as of ``ts`` over the history that precedes it
(:meth:`Replay.probe <featurestream.udfs.offline.replay.Replay.probe>`); an entity whose key
columns are absent or null has no row. Examples are sorted by ``ts`` with bounded memory.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from featurestream.errors import UserFacingError
from featurestream.udfs.contract.events import Event
from featurestream.udfs.offline.ordering import sorted_by_time

_TEXT_COLUMNS = ("event_id", "event_type", "user_id", "item_id")


class Example(NamedTuple):
    """One example: its row number in the file (0-based), time and columns."""

    number: int
    ts: int
    columns: dict[str, Any]

    def event(self) -> Event:
        """The example as an event, for the record features (absent fields are None)."""
        c = self.columns
        amount = c.get("amount")
        return Event._make((str(c.get("event_id") or f"example-{self.number + 1}"),
                            c.get("user_id"), c.get("event_type"), c.get("item_id"),
                            None if amount is None else float(amount), self.ts, None))

    @property
    def label(self) -> bool | None:
        """The example's label, if the file has one."""
        label = self.columns.get("label")
        return None if label is None else bool(label)


def read_examples(path: Path, key_columns: Collection[str]) -> Iterator[Example]:
    """The examples of ``path`` in ``ts`` order (ties in file order); ``key_columns``: every
    key of the entities the model reads (the file must have ``ts`` and some of them)."""
    columns = _columns(path)
    if "ts" not in columns or not set(key_columns) & set(columns):
        raise UserFacingError(
            f"examples file {path} needs a ts column (epoch ms) and entity key columns "
            f"({', '.join(sorted(key_columns))}); it has {', '.join(columns) or 'no columns'}")
    text = [c for c in columns if c in set(key_columns) | set(_TEXT_COLUMNS)]
    return sorted_by_time(_rows(path, text), _ts)


def _ts(example: Example) -> int:
    return example.ts


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def _columns(path: Path) -> list[str]:
    if not path.is_file():
        raise UserFacingError(f"examples file {path} does not exist")
    try:
        if _is_csv(path):
            with path.open(encoding="utf-8") as file:
                return [c.strip() for c in file.readline().rstrip("\r\n").split(",") if c]
        return list(pq.read_schema(str(path)).names)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise UserFacingError(f"cannot read examples file {path} ({exc}); give Parquet, or a "
                              "CSV (.csv) with a header row") from None


def _batches(path: Path, text: list[str]) -> Iterator[pa.RecordBatch]:
    types: dict[str, pa.DataType] = {c: pa.string() for c in text}
    if _is_csv(path):
        yield from pa_csv.open_csv(str(path), convert_options=pa_csv.ConvertOptions(
            column_types={**types, "ts": pa.int64(), "label": pa.bool_()}))
    else:
        yield from pq.ParquetFile(str(path)).iter_batches(batch_size=8_192)


def _rows(path: Path, text: list[str]) -> Iterator[Example]:
    number = 0
    try:
        for batch in _batches(path, text):
            ts = batch.column(batch.schema.get_field_index("ts"))
            if pa.types.is_timestamp(ts.type):
                ts = pc.cast(pc.cast(ts, pa.timestamp("ms", ts.type.tz), safe=False), pa.int64())
            for row, when in zip(batch.to_pylist(), ts.to_pylist(), strict=True):
                if type(when) is not int:
                    raise UserFacingError(f"examples file {path}, row {number + 1}: ts is "
                                          f"{when!r}; every example needs a ts in epoch ms")
                yield Example(number, when, row)
                number += 1
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UserFacingError(f"examples file {path}: {str(exc).splitlines()[0]}; ts must be "
                              "epoch ms, label true/false") from None
