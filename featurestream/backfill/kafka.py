"""History from a Kafka topic: every partition from its earliest offset (or from a time) to its
end when reading starts (:mod:`featurestream.kafka_ranges`: the end offsets snapshotted then,
and the rest of a broker's last batch past them; a backfill of a live topic terminates).

``--start``/``--end`` select by Kafka record timestamp as ``offsets_for_times`` defines it: each
partition from its first record whose timestamp is at or after ``start`` up to (excluding) its
first record at or after ``end``. ``offsets_for_times`` finds where to start reading; the
records are checked as they come too, so a broker without a time index (tansu answers offset 0
to every time) still gives the right range. The partitions are merged into one deterministic
sequence by record timestamp (ties by partition number), which keeps each partition's own
order -- the order the job's rule counts in -- whatever the timestamps inside a partition do.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator

from confluent_kafka import Consumer, KafkaException, TopicPartition

from featurestream.backfill.records import HistoryRecord, Position
from featurestream.errors import UserFacingError
from featurestream.kafka_ranges import (
    PartitionRange,
    RangeConsumer,
    RangeReader,
    partition_ranges,
)
from featurestream.settings import Settings

_log = logging.getLogger("featurestream.kafka")
_log.addHandler(logging.NullHandler())

_CONSUMER = {"group.id": "featurestream-backfill", "enable.auto.commit": False,
             "enable.partition.eof": True, "fetch.max.bytes": 52_428_800}
_TIMEOUT_S = 10.0
_STALL_S = 60.0  # no record, no end of partition for this long: give up with a message


class TopicHistory:
    """The records of a topic in a time range; :attr:`count` is known before reading."""

    def __init__(self, settings: Settings, topic: str, source: str, start_ms: int | None,
                 end_ms: int | None) -> None:
        self.topic = topic
        self._source = source
        self._bootstrap = settings.kafka_bootstrap
        self._consumer = Consumer(settings.kafka_config({"logger": _log, **_CONSUMER}))
        self._start_ms, self._end_ms = start_ms, end_ms
        try:
            self.ranges = self._ranges(start_ms)
        except BaseException:
            self._consumer.close()
            raise

    @property
    def count(self) -> int:
        """How many offsets the ranges span up to the end offsets at start (transaction
        markers included; an upper bound with ``--end``; records read past those ends, the
        rest of tansu's last batch or records that arrived meanwhile, are not counted)."""
        return sum(r.end - r.start for r in self.ranges)

    def _ranges(self, start_ms: int | None) -> list[PartitionRange]:
        """Each partition's offsets to read: from ``start_ms`` (else its earliest) to its end
        offset now (``--end`` stops earlier, as the records come)."""
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=_TIMEOUT_S)
            found = metadata.topics.get(self.topic)
            if found is None or found.error is not None or not found.partitions:
                raise UserFacingError(f"topic {self.topic!r} does not exist on {self._bootstrap}; "
                                      "check the name after kafka: (or FEATURESTREAM_KAFKA_"
                                      "BOOTSTRAP)")
            ranges = partition_ranges(self._consumer, self.topic, sorted(found.partitions),
                                      _TIMEOUT_S)
            if start_ms is not None and ranges:
                ranges = [PartitionRange(r.partition, max(r.start, at), r.end) for r, at
                          in zip(ranges, self._offsets_at(ranges, start_ms), strict=True)]
        except KafkaException as exc:
            raise UserFacingError(
                f"cannot read topic {self.topic!r} from Kafka at {self._bootstrap} "
                f"({exc.args[0].str()}); start the local stack with `featurestream up` or set "
                "FEATURESTREAM_KAFKA_BOOTSTRAP to your brokers") from None
        return [r for r in ranges if r.start < r.end]

    def _offsets_at(self, ranges: list[PartitionRange], ms: int) -> list[int]:
        """Each partition's first offset with a timestamp at or after ``ms`` (its end offset
        when there is none)."""
        found = self._consumer.offsets_for_times(
            [TopicPartition(self.topic, r.partition, ms) for r in ranges], timeout=_TIMEOUT_S)
        return [tp.offset if tp.offset >= 0 else r.end
                for tp, r in zip(found, ranges, strict=True)]

    def __iter__(self) -> Iterator[HistoryRecord]:
        """The records, partitions merged by record timestamp; closes the consumer at the end."""
        try:
            if self.ranges:
                yield from read_partitions(self._consumer, self.topic, self._source,
                                           self.ranges, self._start_ms, self._end_ms)
        finally:
            self._consumer.close()


def read_partitions(consumer: RangeConsumer, topic: str, source: str,
                    ranges: list[PartitionRange], start_ms: int | None, end_ms: int | None
                    ) -> Iterator[HistoryRecord]:
    """The records of ``ranges`` (each partition from its first record at or after
    ``start_ms`` to before its first at or after ``end_ms``), merged by record timestamp."""
    reader = RangeReader(consumer, topic, ranges, _STALL_S, _stalled(topic))
    return heapq.merge(*(_partition(reader, topic, source, r.partition, start_ms, end_ms)
                         for r in ranges), key=_timestamp_and_partition)


def _stalled(topic: str) -> Callable[[PartitionRange], str]:
    def message(waiting: PartitionRange) -> str:
        return (f"Kafka sent nothing for {_STALL_S:.0f} s while partition {waiting.partition} "
                f"of {topic!r} was not read to its end offset {waiting.end}; check the "
                "brokers, or narrow the range with --end")
    return message


def _partition(reader: RangeReader, topic: str, source: str, number: int,
               start_ms: int | None, end_ms: int | None) -> Iterator[HistoryRecord]:
    """One partition's records from its first at or after ``start_ms`` to before its first at
    or after ``end_ms``."""
    started = start_ms is None
    input_name = f"kafka:{topic}"
    for message in reader.partition(number):
        _, timestamp = message.timestamp()
        if end_ms is not None and timestamp >= end_ms:
            reader.finish(number)
            return
        if not started:
            if start_ms is not None and timestamp < start_ms:
                continue  # before the partition's first record at or after start
            started = True
        yield HistoryRecord(source, message.value() or b"",
                            Position(input_name, number, message.offset() or 0), timestamp)


def _timestamp_and_partition(record: HistoryRecord) -> tuple[int, int]:
    return record.timestamp, record.position.partition or 0
