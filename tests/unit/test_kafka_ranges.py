"""When a partition is read to its end (:mod:`featurestream.kafka_ranges`), with a fake clock
and a fake consumer that behaves like tansu (end offset = base of the last batch + 1, no
end-of-partition past it) or like Kafka (end-of-partition at the high watermark, records
appended while reading): every record up to the log's end at start is read, exactly once and
in order, and a live topic still ends."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream import kafka_ranges
from featurestream.errors import UserFacingError
from featurestream.kafka_ranges import PartitionEnd, PartitionRange, RangeReader

GRACE, OVERRUN = 3.0, 30.0


def test_an_end_of_partition_at_or_past_the_snapshot_ends_it() -> None:
    end = PartitionEnd(end=10, start=0, now=0.0)
    end.end_of_partition(7)  # a broker may report an end before the snapshot
    assert not end.done(100.0)
    end.end_of_partition(10)
    assert end.done(0.0)


def test_past_the_snapshot_a_quiet_grace_period_ends_it() -> None:
    end = PartitionEnd(end=10, start=0, now=0.0, grace_s=GRACE, overrun_s=OVERRUN)
    end.record(8, now=1.0)
    assert not end.done(60.0)  # short of the snapshot: silence is a stall, not the end
    end.record(9, now=61.0)
    end.record(12, now=62.0)  # the rest of tansu's last batch
    assert not end.done(62.0 + GRACE - 0.1)
    assert end.done(62.0 + GRACE)


def test_past_the_snapshot_a_busy_partition_ends_after_the_overrun() -> None:
    end = PartitionEnd(end=1, start=0, now=0.0, grace_s=GRACE, overrun_s=OVERRUN)
    now, offset = 0.0, 0
    while not end.done(now):
        end.record(offset, now)
        now, offset = now + 1.0, offset + 1
        assert now <= OVERRUN
    assert now == OVERRUN  # reached with the first record, then OVERRUN seconds of records


def test_paused_time_counts_for_neither_clock() -> None:
    end = PartitionEnd(end=5, start=0, now=0.0, grace_s=GRACE, overrun_s=OVERRUN)
    end.record(4, now=0.0)
    end.pause(1.0)
    assert not end.done(1_000.0)
    end.resume(1_000.0)
    assert not end.done(1_000.0 + GRACE - 0.1)
    assert end.done(1_000.0 + GRACE)
    busy = PartitionEnd(end=1, start=0, now=0.0, grace_s=GRACE, overrun_s=OVERRUN)
    busy.record(0, now=0.0)
    busy.record(1, now=OVERRUN - 10)
    busy.pause(OVERRUN - 10)
    busy.resume(500.0)
    busy.record(2, now=509.0)
    assert not busy.done(509.0)
    busy.record(3, now=510.0)
    assert busy.done(510.0)


def test_an_empty_range_or_a_finished_partition_is_done() -> None:
    assert PartitionEnd(end=3, start=3, now=0.0, grace_s=GRACE).done(GRACE)
    end = PartitionEnd(end=3, start=0, now=0.0)
    end.finish()
    assert end.done(0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Eof:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


@dataclass
class Message:
    number: int
    at: int
    eof: bool = False

    def partition(self) -> int:
        return self.number

    def offset(self) -> int:
        return self.at

    def error(self) -> Eof | None:
        return Eof() if self.eof else None


@dataclass
class FakeBroker:
    """Partitions of record batches (sizes). A fetch takes the whole batch at the fetch
    position into the partition's queue, then an end-of-partition if the position is then the
    high watermark (librdkafka's rule); ``consume`` hands out at most ``per_fetch`` queued
    messages of a partition. ``tansu``: the high watermark is the last batch's base + 1;
    Kafka: the log end. ``appends`` batches are added, one a call, while reading (a live
    topic; ``None``: forever)."""

    batches: list[list[int]]
    tansu: bool
    clock: Clock
    appends: int | None = 0
    per_fetch: int = 1_000
    positions: dict[int, int] = field(default_factory=dict)
    queues: dict[int, list[Message]] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)
    eof_at: dict[int, int] = field(default_factory=dict)
    calls: int = 0

    def log_end(self, number: int) -> int:
        return sum(self.batches[number])

    def high_watermark(self, number: int) -> int:
        sizes = self.batches[number]
        if not sizes:
            return 0
        return sum(sizes[:-1]) + 1 if self.tansu else sum(sizes)

    def ranges(self) -> list[PartitionRange]:
        return [PartitionRange(p, 0, self.high_watermark(p))
                for p in range(len(self.batches)) if self.high_watermark(p) > 0]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {tp.partition: tp.offset for tp in partitions}
        self.queues = {tp.partition: [] for tp in partitions}

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def _fetch(self, number: int) -> None:
        at, base = self.positions[number], 0
        for size in self.batches[number]:  # the batch holding the position, if any
            if base + size > at:
                self.queues[number] += [Message(number, o) for o in range(at, base + size)]
                self.positions[number] = at = base + size
                break
            base += size
        high = self.high_watermark(number)
        if at == high and self.eof_at.get(number) != high:
            self.eof_at[number] = high
            self.queues[number].append(Message(number, high, eof=True))

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self.calls += 1
        assert self.calls < 5_000, "the reader keeps polling"
        if self.appends is None or self.appends > 0:
            for sizes in self.batches:
                sizes.append(2)
            if self.appends is not None:
                self.appends -= 1
        out: list[Message] = []
        for number, queue in self.queues.items():
            if number in self.paused:
                continue
            if not queue:
                self._fetch(number)
            out += queue[:self.per_fetch]
            del queue[:self.per_fetch]
        self.clock.now += 0.5 if out else timeout
        return out


def read_all(broker: FakeBroker, clock: Clock) -> list[list[int | None]]:
    """Each partition's offsets read, partition after partition (as export reads)."""
    reader = RangeReader(broker, "t", broker.ranges(), stall_s=60.0,  # type: ignore[arg-type]
                         stalled=lambda r: f"stalled at {r}", grace_s=GRACE,
                         overrun_s=OVERRUN, clock=clock)
    got = {r.partition: [m.offset() for m in reader.partition(r.partition)]
           for r in broker.ranges()}
    return [got.get(p, []) for p in range(len(broker.batches))]


BATCHES = st.lists(st.lists(st.integers(1, 5), max_size=6), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(batches=BATCHES, tansu=st.booleans(), per_fetch=st.integers(1, 6))
def test_every_record_up_to_the_log_end_at_start_is_read(batches: list[list[int]],
                                                         tansu: bool, per_fetch: int) -> None:
    clock = Clock()
    broker = FakeBroker(batches, tansu, clock, per_fetch=per_fetch)
    ends = [broker.log_end(p) for p in range(len(batches))]
    assert read_all(broker, clock) == [list(range(end)) for end in ends]


@settings(max_examples=100, deadline=None)
@given(batches=BATCHES, tansu=st.booleans(), appends=st.integers(1, 20) | st.none(),
       per_fetch=st.integers(1, 6))
def test_a_live_topic_ends_with_a_prefix_of_its_log(batches: list[list[int]], tansu: bool,
                                                    appends: int | None, per_fetch: int) -> None:
    clock = Clock()
    broker = FakeBroker(batches, tansu, clock, appends, per_fetch)
    ends = [broker.log_end(p) for p in range(len(batches))]
    got = read_all(broker, clock)
    for offsets, end in zip(got, ends, strict=True):
        assert offsets == list(range(len(offsets))) and len(offsets) >= end


def test_a_partition_far_ahead_is_paused_without_ending_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition 1 reaches its snapshot and fills its buffer (paused) while partition 0 is read
    first, as export does, for longer than the grace period; being paused is not silence: the
    rest of its last batch is read after it is resumed."""
    monkeypatch.setattr(kafka_ranges, "BUFFERED", 3)
    clock = Clock()
    broker = FakeBroker([[2] * 20, [1, 9]], tansu=True, clock=clock, per_fetch=2)
    assert read_all(broker, clock) == [list(range(40)), list(range(10))]
    assert clock.now > GRACE * 2


def test_silence_short_of_the_snapshot_is_one_clear_error() -> None:
    clock = Clock()
    broker = FakeBroker([[3, 3]], tansu=False, clock=clock)
    reader = RangeReader(broker, "t", [PartitionRange(0, 0, 10)], stall_s=5.0,  # type: ignore[arg-type]
                         stalled=lambda r: f"partition {r.partition} stalled before {r.end}",
                         clock=clock)
    with pytest.raises(UserFacingError, match="partition 0 stalled before 10"):
        list(reader.partition(0))
