"""A sharding subtask's event time follows its slowest active partition (a backlog read unevenly
never puts one partition's events behind the watermark of another), gives none while the
subtask starts, and leaves an idle partition out."""

from __future__ import annotations

import pickle

from featurestream.udfs.features.event_time import NO_TIME, PartitionTime
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.features.routing import EventRouter
from featurestream.udfs.wire.frames import encode_source_frame
from tests.harness import EVENTS, PickleDecoder, user_definitions


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def test_the_slowest_active_partition_sets_the_time() -> None:
    clock = Clock()
    time = PartitionTime(idleness_ms=10_000, hold_ms=3_000, clock=clock)
    #   clock:  0s           2s            3s                 14s
    #   p0:     100 ......   300 .......   400                500
    #   p1:     --           50            (read at 2s)       (idle since 2s)
    assert time.update({b"p0": 100}) == NO_TIME, "holding while the partitions are first read"
    clock.now = 2_000
    assert time.update({b"p0": 300, b"p1": 50}) == NO_TIME
    clock.now = 3_000
    assert time.update({b"p0": 400}) == 50, "p1 has read only up to 50"
    clock.now = 14_000
    assert time.update({b"p0": 500}) == 500, "p1 idle for more than 10 s: left out"
    clock.now = 15_000
    assert time.update({b"p1": 60}) == 60, "p1 read again: it counts again"
    assert time.update({}) == 60
    clock.now = 60_000
    assert time.update({}) == 60, "all idle: where they all got to"


def test_no_time_before_any_record_or_during_the_hold() -> None:
    clock = Clock()
    time = PartitionTime(idleness_ms=10_000, hold_ms=3_000, clock=clock)
    assert time.update({}) == NO_TIME
    clock.now = 5_000
    assert time.update({}) == NO_TIME, "nothing read yet"
    assert time.update({b"p0": 7}) == 7


def test_the_router_reports_each_partitions_newest_event_of_a_batch() -> None:
    definitions = user_definitions(("1m",))
    router = EventRouter(compile_plans(definitions), {EVENTS: PickleDecoder()}, 4)

    def frame(partition: int, ts: int) -> bytes:
        record = {"event_id": f"e{ts}", "user_id": "u1", "event_type": "view", "item_id": None,
                  "amount": None, "ts": ts, "context": None}
        return encode_source_frame(EVENTS, partition, ts, 0, pickle.dumps(record))

    router.group_by_shard([frame(0, 1_000), frame(1, 500), frame(0, 900), frame(1, 700)])
    assert sorted(router.partition_newest.values()) == [700, 1_000]
    assert len(router.partition_newest) == 2
    router.group_by_shard([frame(2, 5)])
    assert list(router.partition_newest.values()) == [5], "of the last batch only"
