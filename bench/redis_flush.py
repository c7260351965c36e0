"""The feature job's Redis flush, timed: ``python -m bench.redis_flush`` writes 1,000 users'
rows of the built-in features (:class:`~featurestream.jobs.redis_writer.RedisRowWriter`, one
flush, 100 point-in-time rows beside) to a private redis-server and to a local Redis Cluster of
3 masters and 3 replicas (``testing.redis_cluster``), and prints the median of the rounds.

A small measurement of its own (seconds, no stack): what cluster mode costs on the hot path,
and that single-Redis mode costs what it did."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.udfs.features.shard import CapturedRow
from testing.reader_fixtures import RedisProcess, feature_row
from testing.redis_cluster import redis_cluster

ROWS = 1_000
CAPTURED = 100


def time_flushes(target: RedisTarget, rounds: int) -> float:
    """Median milliseconds of one flush of :data:`ROWS` rows (and :data:`CAPTURED` captured
    rows), each round with newer rows than the last (so every row is written)."""
    writer = RedisRowWriter(target)
    times = []
    for r in range(rounds + 2):  # two warm-up rounds
        for u in range(ROWS):
            writer.add(f"user:user-{u:05d}", {**feature_row(1_000 + r, 1)})
        for e in range(CAPTURED):
            writer.add_captured(CapturedRow(f"user:user-{e:05d}", f"e-{r}-{e}", 999 + r,
                                            feature_row(999 + r, 1)))
        started = time.perf_counter()
        writer.flush()
        times.append(time.perf_counter() - started)
    writer.close()
    return statistics.median(times[2:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisProcess(Path(workdir))
        server.start()
        try:
            single = time_flushes(RedisTarget(server.url, "fs:", 3600, 10 * ROWS), args.rounds)
        finally:
            server.stop()
    print(f"single Redis: {single:.2f} ms per flush of {ROWS:,} rows")
    with redis_cluster() as cluster:
        target = RedisTarget(cluster.url, "fs:", 3600, 10 * ROWS, cluster=True)
        clustered = time_flushes(target, args.rounds)
    print(f"Redis Cluster (3 masters): {clustered:.2f} ms per flush of {ROWS:,} rows")


if __name__ == "__main__":
    main()
