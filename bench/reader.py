"""Benchmark of the reader: ``python -m bench.reader`` (about three minutes).

Starts a private redis-server and ``featurestream serve`` on free ports, seeds 10,000 users in
the feature job's layout, then measures, with the cache off, on with its TTL alone (``ttl``)
and on with Redis invalidating it (``tracked``), while a writer rewrites 1,000 random rows/s
with the feature job's Lua upsert:

- closed loop (wrk): single-user GET and 100-user batch POST at a few concurrencies, each id
  drawn uniformly from the 10,000 users; the highest concurrency shows saturation throughput;
- fixed offered load (hey -q): single GET at 2,000 req/s and batch-100 at 200 req/s. hey -q
  rate-limits each of its -c workers, so the load is open only while responses are faster than
  the per-worker interval; hey repeats one URL/body, so with the cache on these are all hits;
- the Redis calls saved: cache hits / lookups over those runs;
- freshness: the writer rewrites 100 hot users 1,000 times/s (each every ~100 ms) while four
  clients read them; a value read is stale by how long before the request its successor had
  been acknowledged to the writer (0 if it had not): p50/p99/max over every read.

Prints a table and writes JSON to bench/results/. Everything here shares the box's two cores
with the load generators, and with anything else running: ``busy%`` is how busy the cores were
just before each measurement, while the reader was idle; ``cpu µs`` is the reader's own CPU
time (all its processes) per request, which others' load disturbs far less than throughput.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import redis

from featurestream.settings import Settings
from featurestream.udfs.store.redis_layout import UPSERT_ROWS_LUA, upsert_rows_args, user_key
from testing.reader_fixtures import (
    RedisProcess,
    ServeProcess,
    feature_row,
    http,
    seed_rows,
    start_serve,
)

USERS = 10_000
BATCH = 100
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"single": 2.0, "batch": 10.0}  # p99 ms at moderate concurrency / offered load
CACHES = ("off", "ttl", "tracked")  # off; on, TTL alone; on, invalidated by Redis
WRITE_RATE = 1_000  # rows/s rewritten during every measurement
HOT_USERS = 100  # the freshness probe's users, all rewritten at WRITE_RATE
PROBE_CLIENTS = 4
FIRST_SEQ = 1_000_000  # the writer's sequence numbers (clicks_1h): above any seeded value

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
# wrk scripts: uniform random users; what can be is prebuilt in init() to spare wrk's CPU.
WRK_SINGLE = """
local reqs = {}
init = function(args)
  math.randomseed(42)
  for i = 1, USERS do
    reqs[i] = wrk.format("GET", string.format("/v1/features/user-%05d", i - 1))
  end
end
request = function()
  return reqs[math.random(1, USERS)]
end
"""
WRK_BATCH = """
local ids, headers = {}, {["Content-Type"] = "application/json"}
init = function(args)
  math.randomseed(42)
  for i = 1, USERS do ids[i] = string.format('"user-%05d"', i - 1) end
end
request = function()
  local pick = {}
  for j = 1, BATCH do pick[j] = ids[math.random(1, USERS)] end
  local body = '{"user_ids":[' .. table.concat(pick, ",") .. ']}'
  return wrk.format("POST", "/v1/features/batch", headers, body)
