"""The reader's batch read on Redis Cluster against one Redis: ``python -m bench.reader_cluster``
(~40 s; run it under the stack lock).

A private redis-server and a private 3+3 cluster (``testing.redis_cluster``), each seeded with
the same 10,000 feature rows in the jobs' layout (hash-tagged keys on the cluster). Measured on
uvloop, as the reader runs: one pipelined batch of 100 HGETALLs (``POST /v1/features/batch``)
by :class:`~featurestream.serving.redis_client.RedisClient` on the single Redis,
:class:`~featurestream.serving.redis_cluster_client.ClusterClient` on the cluster (the batch
split over the three masters, sent in parallel), and redis-py's asyncio ``RedisCluster``
pipeline on the cluster (the library alternative). Per client: the latency of one caller's
batches (p50, p99) and, with 8 concurrent callers, keys/s and the client's CPU per key.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio.cluster
import uvloop

from bench.redis_client import PREFIX, USERS, Workload, measure
from featurestream.serving.redis_client import RedisClient, parse_redis_url
from featurestream.serving.redis_cluster_client import ClusterClient
from featurestream.udfs.store.redis_layout import user_key
from testing.reader_fixtures import RedisProcess, feature_row, seed_rows
from testing.redis_cluster import redis_cluster

BATCH = 100


def batch_keys(i: int, cluster: bool) -> list[str]:
    """The ``i``-th batch's user keys."""
    return [user_key(PREFIX, f"user-{(i * BATCH + j) % USERS:05d}", cluster=cluster)
            for j in range(BATCH)]


def ours(client: RedisClient | ClusterClient, cluster: bool) -> Workload:
    async def work(i: int) -> None:
        replies = await client.execute([("HGETALL", key) for key in batch_keys(i, cluster)])
        assert len(replies) == BATCH and replies[0]
    return work


def redis_py(client: redis.asyncio.cluster.RedisCluster) -> Workload:
    async def work(i: int) -> None:
        pipe = client.pipeline()
        for key in batch_keys(i, True):
            pipe.hgetall(key)
        replies = await pipe.execute()
        assert len(replies) == BATCH and replies[0]
    return work


async def latencies(work: Workload, seconds: float) -> tuple[float, float]:
    """One caller's batches for ``seconds``: (p50, p99) in ms."""
    for i in range(20):  # warm-up
        await work(i)
    took = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        start = time.perf_counter()
        await work(i)
        took.append((time.perf_counter() - start) * 1000)
        i += 1
    took.sort()
    return took[len(took) // 2], took[int(len(took) * 0.99)]


async def run(single_url: str, cluster_url: str, seconds: float,
              callers: int) -> list[str]:
    """Every measurement; the table's lines."""
    single = RedisClient(parse_redis_url(single_url), timeout_s=5)
    cluster = ClusterClient(parse_redis_url(cluster_url), timeout_s=5)
    theirs = redis.asyncio.cluster.RedisCluster.from_url(cluster_url, decode_responses=True)
    clients: list[tuple[str, Callable[[], Workload]]] = [
        ("single Redis, RedisClient", lambda: ours(single, False)),
        ("cluster, ClusterClient", lambda: ours(cluster, True)),
        ("cluster, redis.asyncio", lambda: redis_py(theirs)),
    ]
    lines = []
    try:
        for name, make in clients:
            p50, p99 = await latencies(make(), seconds)
            done, wall, cpu = await measure(make(), callers, seconds)
            read = done * BATCH
            lines.append(f"{name:<28}{p50:>9.2f}{p99:>9.2f}{read / wall:>12,.0f}"
                         f"{cpu / read * 1e6:>12.1f}")
    finally:
        await single.close()
        await cluster.close()
        await theirs.aclose()
    return lines


def seed(client: Any, cluster: bool) -> None:
    """10,000 rows through ``client`` (a Redis, or with ``cluster`` a RedisCluster)."""
    now = int(time.time() * 1000)
    seed_rows(client, PREFIX,
              {f"user-{i:05d}": feature_row(now, version=1, clicks_1h=i % 13)
               for i in range(USERS)}, updated_at=now, cluster=cluster)


def main(argv: list[str] | None = None) -> int:
    """Start and seed both, measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.reader_cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4, help="length of each measurement")
    parser.add_argument("--callers", type=int, default=8, help="concurrent batch callers")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="featurestream-bench-cluster-") as tmp, \
            redis_cluster() as cluster:
        server = RedisProcess(Path(tmp))
        server.start()
        try:
            seed(server.client(), False)
            seed(cluster.client(), True)
            print(f"bench: {USERS} rows seeded in each; batches of {BATCH} HGETALL\n"
                  f"{'client':<28}{'p50 ms':>9}{'p99 ms':>9}{'keys/s':>12}{'CPU µs/key':>12}"
                  f"   (keys/s, CPU: {args.callers} concurrent callers)", flush=True)
            for line in uvloop.run(run(server.url, cluster.url, args.seconds, args.callers)):
                print(line, flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

