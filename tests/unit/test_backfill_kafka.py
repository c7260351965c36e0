"""Reading a topic for a backfill, against a fake consumer: partitions merged by record
timestamp (ties by partition) with each partition's order kept, ``--start``/``--end`` as
``offsets_for_times`` defines them, an early end-of-partition (tansu) not taken for the end,
partitions paused while far ahead -- checked against a brute-force merge."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream import kafka_ranges
from featurestream.backfill.kafka import PartitionRange, read_partitions
from featurestream.backfill.records import Position


@dataclass
class FakeError:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF

    def str(self) -> str:
        return "end of partition"


@dataclass
class FakeMessage:
    number: int
    at: int | None
    ts: int = 0
    eof: bool = False

    def partition(self) -> int:
        return self.number

    def offset(self) -> int | None:
        return self.at

    def error(self) -> FakeError | None:
        return FakeError() if self.eof else None

    def timestamp(self) -> tuple[int, int]:
        return 1, self.ts

    def value(self) -> bytes:
        return f"{self.number}@{self.at}".encode()


@dataclass
class FakeConsumer:
    """Serves a few records per partition per call; an end of partition both at the log's
    end and, like tansu, now and then before it."""

    logs: list[list[int]]
    early_eof: bool
    positions: dict[int, int] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)
    calls: int = 0
    ever_paused: bool = False

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {tp.partition: tp.offset for tp in partitions}

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}
        self.ever_paused = True

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.calls += 1
        assert self.calls < 10_000, "the reader keeps polling"
        out: list[FakeMessage] = []
        for number, at in self.positions.items():
            if number in self.paused:
                continue
            log = self.logs[number]
            if self.early_eof and self.calls % 3 == 0:
                out.append(FakeMessage(number, at, eof=True))
                continue
            for offset in range(at, min(at + 2, len(log))):
                out.append(FakeMessage(number, offset, log[offset]))
            self.positions[number] = min(at + 2, len(log))
            if self.positions[number] == len(log):
                out.append(FakeMessage(number, len(log), eof=True))
        return out


def brute_force(logs: list[list[int]], start: int | None, end: int | None
                ) -> list[tuple[int, int]]:
    """(partition, offset) in merge order: the partition whose next record has the smallest
    (timestamp, partition), repeatedly."""
    parts = []
    for number, log in enumerate(logs):
        records = list(enumerate(log))
        if start is not None:
            first = next((i for i, (_, ts) in enumerate(records) if ts >= start), len(records))
            records = records[first:]
        if end is not None:
            stop = next((i for i, (_, ts) in enumerate(records) if ts >= end), len(records))
            records = records[:stop]
        parts.append([(number, offset, ts) for offset, ts in records])
    merged = []
    while any(parts):
        pick = min((i for i, part in enumerate(parts) if part),
                   key=lambda i: (parts[i][0][2], i))
        merged.append(parts[pick].pop(0)[:2])
    return merged


TIMES = st.integers(0, 12)


@settings(max_examples=150, deadline=None)
@given(logs=st.lists(st.lists(TIMES, max_size=12), min_size=1, max_size=4),
       start=st.none() | TIMES, end=st.none() | TIMES, early_eof=st.booleans())
def test_partitions_merge_like_the_brute_force(logs: list[list[int]], start: int | None,
                                               end: int | None, early_eof: bool) -> None:
    consumer = FakeConsumer(logs, early_eof)
    ranges = [PartitionRange(p, 0, len(log)) for p, log in enumerate(logs) if log]
    records = list(read_partitions(consumer, "t", "events", ranges, start, end))  # type: ignore[arg-type]
    got = [(r.position.partition, r.position.offset) for r in records]
    assert got == brute_force(logs, start, end)
    for record, (p, o) in zip(records, got, strict=True):
        assert record.source == "events" and record.value == f"{p}@{o}".encode()
        assert record.position == Position("kafka:t", p, o)


def test_a_partition_far_ahead_is_paused_and_resumed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_ranges, "BUFFERED", 2)
    logs = [list(range(0, 40)), list(range(100, 140))]  # partition 1 waits for partition 0
    consumer = FakeConsumer(logs, early_eof=False)
    ranges = [PartitionRange(p, 0, 40) for p in (0, 1)]
    records = list(read_partitions(consumer, "t", "events", ranges, None, None))  # type: ignore[arg-type]
    assert [r.timestamp for r in records] == logs[0] + logs[1]
    assert consumer.ever_paused
