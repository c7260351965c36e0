"""Reading each partition of a topic from a start offset to its end as it was when reading
started -- one reader for backfill (and verify, train --history) and ``export scores``.

The end offset snapshotted at start (the high watermark) is not a safe place to stop: tansu,
the local broker, answers the base offset of the partition's last record batch + 1, not the
log end, so stopping there loses the rest of the last batch. So a partition is read to its
snapshot and also takes every record the consumer delivers past it until the consumer reports
the partition's end (PARTITION_EOF) at or past the snapshot. Kafka never delivers a record
past the high watermark, so there this is the snapshot plus what arrived meanwhile, ended by
the first end-of-partition. When no end-of-partition comes (tansu reports it only where the
fetch position equals its short high watermark), a partition that reached its snapshot is done
after :data:`GRACE_S` without a record, or after :data:`OVERRUN_S` of fetching past the
snapshot however busy the topic is: a read of a live topic always ends.

A partition whose buffer runs far ahead of its reader (a merge waits for another partition) is
paused, so memory stays bounded; its clocks stop while it is paused (it delivers nothing then,
which is not the end).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from featurestream.errors import UserFacingError

GRACE_S = 3.0  # past the snapshot, this long without a record ends a partition
OVERRUN_S = 30.0  # past the snapshot, this long fetching ends a partition however busy
BUFFERED = 50_000  # records buffered per partition before it is paused


@dataclass(frozen=True)
class PartitionRange:
    """The offsets of one partition to read: ``start`` up to at least ``end`` (the end offset
    when reading started; records past it are read too, see the module)."""

    partition: int
    start: int
    end: int


class PartitionEnd:
    """When one partition is read to its end (the pure part of the reader: times are given).

    Done at an end-of-partition at or past the snapshot ``end``; or, once the next offset to
    read is at or past ``end``, after ``grace_s`` of fetching without a record or ``overrun_s``
    of fetching in all. Time spent paused counts for neither.
    """

    def __init__(self, end: int, start: int, now: float, grace_s: float = GRACE_S,
                 overrun_s: float = OVERRUN_S) -> None:
        self.end = end
        self.next_offset = start
        self._grace_s, self._overrun_s = grace_s, overrun_s
        self._ended = False  # an end-of-partition at or past the snapshot, or finished
        self._paused = False
        self._quiet_from = now  # last record, resume, or reaching the snapshot
        self._fetched_past_s = 0.0  # fetching past the snapshot, before the current stretch
        self._past_from: float | None = now if start >= end else None

    @property
    def reached(self) -> bool:
        """Read up to the snapshot (records past it may still come)."""
        return self.next_offset >= self.end

    def record(self, offset: int, now: float) -> None:
        """The consumer delivered the record at ``offset``."""
        was_reached = self.reached
        self.next_offset = max(self.next_offset, offset + 1)
        self._quiet_from = now
        if self.reached and not was_reached and not self._paused:
            self._past_from = now

    def end_of_partition(self, offset: int) -> None:
        """The consumer reported the partition's end at ``offset`` (a broker may report an end
        before the snapshot: that one is not the end)."""
        if offset >= self.end:
            self._ended = True

    def finish(self) -> None:
        """Done whatever the offsets say (``--end`` reached)."""
        self._ended = True

    def pause(self, now: float) -> None:
        if not self._paused and self._past_from is not None:
            self._fetched_past_s += now - self._past_from
            self._past_from = None
        self._paused = True

    def resume(self, now: float) -> None:
        if self._paused:
            self._paused = False
            self._quiet_from = now
            if self.reached:
                self._past_from = now

    def done(self, now: float) -> bool:
        if self._ended:
            return True
        if self._paused or not self.reached or self._past_from is None:
            return False
        return (now - self._quiet_from >= self._grace_s
                or self._fetched_past_s + now - self._past_from >= self._overrun_s)


class RangeConsumer(Protocol):
    """What the reader uses of confluent-kafka's ``Consumer``."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def consume(self, num_messages: int, timeout: float) -> list[Message]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...


