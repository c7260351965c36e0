"""Micro-benchmark of the reader's cache: ``python -m bench.reader_cache`` (~10 s).

Why :class:`featurestream.serving.cache.TTLCache` is hand-written: this times, per operation,
a hit, a miss, and a miss then put of a new key (what the store does on a miss; it evicts the
least recently used, the cache being full) for it (TTL only and invalidated) and for
``cachetools.TTLCache`` (an LRU with a TTL too), on 100,000 keys as the reader's default bound,
with the monotonic clock both use.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

import cachetools

from featurestream.serving.cache import MISS, TTLCache

ENTRIES = 100_000
REPEAT = 5
ROW = {"clicks_1h": 3, "spend_24h": 12.5, "as_of": 1_700_000_000_000}


def per_op_ns(run: Callable[[], Any], ops: int) -> float:
    """The best of REPEAT timings of ``run`` (``ops`` operations), in ns per operation."""
    return min(timeit.repeat(run, number=1, repeat=REPEAT)) / ops * 1e9


def measure(name: str, make: Callable[[], Any], get: Callable[[Any, str], Any],
            put: Callable[[Any, str, Any, Any], None]) -> dict[str, float]:
    """Hit, miss and miss-then-put (the put hands back what the miss returned, as the reader
    does), each over as many keys as a full cache holds."""
    keys = [f"fs:user:user-{i:06d}" for i in range(ENTRIES)]
    absent = [f"fs:user:other-{i:06d}" for i in range(ENTRIES)]
    cache = make()
    for key in keys:
        put(cache, key, ROW, get(cache, key))

    def hits() -> None:
        for key in keys:
            get(cache, key)

    def misses() -> None:
        for key in absent:
            get(cache, key)

    rounds = iter([[f"fs:user:new{r}-{i:06d}" for i in range(ENTRIES)] for r in range(REPEAT)])

    def puts() -> None:  # new keys: each evicts the least recently used, the cache stays full
        for key in next(rounds):
            put(cache, key, ROW, get(cache, key))

    return {"hit_ns": per_op_ns(hits, ENTRIES), "miss_ns": per_op_ns(misses, ENTRIES),
            "put_ns": per_op_ns(puts, ENTRIES), "name": name}  # type: ignore[dict-item]


def main(argv: list[str] | None = None) -> int:
    """Print ns per operation for each cache."""
    argparse.ArgumentParser(prog="python -m bench.reader_cache", description=__doc__) \
        .parse_args(argv)

    def invalidated() -> TTLCache:
        cache = TTLCache(60_000, ENTRIES, invalidated=True)
        cache.resume()
        return cache

    rows = [
        measure("TTLCache (TTL only)", lambda: TTLCache(60_000, ENTRIES),
                lambda c, k: c.get(k), lambda c, k, v, miss: c.put(k, v, miss)),
        measure("TTLCache (invalidated)", invalidated, lambda c, k: c.get(k),
                lambda c, k, v, miss: c.put(k, v, miss)),
        measure(f"cachetools.TTLCache {cachetools.__version__}",
                lambda: cachetools.TTLCache(ENTRIES, 60, timer=time.monotonic),
                lambda c, k: c.get(k, MISS), lambda c, k, v, miss: c.__setitem__(k, v)),
    ]
    print(f"{'cache':<32}{'hit ns':>9}{'miss ns':>9}{'miss+put':>9}  ({ENTRIES} keys, full)")
    for r in rows:
        print(f"{r['name']:<32}{r['hit_ns']:>9.0f}{r['miss_ns']:>9.0f}{r['put_ns']:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
