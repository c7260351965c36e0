"""Feature job benchmark: sustained throughput and produce-to-Redis freshness.

- Throughput: a backlog of generated events is preloaded into a private topic; the job is
  submitted and the keyed operator's input count is sampled from Flink's REST API. The rate is
  measured between 20% and 90% of the backlog, which excludes start-up and the tail.
- Freshness: generated events are produced at a fixed offered load with event time = now; a
  probe produces a marked event for a probe user every 50 ms and polls Redis until the row
  shows it (``last_event_ts`` equals the probe's ts). Freshness = seen - sent.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from bench.memory import stack_rss_mib
from featurestream.flink_rest import FlinkRest
from featurestream.kafka_producer import EventProducer
from featurestream.settings import Settings
from featurestream.stack import LocalStack
from featurestream.stack.private import isolated
from featurestream.submit import submit_job
from udfs.codec import EventEncoder
from udfs.events import Event
from udfs.generator import StreamConfig, generate_events
from udfs.redis_layout import user_key
from udfs.schema_registry import registry_for


@dataclass
class Throughput:
    parallelism: int
    events: int
    users: int
    users_with_rows: int  # distinct users materialized in Redis by the end of the run
    events_per_s: float
    stack_rss_mib: dict[str, float]  # every process of the stack, as the run ends


@dataclass
class Freshness:
    offered_per_s: float
    achieved_per_s: float
    probes: int
    probes_not_seen_in_10s: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


def steady_rate(count: Callable[[], int], total: int, timeout_s: float = 600) -> float:
    """Records/s between 20% and 90% of ``total``, sampling ``count()`` every 0.2 s."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), count()))
        if samples[-1][1] >= total * 0.9:
            break
        time.sleep(0.2)
    low = next(((t, n) for t, n in samples if n >= total * 0.2), samples[0])
    high = samples[-1]
    if high[1] < total * 0.9 or high[0] <= low[0]:
        raise RuntimeError(f"could not measure: {high[1]:,} of {total:,} records in "
                           f"{timeout_s:.0f} s")
    return (high[1] - low[1]) / (high[0] - low[0])


def keyed_records_in(settings: Settings, job_id: str) -> int:
    """Records the keyed feature operator has received (network input of its vertex)."""
    job = FlinkRest(settings.flink_rest_url).job(job_id)
    vertex = next(v for v in job["vertices"] if v["name"].startswith("user features"))
    return int(vertex["metrics"]["read-records"])


def preload(settings: Settings, events: int, users: int, start_ts: int,
            user_skew: float = 0.9) -> None:
    """Produce ``events`` generated events (``user_skew`` 0 = every user equally active)."""
    encoder = EventEncoder(registry_for(settings.schema_registry_url))
    config = StreamConfig(users=users, events_per_second=1000.0, start_ts=start_ts, seed=5,
                          user_skew=user_skew)
    with EventProducer(settings) as producer:
        for event in itertools.islice(generate_events(config), events):
            producer.send(event.user_id, encoder.avro(event), event.ts)


def measure_throughput(stack: LocalStack, parallelism: int, events: int, users: int,
                       user_skew: float = 0.9, echo=print) -> Throughput:
    """Steady-state events/s of the feature job on a preloaded backlog."""
    settings = isolated(stack, f"bench-p{parallelism}", parallelism=parallelism)
    echo(f"feature job P={parallelism}: preloading {events:,} events ...")
    preload(settings, events, users, start_ts=int(time.time() * 1000) - 3_600_000,
            user_skew=user_skew)
    job_id = submit_job(settings, "features")
    try:
        rate = steady_rate(lambda: keyed_records_in(settings, job_id), events)
        memory = stack_rss_mib(stack)
        client = redis.Redis.from_url(settings.redis_url)
        with_rows = sum(1 for _ in client.scan_iter(
            match=user_key(settings.redis_key_prefix, "*"), count=10_000))
        echo(f"feature job P={parallelism}: {rate:,.0f} events/s; {with_rows:,} users with "
             f"rows; stack RSS {memory['total']:,.0f} MiB")
        return Throughput(parallelism, events, users, with_rows, rate, memory)
    finally:
        FlinkRest(settings.flink_rest_url).cancel(job_id)


def measure_freshness(stack: LocalStack, offered_per_s: float, seconds: float, users: int,
                      echo=print) -> Freshness:
    """Produce-to-Redis latency of probe events under a fixed offered load."""
    settings = isolated(stack, f"fresh-{int(offered_per_s)}")
    job_id = submit_job(settings, "features")
    encoder = EventEncoder(registry_for(settings.schema_registry_url))
    client = redis.Redis.from_url(settings.redis_url)
    stop = threading.Event()
    sent = [0]

    def load() -> None:
        config = StreamConfig(users=users, events_per_second=offered_per_s, seed=9)
        started = time.monotonic()
        with EventProducer(settings) as producer:
            for i, event in enumerate(generate_events(config)):
                if stop.is_set():
                    break
                due = started + i / offered_per_s
                if (delay := due - time.monotonic()) > 0:
                    time.sleep(delay)
                now_ms = int(time.time() * 1000)
                producer.send(event.user_id, encoder.avro(event._replace(ts=now_ms)), now_ms)
                sent[0] += 1

    try:
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(15)  # warm-up: job start, Python workers, first checkpoints
        latencies: list[float] = []
        missed = 0
        with EventProducer(settings) as probe:
            started, sent_at_start = time.monotonic(), sent[0]
            for i in itertools.count():
                if time.monotonic() - started > seconds:
                    break
                user = f"probe-{i % 20}"
                ts = int(time.time() * 1000)
                event = Event(f"probe-{i}", user, "view", None, None, ts, None)
                t0 = time.perf_counter()
                probe.send(user, encoder.avro(event), ts)
                probe.flush()
                key = user_key(settings.redis_key_prefix, user)
                while time.perf_counter() - t0 < 10:
                    seen = client.hget(key, "last_event_ts")
                    if seen is not None and int(seen) >= ts:
                        latencies.append((time.perf_counter() - t0) * 1000)
                        break
                    time.sleep(0.002)
                else:
                    missed += 1
                time.sleep(0.05)
            achieved = (sent[0] - sent_at_start) / (time.monotonic() - started)
        # A probe not seen within 10 s counts as 10 s: the job is not keeping up.
        latencies += [10_000.0] * missed
        quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0] * 99
        result = Freshness(offered_per_s, achieved, len(latencies), missed, quantiles[49],
                           quantiles[94], quantiles[98])
        echo(f"freshness at {offered_per_s:,.0f}/s offered: p50 {result.p50_ms:.0f} ms, "
             f"p95 {result.p95_ms:.0f} ms, p99 {result.p99_ms:.0f} ms ({len(latencies)} probes,"
             f" {missed} not seen within 10 s)")
        return result
    finally:
        stop.set()
        FlinkRest(settings.flink_rest_url).cancel(job_id)