class RangeReader:
    """One consumer over the ranges' partitions, a buffer per partition: :meth:`partition`
    gives one partition's records in offset order, so callers merge them as they need.

    ``stalled(range)`` is the one-line error when nothing at all comes for ``stall_s`` while a
    partition is short of its snapshot.
    """

    def __init__(self, consumer: RangeConsumer, topic: str, ranges: list[PartitionRange],
                 stall_s: float, stalled: Callable[[PartitionRange], str],
                 grace_s: float = GRACE_S, overrun_s: float = OVERRUN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._consumer = consumer
        self._topic = topic
        self._ranges = {r.partition: r for r in ranges}
        self._stall_s, self._stalled = stall_s, stalled
        self._clock = clock
        now = clock()
        self._ends = {r.partition: PartitionEnd(r.end, r.start, now, grace_s, overrun_s)
                      for r in ranges}
        self._buffers: dict[int, deque[Message]] = {r.partition: deque() for r in ranges}
        self._done: set[int] = set()
        self._paused: set[int] = set()
        consumer.assign([TopicPartition(topic, r.partition, r.start) for r in ranges])

    def partition(self, number: int) -> Iterator[Message]:
        """The partition's records in offset order, up to its end (see the module)."""
        buffer = self._buffers[number]
        while True:
            while not buffer:
                if number in self._done:
                    return
                if number in self._paused:
                    self._set_paused(number, False)
                self._poll(number)
            yield buffer.popleft()

    def finish(self, number: int) -> None:
        """Read no more of the partition (the caller has what it wants of it)."""
        self._ends[number].finish()
        self._buffers[number].clear()
        self._check_done(self._clock())

    def _poll(self, waiting: int) -> None:
        """Fetch what has arrived into the buffers; fail after a long silence."""
        silent_since = self._clock()
        while not self._buffers[waiting] and waiting not in self._done:
            messages = self._consumer.consume(10_000, timeout=min(1.0, self._stall_s))
            now = self._clock()
            for message in messages:
                self._take(message, now)
            self._check_done(now)
            if messages:
                silent_since = now
            elif now - silent_since > self._stall_s and not self._ends[waiting].reached:
                raise UserFacingError(self._stalled(self._ranges[waiting]))
        for number, buffer in self._buffers.items():
            if len(buffer) >= BUFFERED and number not in self._paused | self._done:
                self._set_paused(number, True)

    def _take(self, message: Message, now: float) -> None:
        number = message.partition()
        if number is None or number not in self._ends or number in self._done:
            return
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                raise UserFacingError(f"reading {self._topic!r} partition {number} failed "
                                      f"({error.str()}); check the brokers and the topic's ACLs")
            self._ends[number].end_of_partition(message.offset() or 0)
            return
        self._ends[number].record(message.offset() or 0, now)
        self._buffers[number].append(message)

    def _check_done(self, now: float) -> None:
        """Stop fetching the partitions that are read to their end."""
        for number, end in self._ends.items():
            if number not in self._done and end.done(now):
                self._done.add(number)
                self._consumer.pause([TopicPartition(self._topic, number)])

    def _set_paused(self, number: int, paused: bool) -> None:
        tp = [TopicPartition(self._topic, number)]
        if paused:
            self._consumer.pause(tp)
            self._paused.add(number)
            self._ends[number].pause(self._clock())
        else:
            self._consumer.resume(tp)
            self._paused.discard(number)
            self._ends[number].resume(self._clock())


def partition_ranges(consumer: Consumer, topic: str, partitions: list[int],
                     timeout_s: float) -> list[PartitionRange]:
    """Each partition from its earliest offset to its end offset now; empty ones left out."""
    ranges = []
    for number in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, number),
                                                   timeout=timeout_s)
        if high > low:
            ranges.append(PartitionRange(number, low, high))
    return ranges
