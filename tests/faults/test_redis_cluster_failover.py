"""A manual failover of one Redis Cluster master while events flow and the reader is under load
(issue 14, item 1): the feature job (``FEATURESTREAM_REDIS_CLUSTER=true``) writes to a real
3+3 cluster (``testing.redis_cluster``) beside the faults stack's Kafka and Flink, the real
``featurestream serve`` reads it for concurrent clients on ``GET /v1/features/{user_id}`` and
``POST /v1/predict``, and ``CLUSTER FAILOVER`` on one master's replica swaps the two.

Checked: every row equals the oracle afterwards; no request hangs and none is a 500; the
reader's errors are 503 ``redis_unavailable`` and only around the failover (counted); after it
every answer is a fresh 200 again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from testing import model_fixtures
from testing.chaos import ChaosRow
from testing.reader_fixtures import free_port, start_serve, wait_until
from testing.redis_cluster import LocalRedisCluster
from tests.faults.test_reader_outage import HANG_S, Answer, ask, ended
from tests.faults.test_redis_outage import by_user_of, converge, failures
from tests.integration.conftest import cancel_job
from tests.integration.test_feature_job import encoded, good_events, produce

pytestmark = pytest.mark.flink

CLIENTS = 4
REDIS_TIMEOUT_MS = 250  # the reader's bound on a Redis call (a loaded 2-core box)
EVENTS = 1200
FIRST = 400  # produced and written before the load starts
SETTLE_S = 2.0  # load after the failover, past the breaker's reset
CHUNK = 20  # events produced every CHUNK_GAP_S while the failover runs, so writes meet it
CHUNK_GAP_S = 0.05


def load(url: str, users: list[str], stop: threading.Event, answers: list[Answer],
         client: int) -> None:
    """One client: features and predictions of the flow's users in turn."""
    n = client
    while not stop.is_set():
        n += 1
        ask(url, users[n % len(users)], n % 2 == 1, False, answers)


def produce_through(settings: Settings, records: list[tuple[str, bytes, int]],
                    over: threading.Event, sent_at: list[float]) -> None:
    """``records`` in chunks of :data:`CHUNK`, one every :data:`CHUNK_GAP_S` until ``over`` is
    set, then the rest at once, on one producer; the time each chunk began to be sent
    appended to ``sent_at``."""
    with EventProducer(settings) as producer:
        for start in range(0, len(records), CHUNK):
            end = start + CHUNK if not over.is_set() else len(records)
            sent_at.append(time.monotonic())
            for key, value, ts in records[start:end]:
                producer.send(key, value, ts)
            producer.flush()
            if end >= len(records):
                break
            over.wait(CHUNK_GAP_S)
    assert producer.failed == 0, producer.first_error


def is_fresh(answer: Answer) -> bool:
    """A 200 read from Redis now (the row found, no fallback)."""
    reply = answer.reply
    if reply is None or reply.status != 200:
        return False
    if answer.route == "/v1/features":
        return reply.body.get("found", True) is True and not reply.body.get("stale")
    return reply.body["fallback"] == "none" and reply.body["entities"]["user"]["found"] is True


def is_redis_unavailable(answer: Answer) -> bool:
    reply = answer.reply
    return (reply is not None and reply.status == 503
            and reply.body["error"] == "redis_unavailable")


