"""``featurestream export scores --out FILE.parquet``: the served scores as training data.

Reads the scores topic from its oldest record up to its end when the export starts
(:mod:`featurestream.kafka_ranges`: so it ends while the scoring job keeps writing), committed
records only, partition after partition, and writes one Parquet row per
score: its metadata (event, model, version, variant, experiment, score, as_of, scored_at,
shadow) and one
float64 column per feature name of any score (sorted by name: the same file whatever order
the partitions are read in), named as the training set names them
(:mod:`udfs.offline.training_set`): the vector each score used, null where a score's model has
no such feature. ``featurestream train --from FILE --labels LABELS`` trains on it.

The feature columns are known only at the end, so rows are written in batches to temporary
Parquet files with the columns seen so far, then copied into the output with the union of all
(bounded memory: one batch at a time).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import KafkaException
from tqdm import tqdm

from featurestream.cli.consume import committed_consumer, topic_partitions, unreachable
from featurestream.errors import UserFacingError
from featurestream.kafka_ranges import PartitionRange, RangeReader, partition_ranges
from featurestream.settings import Settings
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.score_codec import ScoreCodec

BATCH_ROWS = 65_536
# Without a committed record for this long, an open transaction holds the export back.
STALL_S = 120.0
SCORE_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("ts", pa.int64()), ("event_type", pa.string()),
    ("user_id", pa.string()), ("model", pa.string()), ("version", pa.int32()),
    ("variant", pa.string()), ("experiment", pa.string()), ("score", pa.float64()),
    ("as_of", pa.int64()),
    ("scored_at", pa.int64()), ("features_missing", pa.bool_()),
    ("shadow_version", pa.int32()), ("shadow_score", pa.float64()),
])


def _metadata(score: Mapping[str, Any]) -> tuple[Any, ...]:
    """A decoded score's values of :data:`SCORE_SCHEMA`, in its order."""
    shadow = score["shadow"] or {}
    return (score["event_id"], score["ts"], score["event_type"], score["user_id"],
            score["model"], score["version"], score["variant"], score.get("experiment"),
            score["score"], score["as_of"], score["scored_at"], score["features_missing"],
            shadow.get("version"), shadow.get("score"))


class ScoresParquet:
    """Write decoded scores to ``path``: metadata columns, then one column per feature name."""

    def __init__(self, path: Path, batch_rows: int = BATCH_ROWS) -> None:
        self._path = path
        self._batch_rows = batch_rows
        self._parts = tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent)
        self._features: dict[str, None] = {}  # every feature name so far, first seen first
        self._rows: list[tuple[Any, ...]] = []
        self._vectors: list[Mapping[str, float]] = []
        self._files: list[Path] = []
        self.written = 0

    def add(self, score: Mapping[str, Any]) -> None:
        """One decoded score (:meth:`ScoreCodec.decode`)."""
        features: Mapping[str, float] = score["features"]
        for name in features:
            if name not in self._features:
                if name in SCORE_SCHEMA.names:
                    raise UserFacingError(f"feature {name!r} has the name of a score column; "
                                          "rename the feature in the definitions")
                self._features[name] = None
        self._rows.append(_metadata(score))
        self._vectors.append(features)
        if len(self._rows) >= self._batch_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        columns = list(zip(*self._rows, strict=True))
        arrays = [pa.array(column, type=field.type)
                  for column, field in zip(columns, SCORE_SCHEMA, strict=True)]
        arrays += [pa.array([vector.get(name) for vector in self._vectors], type=pa.float64())
                   for name in self._features]
        names = [*SCORE_SCHEMA.names, *self._features]
        part = Path(self._parts.name) / f"{len(self._files):06d}.parquet"
        pq.write_table(pa.Table.from_arrays(arrays, names=names), part)
        self._files.append(part)
        self.written += len(self._rows)
        self._rows, self._vectors = [], []

    def close(self) -> int:
        """Write the output file from the batches, with every feature column; returns rows."""
        try:
            self._flush()
            schema = pa.schema([*SCORE_SCHEMA,
                                *(pa.field(name, pa.float64())
                                  for name in sorted(self._features))])
            with pq.ParquetWriter(str(self._path), schema) as out:
                for part in self._files:
                    table = pq.read_table(part)
                    columns = [table.column(name) if name in table.column_names
                               else pa.nulls(table.num_rows, pa.float64())
                               for name in schema.names]
                    out.write_table(pa.Table.from_arrays(columns, schema=schema))
        finally:
            self._parts.cleanup()
        return self.written

    def __enter__(self) -> ScoresParquet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._parts.cleanup()


def export_scores(settings: Settings, topic: str, out: Path) -> tuple[int, int]:
    """Write ``topic`` (oldest to its end at start, :mod:`featurestream.kafka_ranges`) to
    ``out``, partition after partition; returns the scores written and the records that were
    not decodable scores (left out)."""
    codec = ScoreCodec(registry_for(settings.schema_registry), f"{topic}-value")
    consumer = committed_consumer(settings, "export", {"enable.partition.eof": True})
    undecodable = 0
    try:
        partitions = topic_partitions(consumer, topic)
        if not partitions:
            raise UserFacingError(f"topic {topic!r} does not exist on "
                                  f"{settings.kafka_bootstrap}; `featurestream up` creates the "
                                  "featurestream topics (or pick another with --topic)")
        ranges = partition_ranges(consumer, topic, partitions, timeout_s=5)
        reader = RangeReader(consumer, topic, ranges, STALL_S, _stalled(topic))
        total = sum(r.end - r.start for r in ranges)
        with ScoresParquet(out) as writer, tqdm(total=total, unit="offsets",
                                                desc=f"export {topic}", disable=None) as bar:
            for r in ranges:
                read_to = r.start
                for message in reader.partition(r.partition):
                    try:
                        writer.add(codec.decode(message.value() or b""))
                    except (ValueError, LookupError, EOFError):
                        undecodable += 1
                    offset = message.offset() or 0
                    bar.update(max(0, min(offset + 1, r.end) - read_to))
                    read_to = max(read_to, min(offset + 1, r.end))
                bar.update(r.end - read_to)  # transaction markers, aborted records
    except KafkaException as exc:
        raise unreachable(settings, topic, exc) from None
    finally:
        consumer.close()
    return writer.written, undecodable


def _stalled(topic: str) -> Callable[[PartitionRange], str]:
    def message(waiting: PartitionRange) -> str:
        return (f"no committed record of {topic} partition {waiting.partition} for "
                f"{STALL_S:.0f} s before its end offset {waiting.end}; an open transaction "
                "holds it back (is a producer stuck mid-transaction?): retry when it commits "
                "or aborts")
    return message


def export_command(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: export the scores topic to ``--out``; exit 1 if any record was undecodable."""
    topic = args.topic or settings.scores_topic
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UserFacingError(f"cannot write {out}: {out.parent} is not a folder")
    written, undecodable = export_scores(settings, topic, out)
    print(f"wrote {written:,} scores of {topic!r} to {out}")
    if undecodable:
        print(f"left out {undecodable:,} records that are not scores (schemas/score.avsc)",
              file=sys.stderr)
    return 1 if undecodable else 0
