"""How far event time has got on the partitions one sharding subtask reads: the time its shard
records carry, from which the job's watermark follows (``ShardRecords.java``: bounded
out-of-orderness over the records' times).

A Kafka source subtask reads several partitions, and in a backlog it reads them unevenly: a
fetch brings hundreds of one partition's records before the next partition's. Were a record's
time its newest event's, the watermark would follow the partition read furthest, the other
partitions' events would arrive behind it, and the expiries it fires would age their entities'
windows past those events' time -- rows captured for scored events would then depend on how the
fetches fell (:mod:`udfs.features.point_in_time`). So a record's time is the *slowest* partition's
newest event time, as Flink's per-split watermarks do:

- a partition counts once a record of it was read, and stops counting after ``idleness_ms``
  (wall clock) without one, so an idle partition does not hold event time back; when every
  partition is idle, the time stays where they all got to;
- for the first ``hold_ms`` of the subtask no time is given at all (:data:`NO_TIME`, which never
  moves the watermark): every partition with a backlog is read before any of them counts as
  the slowest.

The sharding stage asks for the time with every batch, and with every checkpoint marker, which
carries it to the shards too: so event time catches up after the hold even when no record comes
any more (a backlog read within the hold), and the job ends where a replay of the log ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

NO_TIME = -(2**63)  # a record time that never moves the watermark


def monotonic_ms() -> int:
    """A monotonic wall clock, ms."""
    return time.monotonic_ns() // 1_000_000


class PartitionTime:
    """The newest event time of each partition read, and the slowest active one."""

    def __init__(self, idleness_ms: int, hold_ms: int,
                 clock: Callable[[], int] = monotonic_ms) -> None:
        self._idleness_ms = idleness_ms
        self._hold_ms = hold_ms
        self._clock = clock
        self._newest: dict[bytes, int] = {}
        self._seen: dict[bytes, int] = {}  # partition -> when last read (clock ms)
        self._started: int | None = None

    def update(self, newest: Mapping[bytes, int]) -> int:
        """Take a batch's newest event time per partition; the time of its records."""
        now = self._clock()
        if self._started is None:
            self._started = now
        for partition, ts in newest.items():
            self._seen[partition] = now
            if ts > self._newest.get(partition, NO_TIME):
                self._newest[partition] = ts
        if now - self._started < self._hold_ms:
            return NO_TIME
        if not self._newest:
            return NO_TIME
        cutoff = now - self._idleness_ms
        active = [self._newest[p] for p, seen in self._seen.items() if seen >= cutoff]
        return min(active) if active else min(self._newest.values())