def test_manual_failover_of_a_master_under_load(
        stack: LocalStack, redis_cluster: LocalRedisCluster, tmp_path: Path,
        chaos: Callable[[ChaosRow], None]) -> None:
    redis_cluster.flush()
    settings = isolated(stack, "rcfailover", redis_url=redis_cluster.url, redis_cluster=True,
                        models_dir=str(tmp_path / "models"), model_name=model_fixtures.NAME)
    model_fixtures.publish(settings.effective_models_dir, 1)
    events, by_user = good_events(seed=61, count=EVENTS)
    records = encoded(EventEncoder(registry_for(settings.schema_registry)), events)
    job_id = submit_job(settings, "features")
    reader = start_serve({**settings.to_env(), "FEATURESTREAM_SERVE_PORT": str(free_port()),
                          "FEATURESTREAM_REDIS_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
                          "FEATURESTREAM_CACHE_TTL_MS": "0"}, tmp_path / "serve.log")
    answers: list[Answer] = []
    stop = threading.Event()
    clients: list[threading.Thread] = []
    try:
        produce(settings, records[:FIRST])
        converge(settings, by_user_of(events[:FIRST]), job_id)
        users = sorted(by_user_of(events[:FIRST]))
        clients = [threading.Thread(target=load, args=(reader.url, users, stop, answers, i))
                   for i in range(CLIENTS)]
        for client in clients:
            client.start()
        wait_until(lambda: sum(is_fresh(a) for a in answers) >= 20, 20, "the load to run")

        failed_over, chunks_sent = threading.Event(), list[float]()
        flowing = threading.Thread(target=produce_through, args=(
            settings, records[FIRST:], failed_over, chunks_sent))
        started = time.monotonic()
        flowing.start()  # events flow through the failover
        new_master, old_master = redis_cluster.failover()
        done = time.monotonic()
        failed_over.set()
        flowing.join(60)
        wait_until(lambda: sum(is_fresh(a) for a in answers if a.sent > done) >= 20, 20,
                   "fresh answers after the failover")
        time.sleep(SETTLE_S)
        stop.set()
        for client in clients:
            client.join(HANG_S * 2)
        converged = converge(settings, by_user, job_id)
        job_failures = failures(settings, job_id)
    finally:
        stop.set()
        for client in clients:
            client.join(HANG_S * 2)
        reader.stop()
        cancel_job(settings, job_id)

    assert job_failures == 0, "the feature job failed during the failover"
    assert any(started < sent < done for sent in chunks_sent), "no events flowed during it"
    hung = [a for a in answers if a.reply is None]
    assert not hung, hung[:5]
    assert not [a.reply for a in answers if a.reply and a.reply.status >= 500
                and not is_redis_unavailable(a)], reader.log()[-3000:]
    before = [a for a in answers if ended(a) < started]
    after = [a for a in answers if a.sent > done]
    errors = [a for a in answers if not is_fresh(a)]
    assert before and all(is_fresh(a) for a in before), [a.reply for a in before
                                                         if not is_fresh(a)][:3]
    assert all(is_redis_unavailable(a) for a in errors), [a.reply for a in errors][:3]
    # errors only around the failover: none before it, none once the breaker had reset after
    # it and its probe had its Redis bound (twice over, on a loaded box)
    reset_s = settings.breaker_reset_ms / 1000 + 2 * REDIS_TIMEOUT_MS / 1000
    assert all(started <= ended(a) and a.sent <= done + reset_s for a in errors), [
        (round(a.sent - started, 2), a.reply) for a in errors][:5]
    stale_after = [a.sent for a in after if not is_fresh(a)]
    recovered = min(a.sent for a in after if not stale_after or a.sent > max(stale_after))
    assert sum(a.sent >= recovered for a in after) >= 20
    window = [a for a in answers if started <= a.sent <= done]
    slowest = max(a.reply.seconds for a in window if a.reply) if window else 0.0
    print(f"failover {new_master.port} <- {old_master.port} took {done - started:.2f} s; "
          f"{len(answers)} requests, {len(window)} during it, {len(errors)} errors (503), "
          f"slowest {slowest * 1000:.0f} ms; fresh from {recovered - done:+.2f} s after; rows = "
          f"oracle {converged - done:.1f} s after; feature job failures {job_failures}")
    chaos(ChaosRow(
        "redis cluster: manual failover of a master under load", len(events), len(by_user),
        0, 0, 0, max(recovered, started) - started,
        f"feature job on a 3+3 cluster, rows = oracle (job failures {job_failures}); "
        f"{CLIENTS} clients on /v1/features and /v1/predict: {len(answers)} requests, none "
        f"hung, no 500, {len(errors)} errors (503 redis_unavailable) during the "
        f"{done - started:.1f} s failover, fresh 200s after"))
