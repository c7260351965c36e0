"""Training set files: what the writer writes the reader reads back (Parquet, and CSV with the
same columns), labels join by event_id with the file's own winning, missing columns are one
clear error, and exported scores read as a training set without labels."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.cli.export import SCORE_SCHEMA, ScoresParquet
from featurestream.udfs.offline.training_set import (
    LabelsWriter,
    TrainingSetError,
    TrainingSetWriter,
    read_labels,
    read_training_set,
)

NAMES = ("amount", "hour_of_day", "purchases_5m", "item.views_1h")
VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40),
                  st.floats(allow_infinity=False, width=64))
ROW = st.fixed_dictionaries(
    {"event_id": st.text(min_size=1, max_size=8), "ts": st.integers(0, 2**62),
     "event_type": st.sampled_from(["view", "purchase"]), "user_id": st.text(max_size=5),
     "label": st.one_of(st.none(), st.booleans())},
    optional={name: VALUE for name in NAMES})


def expected_value(row: dict[str, Any], name: str) -> float:
    """The oracle: absent, None and NaN read back as NaN; numbers and bools as floats."""
    value = row.get(name)
    if value is None:
        return math.nan
    return math.nan if isinstance(value, float) and math.isnan(value) else float(value)


def assert_reads_back(path: Path, rows: list[dict[str, Any]], names: tuple[str, ...]) -> None:
    table = read_training_set(path, names)
    assert table.event_ids == tuple(r["event_id"] for r in rows)
    assert table.ts.tolist() == [r["ts"] for r in rows]
    assert table.labels == tuple(r["label"] for r in rows)
    expected = np.array([[expected_value(r, n) for n in names] for r in rows],
                        dtype=np.float64).reshape(len(rows), len(names))
    np.testing.assert_array_equal(table.matrix, expected)  # NaN equals NaN here


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(ROW, max_size=12), group=st.integers(1, 5))
def test_what_the_writer_writes_reads_back(tmp_path_factory: pytest.TempPathFactory,
                                           rows: list[dict[str, Any]], group: int) -> None:
    path = tmp_path_factory.mktemp("set") / "train.parquet"
    writer = TrainingSetWriter(path, NAMES, row_group_rows=group)
    for r in rows:
        writer.add(r["event_id"], r["ts"], r["event_type"], r["user_id"], r["label"],
                   {n: r[n] for n in NAMES if n in r})
    assert writer.close() == len(rows)
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-len(rows) // group)
    assert_reads_back(path, rows, NAMES)
    assert_reads_back(path, rows, tuple(reversed(NAMES[1:])))  # any subset, any order


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(ROW, max_size=8))
def test_a_csv_with_the_same_columns_reads_the_same(tmp_path_factory: pytest.TempPathFactory,
                                                    rows: list[dict[str, Any]]) -> None:
    rows = [{**r, "event_id": f"e{i}"} for i, r in enumerate(rows)]  # CSV-safe ids
    path = tmp_path_factory.mktemp("set") / "train.csv"
    with path.open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["event_id", "ts", "label", *NAMES])
        for r in rows:
            cells = [None if r["label"] is None else str(r["label"]).lower(),
                     *(expected_value(r, n) for n in NAMES)]
            out.writerow([r["event_id"], r["ts"],
                          *("" if c is None or c != c else repr(c) if isinstance(c, float)
                            else c for c in cells)])
    assert_reads_back(path, rows, NAMES)


def write_set(path: Path, labels: list[bool | None]) -> None:
    with TrainingSetWriter(path, ("amount",)) as writer:
        for i, label in enumerate(labels):
            writer.add(f"e{i}", 1_000 + i, "purchase", "u", label, {"amount": float(i)})


def test_labels_join_by_event_id_and_the_files_own_win(tmp_path: Path) -> None:
    write_set(tmp_path / "set.parquet", [True, None, None, False])
    with LabelsWriter(tmp_path / "labels.csv") as labels:
        labels.add("e0", False)  # the file's own label wins
        labels.add("e1", True)
        labels.add("e9", True)  # no such row: ignored
    table = read_training_set(tmp_path / "set.parquet", ("amount",))
    joined = table.with_labels(read_labels(tmp_path / "labels.csv"))
    assert joined.labels == (True, True, None, False)
    kept = joined.labelled()
    assert kept.event_ids == ("e0", "e1", "e3")
    assert kept.ts.tolist() == [1_000, 1_001, 1_003]
    assert kept.matrix[:, 0].tolist() == [0.0, 1.0, 3.0]


def test_the_first_row_of_each_event_is_kept(tmp_path: Path) -> None:
    with TrainingSetWriter(tmp_path / "set.parquet", ("amount",)) as writer:
        for i, event_id in enumerate(["a", "b", "a", "c", "b"]):
            writer.add(event_id, i, "purchase", "u", None, {"amount": float(i)})
    table = read_training_set(tmp_path / "set.parquet", ("amount",)).first_per_event()
    assert table.event_ids == ("a", "b", "c")
    assert table.matrix[:, 0].tolist() == table.ts.tolist() == [0, 1, 3]


def test_missing_columns_are_named_with_the_fix(tmp_path: Path) -> None:
    write_set(tmp_path / "set.parquet", [True])
    with pytest.raises(TrainingSetError) as error:
        read_training_set(tmp_path / "set.parquet", ("amount", "views_1h", "item.views_1h"))
    message = str(error.value)
    assert "lacks columns views_1h, item.views_1h;" in message and "\n" not in message
    assert "definitions" in message
    (tmp_path / "bad.csv").write_text("id,label\ne1,true\n")
    with pytest.raises(TrainingSetError, match="lacks columns event_id, ts; a training set has"):
        read_training_set(tmp_path / "bad.csv", ())
    with pytest.raises(TrainingSetError, match=r"lacks column.* event_id.*event_id,label"):
        read_labels(tmp_path / "bad.csv")


def test_bad_values_and_files_are_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("event_id,ts,amount\ne1,soon,1\n")
    with pytest.raises(TrainingSetError, match=r"bad.csv: .*ts") as error:
        read_training_set(tmp_path / "bad.csv", ("amount",))
    assert "\n" not in str(error.value)
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(TrainingSetError, match="not a Parquet file"):
        read_training_set(tmp_path / "text.parquet", ())
    with pytest.raises(TrainingSetError, match="cannot read"):
        read_training_set(tmp_path / "absent.parquet", ())


def score(event_id: str, model: str, features: dict[str, float]) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": "u1", "event_type": "purchase", "ts": 5,
            "model": model, "version": 2, "variant": "v2", "score": 0.25,
            "features": features, "features_missing": False, "as_of": 4, "scored_at": 9,
            "shadow": {"version": 3, "score": None} if model == "b" else None}


def test_exported_scores_read_as_a_training_set_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "scores.parquet"
    with ScoresParquet(path, batch_rows=2) as out:  # batches with different columns
        out.add(score("s1", "a", {"amount": 1.0, "views_1h": 2.0}))
        out.add(score("s2", "a", {"amount": 3.0, "views_1h": 0.0}))
        out.add(score("s3", "b", {"amount": 5.0, "item.views_1h": 7.0}))
    assert out.written == 3
    exported = pq.read_table(path)
    assert exported.column_names == [*SCORE_SCHEMA.names, "amount", "item.views_1h", "views_1h"]
    assert exported.column("shadow_version").to_pylist() == [None, None, 3]
    assert exported.column("variant").to_pylist() == ["v2"] * 3
    table = read_training_set(path, ("item.views_1h", "amount"))
    assert table.labels == (None, None, None)
    np.testing.assert_array_equal(table.matrix, [[np.nan, 1.0], [np.nan, 3.0], [7.0, 5.0]])