end
"""


def ensure_tools() -> None:
    """wrk and hey from Debian, installed with apt-get when missing (as root)."""
    missing = [tool for tool in ("wrk", "hey") if not shutil.which(tool)]
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-qq", *missing]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"bench: {', '.join(missing)} not found; install with: {' '.join(command)}")
    print(f"bench: installing {' '.join(missing)} with apt-get", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(command, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def seed(redis_server: RedisProcess) -> None:
    """10,000 users, written as the feature job writes them."""
    now = int(time.time() * 1000)
    rows = {f"user-{i:05d}": feature_row(now - 1_000, version=i % 7 + 1, clicks_1h=i % 13,
                                         spend_24h=i * 1.37, events_24h=i % 101)
            for i in range(USERS)}
    seed_rows(redis_server.client(), "fs:", rows, updated_at=now, ttl_seconds=3_600)


class Writer:
    """Rewrites ``users``' rows at ``rate`` per second in a thread, as the feature job does
    (its Lua upsert, a pipeline every 10 ms), each row's clicks_1h a new sequence number;
    remembers when Redis acknowledged each (user -> [(seq, monotonic time)])."""

    TICK_S = 0.01

    def __init__(self, client: redis.Redis, users: list[str], rate: int) -> None:
        self._client, self._users, self._rate = client, users, rate
        self._upsert = client.register_script(UPSERT_ROWS_LUA)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.acked: dict[str, list[tuple[int, float]]] = {u: [] for u in users}
        self.seq = FIRST_SEQ

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        per_tick, rng = max(1, round(self._rate * self.TICK_S)), random.Random(7)
        next_tick = time.monotonic()
        while not self._stop.is_set():
            pipe = self._client.pipeline(transaction=False)
            written = []
            now_ms = int(time.time() * 1000)
            for user in rng.sample(self._users, min(per_tick, len(self._users))):
                self.seq += 1
                row = feature_row(now_ms, version=self.seq, clicks_1h=self.seq)
                self._upsert(keys=[user_key("fs:", user)],
                             args=upsert_rows_args([row], now_ms, 3_600), client=pipe)
                written.append((user, self.seq))
            pipe.execute()
            acked_at = time.monotonic()
            for user, seq in written:
                self.acked[user].append((seq, acked_at))
            next_tick += self.TICK_S
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def staleness_ms(self, user: str, seq: int, sent_at: float) -> float:
        """How long before ``sent_at`` the value after ``seq`` had been acknowledged (0 if
        it had not: ``seq`` was still the latest)."""
        writes = self.acked[user]
        after = bisect_right(writes, (seq, float("inf")))
        if after == len(writes) or writes[after][1] >= sent_at:
            return 0.0
        return (sent_at - writes[after][1]) * 1000


def probe_freshness(url: str, writer: Writer, seconds: int) -> dict[str, Any]:
    """PROBE_CLIENTS keep-alive clients reading random hot users for ``seconds``; the
    staleness of every value read (see :meth:`Writer.staleness_ms`)."""
    host, port = url.removeprefix("http://").split(":")
    users = list(writer.acked)

    def client(seed: int) -> list[tuple[str, int, float]]:
        rng, reads = random.Random(seed), []
        connection = HTTPConnection(host, int(port), timeout=10)
        deadline = time.monotonic() + seconds
        while (sent_at := time.monotonic()) < deadline:
            user = rng.choice(users)
            connection.request("GET", f"/v1/features/{user}?names=clicks_1h")
            response = connection.getresponse()
            body = json.loads(response.read())
            if response.status == 200:
                reads.append((user, int(body["features"]["clicks_1h"]), sent_at))
        connection.close()
        return reads

    with ThreadPoolExecutor(PROBE_CLIENTS) as pool:
        reads = [r for rs in pool.map(client, range(PROBE_CLIENTS)) for r in rs]
    stale = sorted(writer.staleness_ms(*read) for read in reads)

    def pct(p: float) -> float:
        return stale[min(len(stale) - 1, int(p / 100 * len(stale)))] if stale else 0.0

    return {"reads": len(reads), "reads_per_s": len(reads) / seconds,
            "stale_share": sum(s > 0 for s in stale) / max(1, len(stale)),
            "staleness_p50_ms": pct(50), "staleness_p99_ms": pct(99),
            "staleness_max_ms": stale[-1] if stale else 0.0}


def wrk(url: str, script: str, connections: int, seconds: int) -> dict[str, Any]:
    """One closed-loop wrk run; latencies in ms."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f"USERS = {USERS}\nBATCH = {BATCH}\n{script}{WRK_DONE}")
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", f.name,
                              url], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    raw = json.loads(out.strip().splitlines()[-1])
    return {"rps": raw["requests"] / (raw["duration_us"] / 1e6), "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "requests": raw["requests"],
            "errors": raw["errors"]}


def hey(url: str, rate: int, workers: int, seconds: int,
        body: bytes | None = None) -> dict[str, Any]:
    """One fixed-rate hey run (``rate`` req/s over ``workers``); latencies in ms."""
    args = ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(rate / workers),
            "-o", "csv"]
    with tempfile.NamedTemporaryFile("wb", suffix=".json") as f:
        if body is not None:
            f.write(body)
            f.flush()
            args += ["-m", "POST", "-T", "application/json", "-D", f.name]
        out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    latencies = sorted(float(r["response-time"]) * 1000 for r in rows)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {"rps": len(rows) / seconds, "p50_ms": pct(50), "p99_ms": pct(99),
            "requests": len(rows), "errors": sum(r["status-code"] != "200" for r in rows)}


