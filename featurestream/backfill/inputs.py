"""The backfill's INPUT arguments as one history: ``kafka:TOPIC`` or file paths, read one after
the other in the order given, optionally sorted by event time.

Which source a record feeds: ``--source NAME``; by default, for ``kafka:TOPIC`` the source
reading that topic, for a file the built-in events source of the definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from featurestream.backfill.files import count_of, format_of, read_file
from featurestream.backfill.kafka import TopicHistory
from featurestream.backfill.records import HistoryRecord
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.records import RecordDecoding, is_builtin
from featurestream.udfs.definitions.model import Definitions, Source
from featurestream.udfs.offline.ordering import sorted_by_time

KAFKA_PREFIX = "kafka:"
_UNDECODABLE = -(2**63)  # sorts first; the replay dead-letters it wherever it is


@dataclass(frozen=True)
class InputOptions:
    """The options that say how to read the inputs."""

    source: str | None = None  # --source
    format: str | None = None  # --format
    start_ms: int | None = None  # --start (Kafka only)
    end_ms: int | None = None  # --end (Kafka only)


@dataclass
class History:
    """The records of every input, and how many there are when known (for the progress)."""

    records: Iterator[HistoryRecord]
    count: int | None


def open_inputs(settings: Settings, definitions: Definitions, inputs: Sequence[str],
                options: InputOptions) -> History:
    """The inputs, checked (sources, formats, files, topics), as one history in input order."""
    files = [i for i in inputs if not i.startswith(KAFKA_PREFIX)]
    if files and (options.start_ms is not None or options.end_ms is not None):
        raise UserFacingError("--start and --end select Kafka records by timestamp; files are "
                              f"read whole ({files[0]}): drop them, or read from kafka:TOPIC")
    parts: list[Iterator[HistoryRecord]] = []
    counts: list[int | None] = []
    for spec in inputs:
        if spec.startswith(KAFKA_PREFIX):
            topic = spec.removeprefix(KAFKA_PREFIX)
            history = TopicHistory(settings, topic, _source_of_topic(definitions, topic,
                                                                     options.source).name,
                                   options.start_ms, options.end_ms)
            parts.append(iter(history))
            counts.append(history.count)
        else:
            path = Path(spec)
            fmt = format_of(path, options.format)
            parts.append(read_file(path, _source_of_file(definitions, options.source).name, fmt))
            counts.append(count_of(path, fmt))
    known = [c for c in counts if c is not None]
    return History(chain.from_iterable(parts), sum(known) if len(known) == len(counts) else None)


def _named(definitions: Definitions, name: str) -> Source:
    for source in definitions.sources:
        if source.name == name:
            return source
    raise UserFacingError(f"--source {name!r} is not a source of the definitions (sources: "
                          f"{', '.join(s.name for s in definitions.sources)})")


def _source_of_topic(definitions: Definitions, topic: str, name: str | None) -> Source:
    if name is not None:
        return _named(definitions, name)
    for source in definitions.sources:
        if source.topic == topic:
            return source
    raise UserFacingError(f"no source of the definitions reads topic {topic!r} (sources: "
                          f"{', '.join(f'{s.name} on {s.topic}' for s in definitions.sources)}"
                          "); name the one its records are with --source NAME")


def _source_of_file(definitions: Definitions, name: str | None) -> Source:
    if name is not None:
        return _named(definitions, name)
    for source in definitions.sources:
        if is_builtin(source):
            return source
    raise UserFacingError("the definitions have no built-in events source, the default for "
                          "files; name the source the file's records are with --source NAME "
                          f"(sources: {', '.join(s.name for s in definitions.sources)})")


def event_time_reader(definitions: Definitions, decoders: Mapping[str, RecordDecoding]
                      ) -> Callable[[HistoryRecord], int | None]:
    """A record's event time as the job reads it (decoded by its source's decoder), or None
    when it does not decode."""
    fields = {s.name: s.timestamp for s in definitions.sources}

    def event_time(record: HistoryRecord) -> int | None:
        decoded = decoders[record.source].decode(record.value)
        if not isinstance(decoded, dict):
            return None
        ts = decoded.get(fields[record.source])
        return ts if type(ts) is int else None

    return event_time


def in_time_order(records: Iterator[HistoryRecord],
                  event_time: Callable[[HistoryRecord], int | None], run_size: int,
                  spill_dir: Path | None = None) -> Iterator[HistoryRecord]:
    """``--order time``: the records by event time (ties in input order), spilling sorted runs
    of ``run_size`` records; records that do not decode come first."""
    def key(record: HistoryRecord) -> int:
        ts = event_time(record)
        return _UNDECODABLE if ts is None else ts

    return sorted_by_time(records, key, run_size=run_size, spill_dir=spill_dir)
