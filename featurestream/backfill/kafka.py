"""History from a Kafka topic: every partition from its earliest offset (or from a time), up to
the end offsets snapshotted when reading starts (so a backfill of a live topic terminates).

``--start``/``--end`` select by Kafka record timestamp as ``offsets_for_times`` defines it: each
partition from its first record whose timestamp is at or after ``start`` up to (excluding) its
first record at or after ``end``. ``offsets_for_times`` finds where to start reading; the
records are checked as they come too, so a broker without a time index (tansu answers offset 0
to every time) still gives the right range. The partitions are merged into one deterministic
sequence by record timestamp (ties by partition number), which keeps each partition's own
order -- the order the job's rule counts in -- whatever the timestamps inside a partition do.
A partition whose buffer runs far ahead of the merge is paused, so memory stays bounded.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from featurestream.backfill.records import HistoryRecord, Position
from featurestream.errors import UserFacingError
from featurestream.settings import Settings

_log = logging.getLogger("featurestream.kafka")
_log.addHandler(logging.NullHandler())

_CONSUMER = {"group.id": "featurestream-backfill", "enable.auto.commit": False,
             "enable.partition.eof": True, "fetch.max.bytes": 52_428_800}
_TIMEOUT_S = 10.0
_STALL_S = 60.0  # no record, no end of partition for this long: give up with a message
_BUFFERED = 50_000  # records buffered per partition before it is paused


@dataclass(frozen=True)
class PartitionRange:
    """The offsets of one partition to read: ``start`` up to ``end`` (excluded)."""

    partition: int
    start: int
    end: int


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
        """How many records the ranges span (transaction markers included; an upper bound
        with ``--end``)."""
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
            partitions = sorted(found.partitions)
            ends = [self._consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                         timeout=_TIMEOUT_S) for p in partitions]
            starts = [low for low, _ in ends]
            highs = [high for _, high in ends]
            if start_ms is not None:
                starts = [max(low, at) for low, at
                          in zip(starts, self._offsets_at(partitions, start_ms, highs),
                                 strict=True)]
        except KafkaException as exc:
            raise UserFacingError(
                f"cannot read topic {self.topic!r} from Kafka at {self._bootstrap} "
                f"({exc.args[0].str()}); start the local stack with `featurestream up` or set "
                "FEATURESTREAM_KAFKA_BOOTSTRAP to your brokers") from None
        return [PartitionRange(p, s, e) for p, s, e in zip(partitions, starts, highs, strict=True)
                if s < e]

    def _offsets_at(self, partitions: list[int], ms: int, highs: list[int]) -> list[int]:
        """Each partition's first offset with a timestamp at or after ``ms`` (its end offset
        when there is none)."""
        found = self._consumer.offsets_for_times(
            [TopicPartition(self.topic, p, ms) for p in partitions], timeout=_TIMEOUT_S)
        return [tp.offset if tp.offset >= 0 else high
                for tp, high in zip(found, highs, strict=True)]

    def __iter__(self) -> Iterator[HistoryRecord]:
        """The records, partitions merged by record timestamp; closes the consumer at the end."""
        try:
            if self.ranges:
                yield from read_partitions(self._consumer, self.topic, self._source,
                                           self.ranges, self._start_ms, self._end_ms)
        finally:
            self._consumer.close()


def read_partitions(consumer: Consumer, topic: str, source: str, ranges: list[PartitionRange],
                    start_ms: int | None, end_ms: int | None) -> Iterator[HistoryRecord]:
    """The records of ``ranges`` (each partition from its first record at or after
    ``start_ms`` to before its first at or after ``end_ms``), merged by record timestamp."""
    reader = _PartitionReader(consumer, topic, source, ranges, start_ms, end_ms)
    return heapq.merge(*(reader.partition(r.partition) for r in ranges),
                       key=_timestamp_and_partition)


def _timestamp_and_partition(record: HistoryRecord) -> tuple[int, int]:
    return record.timestamp, record.position.partition or 0


class _PartitionReader:
    """One consumer over every partition, with a buffer per partition for the merge."""

    def __init__(self, consumer: Consumer, topic: str, source: str,
                 ranges: list[PartitionRange], start_ms: int | None, end_ms: int | None) -> None:
        self._consumer = consumer
        self._start_ms = start_ms
        self._end_ms = end_ms
        # Partitions that reached a record at or after start_ms (all of them without one).
        self._started = {r.partition for r in ranges} if start_ms is None else set()
        self._topic = topic
        self._source = source
        self._input = f"kafka:{topic}"
        self._ends = {r.partition: r.end for r in ranges}
        self._buffers: dict[int, deque[HistoryRecord]] = {r.partition: deque() for r in ranges}
        self._done: set[int] = set()
        self._paused: set[int] = set()
        consumer.assign([TopicPartition(topic, r.partition, r.start) for r in ranges])

    def partition(self, number: int) -> Iterator[HistoryRecord]:
        """The partition's records in offset order (the merge pulls them)."""
        buffer = self._buffers[number]
        while True:
            while not buffer:
                if number in self._done:
                    return
                if number in self._paused:
                    self._consumer.resume([TopicPartition(self._topic, number)])
                    self._paused.discard(number)
                self._poll(number)
            yield buffer.popleft()

    def _poll(self, waiting: int) -> None:
        """Fetch what has arrived into the buffers; fail after a long silence."""
        silent_since = time.monotonic()
        while not self._buffers[waiting] and waiting not in self._done:
            messages = self._consumer.consume(10_000, timeout=1.0)
            for message in messages:
                self._take(message)
            if messages:
                silent_since = time.monotonic()
            elif time.monotonic() - silent_since > _STALL_S:
                raise UserFacingError(
                    f"Kafka sent nothing for {_STALL_S:.0f} s while partition {waiting} of "
                    f"{self._topic!r} was not read to its end offset {self._ends[waiting]}; "
                    "check the brokers, or narrow the range with --end")
        for number, buffer in self._buffers.items():
            if len(buffer) >= _BUFFERED and number not in self._paused:
                self._consumer.pause([TopicPartition(self._topic, number)])
                self._paused.add(number)

    def _take(self, message: Message) -> None:
        number = message.partition()
        if number is None or number not in self._ends:
            return
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                # Its offset is where the partition ends for now, which a broker may report
                # before the end offset taken at start; past transaction markers it is that.
                if (message.offset() or 0) >= self._ends[number]:
                    self._finish(number)
                return
            raise UserFacingError(f"reading {self._topic!r} partition {number} failed "
                                  f"({error.str()}); check the brokers and the topic's ACLs")
        offset = message.offset() or 0
        end = self._ends[number]
        if number in self._done or offset >= end:
            self._finish(number)
            return
        _, timestamp = message.timestamp()
        if self._end_ms is not None and timestamp >= self._end_ms:
            self._finish(number)
            return
        if number not in self._started:
            if self._start_ms is not None and timestamp < self._start_ms:
                return  # before the partition's first record at or after start
            self._started.add(number)
        self._buffers[number].append(HistoryRecord(
            self._source, message.value() or b"", Position(self._input, number, offset),
            timestamp))
        if offset >= end - 1:
            self._finish(number)

    def _finish(self, number: int) -> None:
        """The partition is read to its end offset: stop fetching it."""
        if number not in self._done:
            self._done.add(number)
            self._consumer.pause([TopicPartition(self._topic, number)])
