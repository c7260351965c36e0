"""Micro-benchmark of the reader's Redis client: ``python -m bench.redis_client`` (~30 s).

Why the reader keeps its own client (:mod:`featurestream.serving.redis_client`) rather than
``redis.asyncio``: this measures both, on uvloop as the reader runs, against a private
redis-server seeded with feature rows of the jobs' layout, on the reader's two shapes of work:

- ``batch``: one pipelined round trip of N HGETALLs (``POST /v1/features/batch``);
- ``concurrent``: C callers each awaiting single HGETALLs (concurrent ``GET``s of one worker).

It prints, per client and shape, keys/s and the client's CPU per key (``process_time`` of this
process, which holds only the client: redis-server runs apart). redis-py parses with hiredis
when it is installed, as it is here; the line says so.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio
import redis.utils
import uvloop

from featurestream.serving.redis_client import RedisClient, parse_redis_url
from featurestream.udfs.store.redis_layout import user_key
from testing.reader_fixtures import RedisProcess, feature_row, seed_rows

USERS = 10_000
PREFIX = "fs:"

Workload = Callable[[int], Awaitable[None]]  # one unit of work (its keys depend on the round)


def keys_for(i: int, n: int) -> list[str]:
    """``n`` user keys starting at a position that moves with ``i``."""
    return [user_key(PREFIX, f"user-{(i * n + j) % USERS:05d}") for j in range(n)]


def ours(client: RedisClient, batch: int) -> Workload:
    async def work(i: int) -> None:
        replies = await client.execute([("HGETALL", key) for key in keys_for(i, batch)])
        assert len(replies) == batch and replies[0]
    return work


def redis_py(client: redis.asyncio.Redis, batch: int) -> Workload:
    async def work(i: int) -> None:
        if batch == 1:
            replies = [await client.hgetall(keys_for(i, 1)[0])]
        else:
            pipe = client.pipeline(transaction=False)
            for key in keys_for(i, batch):
                pipe.hgetall(key)
            replies = await pipe.execute()
        assert len(replies) == batch and replies[0]
    return work


async def measure(work: Workload, callers: int, seconds: float) -> tuple[int, float, float]:
    """Run ``callers`` loops of ``work`` for ``seconds``: (units done, wall s, CPU s)."""
    done = 0
    deadline = time.monotonic() + seconds

    async def loop(offset: int) -> None:
        nonlocal done
        i = offset
        while time.monotonic() < deadline:
            await work(i)
            done += 1
            i += callers
    for i in range(callers):  # warm-up: connections, caches
        await work(i)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(callers)))
    return done, time.perf_counter() - wall0, time.process_time() - cpu0


async def run(url: str, batch: int, callers: int, seconds: float) -> list[str]:
    """Every measurement; the table's lines."""
    ours_client = RedisClient(parse_redis_url(url), timeout_s=5)
    theirs = redis.asyncio.Redis.from_url(url, decode_responses=True,
                                          max_connections=max(callers, 1))
    lines = []
    shapes = [(f"batch of {batch}", batch, 1), (f"{callers} concurrent GETs", 1, callers)]
    try:
        for shape, keys, concurrency in shapes:
            for name, work in (("featurestream", ours(ours_client, keys)),
                               ("redis.asyncio", redis_py(theirs, keys))):
                done, wall, cpu = await measure(work, concurrency, seconds)
                read = done * keys
                lines.append(f"{shape:<22}{name:<15}{read / wall:>12,.0f}"
                             f"{cpu / read * 1e6:>14.1f}")
    finally:
        await ours_client.close()
        await theirs.aclose()
    return lines


def main(argv: list[str] | None = None) -> int:
    """Seed a private redis-server, measure both clients, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.redis_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=100, help="keys per pipelined round trip")
    parser.add_argument("--callers", type=int, default=32, help="concurrent single-key callers")
    parser.add_argument("--seconds", type=float, default=3, help="length of each measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="featurestream-bench-redis-") as tmp:
        server = RedisProcess(Path(tmp))
        server.start()
        try:
            now = int(time.time() * 1000)
            seed_rows(server.client(), PREFIX,
                      {f"user-{i:05d}": feature_row(now, version=1, clicks_1h=i % 13)
                       for i in range(USERS)}, updated_at=now)
            print(f"bench: {USERS} rows seeded; redis-py parser: "
                  f"{'hiredis' if redis.utils.HIREDIS_AVAILABLE else 'pure Python'}\n"
                  f"{'shape':<22}{'client':<15}{'keys/s':>12}{'CPU µs/key':>14}", flush=True)
            for line in uvloop.run(run(server.url, args.batch, args.callers, args.seconds)):
                print(line, flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
