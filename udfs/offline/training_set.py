"""The training set file: one row per scored event, its label and its point-in-time features.

Format (Parquet; CSV with the same columns is read too): ``event_id`` (string), ``ts`` (int64,
epoch ms), ``event_type`` and ``user_id`` (strings), ``label`` (bool, nullable), then one float64
column per model feature, named exactly as models name them (``amount``, ``purchases_5m``,
``item.views_1h``), null where there is no value -- training applies the model's defaults, as the
scoring job does. The exported scores (``featurestream export scores``) use the same feature
column names and carry no label, so a labels file joined by ``event_id`` completes them.

The writer streams (bounded memory: one row group buffered); the reader loads only the columns
asked for and fails with one line naming what is missing and how to fix it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 65_536
METADATA_COLUMNS = ("event_id", "ts", "event_type", "user_id", "label")
_SHOWN = 8  # missing columns named in an error (the rest counted)
_REQUIRED = ("event_id", "ts")  # without these a row cannot be joined or split in time
_METADATA_TYPES: dict[str, pa.DataType] = {
    "event_id": pa.string(), "ts": pa.int64(), "event_type": pa.string(),
    "user_id": pa.string(), "label": pa.bool_(),
}

FeatureValue = float | int | bool | None


class TrainingSetError(ValueError):
    """A training set or labels file that cannot be used (the message names the fix)."""


def training_set_schema(feature_names: Sequence[str]) -> pa.Schema:
    """The Parquet schema of a training set with these feature columns."""
    clash = sorted(set(feature_names) & set(METADATA_COLUMNS))
    if clash or len(set(feature_names)) != len(feature_names):
        raise ValueError(f"feature names must be unique and not {METADATA_COLUMNS}: "
                         f"{clash or list(feature_names)}")
    return pa.schema([pa.field(n, t) for n, t in _METADATA_TYPES.items()]
                     + [pa.field(n, pa.float64()) for n in feature_names])


def _number(value: FeatureValue) -> float | None:
    """A feature value as the float64 column holds it (NaN is "no value": null)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