def box_busy_percent(seconds: float = 0.5) -> float:
    """How busy all cores were over ``seconds`` (from /proc/stat): others' load shows here."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return 100 * (busy1 - busy0) / max(1, total1 - total0)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its descendants so far, from /proc."""
    tick, total, pids = os.sysconf("SC_CLK_TCK"), 0.0, [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:  # gone meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        pids += [int(child) for child in children]
    return total


def cache_counts(url: str) -> tuple[float, float]:
    """Cache hits and lookups so far, from /metrics."""
    values = {}
    for line in http("GET", url + "/metrics").body.splitlines():
        for name in ("hits", "misses"):
            if line.startswith(f"featurestream_reader_cache_{name}_total "):
                values[name] = float(line.split()[1])
    return values.get("hits", 0), values.get("hits", 0) + values.get("misses", 0)


def hit_ratio(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Hits / lookups between two :func:`cache_counts` (None when nothing was looked up)."""
    lookups = after[1] - before[1]
    return (after[0] - before[0]) / lookups if lookups else None


@contextmanager
def reader(redis_url: str, workdir: Path, cache: str, cache_ttl_ms: int,
           workers: int) -> Iterator[ServeProcess]:
    """``featurestream serve`` for one configuration (one of CACHES); stopped on exit."""
    served: ServeProcess = start_serve({
        "FEATURESTREAM_REDIS_URL": redis_url, "FEATURESTREAM_SERVE_WORKERS": str(workers),
        "FEATURESTREAM_CACHE_TTL_MS": str(0 if cache == "off" else cache_ttl_ms),
        "FEATURESTREAM_CACHE_INVALIDATION": str(cache == "tracked").lower()},
        workdir / f"serve-{cache}.log")
    try:
        yield served
    finally:
        served.stop()


def run_configuration(served: ServeProcess, seconds: int, cache: str) -> list[dict[str, Any]]:
    """Every measurement against one running reader."""
    url = served.url
    batch_body = json.dumps({"user_ids": [f"user-{i:05d}" for i in range(0, USERS, 100)]})
    single_url = f"{url}/v1/features/user-04242"
    wrk(url, WRK_SINGLE, 4, 1)  # warm-up: connections, caches, branch predictors
    plan: list[tuple[str, str, str, Any]] = [
        ("single", "wrk", "c=4", lambda: wrk(url, WRK_SINGLE, 4, seconds)),
        ("single", "wrk", "c=16", lambda: wrk(url, WRK_SINGLE, 16, seconds)),
        ("single", "wrk", "c=64", lambda: wrk(url, WRK_SINGLE, 64, seconds)),
        ("single", "hey -q", "2000/s c=4", lambda: hey(single_url, 2_000, 4, seconds)),
        ("batch", "wrk", "c=2", lambda: wrk(url, WRK_BATCH, 2, seconds)),
        ("batch", "wrk", "c=8", lambda: wrk(url, WRK_BATCH, 8, seconds)),
        ("batch", "hey -q", "200/s c=2",
         lambda: hey(url + "/v1/features/batch", 200, 2, seconds, batch_body.encode())),
    ]
    results = []
    for endpoint, tool, load, measure in plan:
        busy = box_busy_percent()  # the reader is idle now: this is everyone else
        cpu_before = cpu_seconds(served.process.pid)
        result = {"cache": cache, "endpoint": endpoint, "tool": tool, "load": load,
                  "busy_before_pct": busy, **measure()}
        result["cpu_us_per_request"] = ((cpu_seconds(served.process.pid) - cpu_before) * 1e6
                                        / max(1, result["requests"]))
        results.append(result)
        print(row(result), flush=True)
    ratio = hit_ratio((0, 0), cache_counts(url))
    for result in results:
        result["cache_hit_ratio"] = ratio
    if ratio is not None:
        print(f"(cache hits: {ratio:.0%} of lookups in these runs: Redis reads saved)",
              flush=True)
    return results


def run_freshness(url: str, redis_server: RedisProcess, seconds: int,
                  cache: str) -> dict[str, Any]:
    """The freshness probe against one running reader, the hot users rewritten meanwhile."""
    users = [f"user-{i:05d}" for i in range(HOT_USERS)]
    before = cache_counts(url)
    with Writer(redis_server.client(), users, WRITE_RATE) as writer:
        result = {"cache": cache, **probe_freshness(url, writer, seconds)}
    result["cache_hit_ratio"] = hit_ratio(before, cache_counts(url))
    print(freshness_row(result), flush=True)
    return result


FRESHNESS_HEADER = (f"{'cache':<9}{'reads/s':>9}{'hits':>7}{'stale':>8}{'p50 ms':>9}"
                    f"{'p99 ms':>9}{'max ms':>9}")


def freshness_row(r: dict[str, Any]) -> str:
    """One line of the freshness table."""
    hits = r["cache_hit_ratio"]
    return (f"{r['cache']:<9}{r['reads_per_s']:>9.0f}"
            f"{'-' if hits is None else f'{hits:.0%}':>7}{r['stale_share']:>8.1%}"
            f"{r['staleness_p50_ms']:>9.1f}{r['staleness_p99_ms']:>9.1f}"
            f"{r['staleness_max_ms']:>9.1f}")


HEADER = f"{'cache':<9}{'endpoint':<9}{'tool':<8}{'load':<12}{'req/s':>9}{'p50 ms':>9}" \
         f"{'p99 ms':>9}{'errors':>8}{'busy%':>7}{'cpu µs':>8}"


def row(r: dict[str, Any]) -> str:
    """One table line."""
    return (f"{r['cache']:<9}{r['endpoint']:<9}{r['tool']:<8}{r['load']:<12}{r['rps']:>9.0f}"
            f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}{r['busy_before_pct']:>7.0f}"
            f"{r['cpu_us_per_request']:>8.0f}")


def run_reader_bench(seconds: int, workers: int, cache_ttl_ms: int,
                     caches: tuple[str, ...] = CACHES) -> dict[str, Any]:
    """Measure every configuration in ``caches`` (of CACHES); returns the report (not yet
    written)."""
    ensure_tools()
    load_before = os.getloadavg()
    started = time.time()
    results: list[dict[str, Any]] = []
    freshness: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="featurestream-bench-") as tmp:
        workdir = Path(tmp)
        redis_server = RedisProcess(workdir)
        redis_server.start()
        try:
            seed(redis_server)
            print(f"bench: {USERS} users seeded; load average {load_before[0]:.2f} on "
                  f"{os.cpu_count()} cores\n{HEADER}", flush=True)
            for cache in caches:
                with reader(redis_server.url, workdir, cache, cache_ttl_ms, workers) as served:
                    with Writer(redis_server.client(), [f"user-{i:05d}" for i in range(USERS)],
                                WRITE_RATE):
                        results += run_configuration(served, seconds, cache)
                    freshness.append(run_freshness(served.url, redis_server, seconds, cache))
            print(f"\nfreshness: {HOT_USERS} users rewritten {WRITE_RATE}/s, read by "
                  f"{PROBE_CLIENTS} clients; staleness of the values read\n{FRESHNESS_HEADER}")
            for result in freshness:
                print(freshness_row(result))
        finally:
            redis_server.stop()
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1), "cores": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "users": USERS, "batch_size": BATCH, "workers": workers,
        "cache_ttl_ms": cache_ttl_ms, "measurement_seconds": seconds,
        "write_rate": WRITE_RATE, "hot_users": HOT_USERS,
        "targets_p99_ms": TARGETS, "results": results, "freshness": freshness,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and write the JSON results."""
    parser = argparse.ArgumentParser(prog="python -m bench.reader", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="length of each measurement")
    parser.add_argument("--workers", type=int, default=Settings().serve_workers,
                        help="reader worker processes (default: the setting's default)")
    parser.add_argument("--cache-ttl-ms", type=int, default=1_000,
                        help="the TTL of the cache-on runs")
    parser.add_argument("--caches", default=",".join(CACHES),
                        help=f"configurations to measure, among {','.join(CACHES)}")
    args = parser.parse_args(argv)
    caches = tuple(c for c in args.caches.split(",") if c)
    if not caches or set(caches) - set(CACHES):
        parser.error(f"--caches: use some of {','.join(CACHES)}")
    report = run_reader_bench(args.seconds, args.workers, args.cache_ttl_ms, caches)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    out = RESULTS / f"reader-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nbench: {report['seconds']} s; load average after "
          f"{report['load_average_after'][0]:.2f}; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
