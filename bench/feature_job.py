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
from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.component import Echo
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.flink_rest import FlinkRest
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.store.redis_layout import entity_key, user_key


@dataclass
class Throughput:
    parallelism: int
    events: int
    users: int
    users_with_rows: int  # distinct users materialized in Redis by the end of the run
    events_per_s: float
    stack_rss_mib: dict[str, float]  # every process of the stack, as the run ends
    items: bool = False  # the item definitions (ITEM_DEFINITIONS) instead of the defaults
    items_with_rows: int = 0
    bytes_per_key: float = 0.0  # stack RSS over the idle stack / keys with rows


@dataclass
class Freshness:
    parallelism: int
    offered_per_s: float
    achieved_per_s: float
    probes: int
    probes_not_seen_in_10s: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


def steady_rate(count: Callable[[], int], total: int, timeout_s: float = 600,
                interval_s: float = 1.0) -> float:
    """Records/s between 20% and 90% of ``total``, sampling ``count()`` every ``interval_s``
    (Flink refreshes its REST metrics once a second; sampling those faster only loads the
    JobManager)."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), count()))
        if samples[-1][1] >= total * 0.9:
            break
        time.sleep(interval_s)
    low = next(((t, n) for t, n in samples if n >= total * 0.2), samples[0])
    high = samples[-1]
    if high[1] < total * 0.9 or high[0] <= low[0]:
        raise RuntimeError(f"could not measure: {high[1]:,} of {total:,} records in "
                           f"{timeout_s:.0f} s")
    return (high[1] - low[1]) / (high[0] - low[0])


def end_run(settings: Settings, job_id: str) -> None:
    """Cancel the run's job and delete its topics (the memory-only broker frees them)."""
    FlinkRest(settings.flink_rest_url).cancel(job_id)
    kafka = LocalStack(settings, echo=lambda line: None).kafka
    kafka.delete_topics(kafka.pipeline_topics())


def events_counted(settings: Settings, job_id: str) -> int:
    """Source records the sharding stage has read (its ``source_events`` counter)."""
    return int(FlinkRest(settings.flink_rest_url).operator_metric(job_id, "Source: events",
                                                                 "source_events"))


# The item run's definitions: today's user features plus an item entity from the same events,
# with approximate distinct counts (HyperLogLog) beside the exact ones.
ITEM_DEFINITIONS = """
from featurestream.definitions import Entity, Feature, FeatureGroup, eq
from featurestream.udfs.definitions.defaults import USER, events_source, user_features

events = events_source({topic!r})
item = Entity("item", keys=("item_id",))
user_activity = FeatureGroup("user_activity", USER, events, [
    *user_features(("1m", "5m", "1h", "24h")),
    Feature("approx_items_24h", "approx_distinct", field="item_id", window="24h"),
])
item_popularity = FeatureGroup("item_popularity", item, events, [
    Feature("views_15m", "count", window="15m", where=eq("event_type", "view")),
    Feature("purchases_1h", "count", window="1h", where=eq("event_type", "purchase")),
    Feature("buyers_1h", "approx_distinct", field="user_id", window="1h",
            where=eq("event_type", "purchase")),
    Feature("viewers_15m", "approx_distinct", field="user_id", window="15m"),
    Feature("revenue_24h", "sum", field="amount", window="24h"),
])
"""


def keys_with_rows(settings: Settings, entity: str) -> int:
    """How many instances of ``entity`` have a row in Redis."""
    client = redis.Redis.from_url(settings.redis_url)
    return sum(1 for _ in client.scan_iter(
        match=entity_key(settings.redis_key_prefix, entity, "*"), count=10_000))


def preload(settings: Settings, events: int, users: int, start_ts: int,
            user_skew: float = 0.9) -> None:
    """Produce ``events`` generated events (``user_skew`` 0 = every user equally active)."""
    encoder = EventEncoder(registry_for(settings.schema_registry))
    config = StreamConfig(users=users, events_per_second=1000.0, start_ts=start_ts, seed=5,
                          user_skew=user_skew)
    with EventProducer(settings) as producer:
        for event in itertools.islice(generate_events(config), events):
            producer.send(event.user_id, encoder.avro(event), event.ts)


def measure_throughput(stack: LocalStack, parallelism: int, events: int, users: int,
                       user_skew: float = 0.9, echo: Echo = print, items: bool = False
                       ) -> Throughput:
    """Steady-state events/s of the feature job on a preloaded backlog (with ``items``: the
    item definitions above, and the memory per active key)."""
    name = f"bench-p{parallelism}" + ("-items" if items else "")
    settings = isolated(stack, name, parallelism=parallelism)
    if items:
        path = settings.home / f"{name}-definitions.py"
        path.write_text(ITEM_DEFINITIONS.format(topic=settings.events_topic))
        settings = settings.replace(definitions=str(path))
    echo(f"feature job P={parallelism}{' with items' if items else ''}: preloading "
         f"{events:,} events ...")
    preload(settings, events, users, start_ts=int(time.time() * 1000) - 3_600_000,
            user_skew=user_skew)
    idle = stack_rss_mib(stack)["total"]
    job_id = submit_job(settings, "features")
    try:
        rate = steady_rate(lambda: events_counted(settings, job_id), events)
        memory = stack_rss_mib(stack)
        with_rows = keys_with_rows(settings, "user")
        item_rows = keys_with_rows(settings, "item") if items else 0
        per_key = (memory["total"] - idle) * 2**20 / max(with_rows + item_rows, 1)
        echo(f"feature job P={parallelism}: {rate:,.0f} events/s; {with_rows:,} users and "
             f"{item_rows:,} items with rows; stack RSS {memory['total']:,.0f} MiB "
             f"({per_key / 1024:,.1f} KiB per key over the idle stack)")
        return Throughput(parallelism, events, users, with_rows, rate, memory, items,
                          item_rows, per_key)
    finally:
        end_run(settings, job_id)