class TrainingSetWriter:
    """Append rows to a training set Parquet file, one row group every ``row_group_rows``."""

    def __init__(self, path: str | Path, feature_names: Sequence[str],
                 row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self._names = tuple(feature_names)
        self._known = frozenset(self._names)
        self._schema = training_set_schema(self._names)
        self._row_group_rows = row_group_rows
        self._writer = pq.ParquetWriter(str(path), self._schema)
        self._columns: list[list[object]] = [[] for _ in self._schema]
        self._rows = 0

    def add(self, event_id: str, ts: int, event_type: str, user_id: str, label: bool | None,
            values: Mapping[str, FeatureValue]) -> None:
        """One row; a feature absent from ``values`` (or None, or NaN) is null."""
        if not self._known.issuperset(values):
            unknown = sorted(set(values) - self._known)
            raise ValueError(f"values for features that are not columns: {unknown}")
        row = (event_id, ts, event_type, user_id, label,
               *(_number(values.get(name)) for name in self._names))
        for column, value in zip(self._columns, row, strict=True):
            column.append(value)
        self._rows += 1
        if len(self._columns[0]) >= self._row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._columns[0]:
            return
        arrays = [pa.array(column, type=field.type)
                  for column, field in zip(self._columns, self._schema, strict=True)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self._columns = [[] for _ in self._schema]

    def close(self) -> int:
        """Write what is buffered and close the file; returns the rows written."""
        self._flush()
        self._writer.close()
        return self._rows

    def __enter__(self) -> TrainingSetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class TrainingTable:
    """A training set in memory: row ``i`` is ``event_ids[i]``, ``ts[i]``, ``labels[i]`` (None:
    unknown) and ``matrix[i]`` (one float64 column per feature name, NaN where null)."""

    source: str
    feature_names: tuple[str, ...]
    event_ids: tuple[str, ...]
    ts: np.ndarray
    labels: tuple[bool | None, ...]
    matrix: np.ndarray

    def __len__(self) -> int:
        return len(self.event_ids)

    def with_labels(self, labels: Mapping[str, bool]) -> TrainingTable:
        """The labels this table has, else the ones ``labels`` gives by event id."""
        joined = tuple(own if own is not None else labels.get(event_id)
                       for event_id, own in zip(self.event_ids, self.labels, strict=True))
        return TrainingTable(self.source, self.feature_names, self.event_ids, self.ts, joined,
                             self.matrix)

    def labelled(self) -> TrainingTable:
        """Only the rows with a label, in their order."""
        return self._take([i for i, label in enumerate(self.labels) if label is not None])

    def first_per_event(self) -> TrainingTable:
        """The first row of each event_id, in their order: a score replayed after a failure
        (at least once, or a broker that shows aborted transactions) repeats its event."""
        first: dict[str, int] = {}
        for i, event_id in enumerate(self.event_ids):
            first.setdefault(event_id, i)
        return self if len(first) == len(self) else self._take(list(first.values()))

    def _take(self, keep: list[int]) -> TrainingTable:
        index = np.asarray(keep, dtype=np.int64)
        return TrainingTable(self.source, self.feature_names,
                             tuple(self.event_ids[i] for i in keep), self.ts[index],
                             tuple(self.labels[i] for i in keep), self.matrix[index])


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def _columns_of(path: Path) -> list[str]:
    try:
        if _is_csv(path):
            with path.open(newline="") as file:
                return next(csv.reader(file), [])
        return list(pq.read_schema(str(path)).names)
    except OSError as exc:
        raise TrainingSetError(f"cannot read {path}: {exc}") from None
    except pa.ArrowInvalid as exc:
        raise TrainingSetError(f"{path} is not a Parquet file ({exc}); give a training set "
                               "(.parquet, or .csv with a header row)") from None


def _read(path: Path, columns: Sequence[str]) -> pa.Table:
    types = {c: _METADATA_TYPES.get(c, pa.float64()) for c in columns}
    try:
        if _is_csv(path):
            return pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
                column_types=types, include_columns=list(columns),
                strings_can_be_null=False))
        table = pq.read_table(str(path), columns=list(columns))
        return table.cast(pa.schema([pa.field(c, types[c]) for c in columns]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TrainingSetError(f"{path}: {str(exc).splitlines()[0]}; columns must be "
                               "event_id (string), ts (epoch ms), label (true/false), "
                               "features (numbers)") from None


def read_training_set(path: str | Path, feature_names: Sequence[str]) -> TrainingTable:
    """The rows of a training set (or exported scores) Parquet or CSV file, with these feature
    columns in this order; TrainingSetError names any missing column and the fix."""
    file = Path(path)
    present = set(_columns_of(file))
    missing = [c for c in (*_REQUIRED, *feature_names) if c not in present]
    if missing:
        fix = ("a training set has event_id, ts, label and one column per model feature"
               if set(missing) & set(_REQUIRED) else
               "build the training set with the current definitions (featurestream backfill) "
               "or train with definitions whose model features it has")
        shown = ", ".join(missing[:_SHOWN])
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        raise TrainingSetError(
            f"{file} lacks column{'s' if len(missing) > 1 else ''} {shown}{more}; {fix}")
    wanted = [*_REQUIRED, *(["label"] if "label" in present else []), *feature_names]
    table = _read(file, wanted)
    if table.column("event_id").null_count or table.column("ts").null_count:
        raise TrainingSetError(f"{file}: every row needs an event_id and a ts")
    width = len(feature_names)
    matrix = np.empty((table.num_rows, width), dtype=np.float64)
    for j, name in enumerate(feature_names):
        matrix[:, j] = table.column(name).to_numpy(zero_copy_only=False)
    labels: tuple[bool | None, ...] = (
        tuple(table.column("label").to_pylist()) if "label" in present
        else (None,) * table.num_rows)
    return TrainingTable(
        source=str(file), feature_names=tuple(feature_names),
        event_ids=tuple(table.column("event_id").to_pylist()),
        ts=table.column("ts").to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
        labels=labels, matrix=matrix)


def read_labels(path: str | Path) -> dict[str, bool]:
    """``event_id -> label`` from a CSV (or Parquet) file with columns event_id and label."""
    file = Path(path)
    missing = [c for c in ("event_id", "label") if c not in _columns_of(file)]
    if missing:
        raise TrainingSetError(f"labels file {file} lacks column(s) {', '.join(missing)}; "
                               "give a CSV with a header event_id,label (e.g. `featurestream "
                               "generate --labels FILE`)")
    table = _read(file, ("event_id", "label"))
    return {event_id: bool(label) for event_id, label
            in zip(table.column("event_id").to_pylist(), table.column("label").to_pylist(),
                   strict=True)
            if event_id is not None and label is not None}


class LabelsWriter:
    """Stream an ``event_id,label`` CSV (what :func:`read_labels` reads)."""

    def __init__(self, path: str | Path) -> None:
        self._file = Path(path).open("w", newline="")  # noqa: SIM115 (closed by close())
        self._csv = csv.writer(self._file)
        self._csv.writerow(("event_id", "label"))
        self.rows = 0

    def add(self, event_id: str, label: bool) -> None:
        self._csv.writerow((event_id, "true" if label else "false"))
        self.rows += 1

    def close(self) -> int:
        """Close the file; returns the rows written."""
        self._file.close()
        return self.rows

    def __enter__(self) -> LabelsWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