PROBE_USERS = 50
PROBE_INTERVAL_S = 0.02


def measure_freshness(stack: LocalStack, offered_per_s: float, seconds: float, users: int,
                      parallelism: int = 1, echo: Echo = print) -> Freshness:
    """Produce-to-Redis latency of probe events under a fixed offered load.

    A probe event goes to one of :data:`PROBE_USERS` probe users every
    :data:`PROBE_INTERVAL_S` (sent synchronously: the clock starts when the broker has it); a
    poller reads every probe user's ``last_event_ts`` in one pipelined round trip every 2 ms.
    A probe is visible once its user's ``last_event_ts`` reaches its ``ts`` (it only grows).
    """
    settings = isolated(stack, f"fresh-{int(offered_per_s)}-p{parallelism}",
                        parallelism=parallelism)
    job_id = submit_job(settings, "features")
    encoder = EventEncoder(registry_for(settings.schema_registry))
    stop = threading.Event()
    sent = [0]

    def load() -> None:
        # Sends what is due every 10 ms (sleeping per event would cost more than sending).
        config = StreamConfig(users=users, events_per_second=offered_per_s, seed=9)
        events = generate_events(config)
        started = time.monotonic()
        with EventProducer(settings) as producer:
            while not stop.is_set():
                due = int((time.monotonic() - started) * offered_per_s) - sent[0]
                now_ms = int(time.time() * 1000)
                for event in itertools.islice(events, max(due, 0)):
                    producer.send(event.user_id, encoder.avro(event._replace(ts=now_ms)),
                                  now_ms)
                sent[0] += max(due, 0)
                time.sleep(0.01)

    try:
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(15)  # warm-up: job start, Python workers, first checkpoints
        started, sent_at_start = time.monotonic(), sent[0]
        latencies, missed = _probe(settings, encoder, seconds)
        achieved = (sent[0] - sent_at_start) / (time.monotonic() - started)
        # A probe not seen within 10 s counts as 10 s: the job is not keeping up.
        latencies += [10_000.0] * missed
        quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0] * 99
        result = Freshness(parallelism, offered_per_s, achieved, len(latencies), missed,
                           quantiles[49], quantiles[94], quantiles[98])
        echo(f"freshness at {offered_per_s:,.0f}/s offered, P={parallelism}: p50 "
             f"{result.p50_ms:.0f} ms, p95 {result.p95_ms:.0f} ms, p99 {result.p99_ms:.0f} ms "
             f"({len(latencies)} probes, {missed} not seen within 10 s)")
        return result
    finally:
        stop.set()
        end_run(settings, job_id)


def _probe(settings: Settings, encoder: EventEncoder, seconds: float
           ) -> tuple[list[float], int]:
    """Send probes for ``seconds``; their produce-to-visible latencies (ms) and how many were
    not seen within 10 s."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = [user_key(settings.redis_key_prefix, f"probe-{u}") for u in range(PROBE_USERS)]
    outstanding: list[tuple[int, int, float]] = []  # (probe user, ts, sent at)
    lock = threading.Lock()
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not (done.is_set() and not outstanding):
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "last_event_ts")
            seen = [int(v) if v is not None else -1 for v in pipe.execute()]
            now = time.perf_counter()
            with lock:
                waiting = []
                for user, ts, sent_at in outstanding:
                    if seen[user] >= ts:
                        latencies.append((now - sent_at) * 1000)
                    elif now - sent_at < 10:
                        waiting.append((user, ts, sent_at))
                outstanding[:] = waiting
            time.sleep(0.002)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    probes = 0
    with EventProducer(settings) as producer:
        deadline = time.monotonic() + seconds
        for i in itertools.count():
            if time.monotonic() > deadline:
                break
            user, ts = i % PROBE_USERS, int(time.time() * 1000)
            event = Event(f"probe-{i}", f"probe-{user}", "view", None, None, ts, None)
            sent_at = time.perf_counter()
            producer.send(event.user_id, encoder.avro(event), ts)
            producer.flush()
            with lock:
                outstanding.append((user, ts, sent_at))
            probes += 1
            time.sleep(PROBE_INTERVAL_S)
    done.set()
    poller.join(15)
    return latencies, probes - len(latencies)
