"""Redis outages under the feature job (issue 13, scenario 4).

Stopped for 30 s while events flow (the process gone; it comes back with its data, as a
persistent Redis does): the job waits for it (bounded retries with backoff, backpressure to
Kafka), and every row equals the oracle afterwards, with the job's restarts counted from Flink
REST. Restarted empty: ``featurestream rematerialize`` rewrites every entity's row from the
job's own state, each equal to the oracle again.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.private import isolated
from featurestream.flink_rest import FlinkRest
from featurestream.jobs import JOB_NAMES
from featurestream.jobs.redis_target import sync_client
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.store.redis_layout import decode_row, user_key
from testing.chaos import ChaosRow
from tests.integration.conftest import cancel_job, job_diagnostics, job_exceptions, wait_for
from tests.integration.test_feature_job import encoded, good_events, produce
from tests.oracle import assert_row_matches, expected_row

pytestmark = pytest.mark.flink

OUTAGE_S = 30


def failures(settings: Settings, job_id: str) -> int:
    """How often the job failed, so Flink restarted it (its exception history, Flink REST)."""
    return len(job_exceptions(settings, job_id))


def rows(settings: Settings, users: list[str]) -> dict[str, dict]:
    """Every user's row as stored (an empty dict: no row), on a Redis Cluster too."""
    client = sync_client(settings.redis_url, settings.redis_cluster)
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hgetall(user_key(settings.redis_key_prefix, user, cluster=settings.redis_cluster))
    return {user: decode_row(h) for user, h in zip(users, pipe.execute(), strict=True)}


def by_user_of(events: list[Event]) -> dict[str, list[Event]]:
    """``events`` by user."""
    grouped: dict[str, list[Event]] = {}
    for event in events:
        grouped.setdefault(event.user_id, []).append(event)
    return grouped


def mismatches(settings: Settings, by_user: dict[str, list[Event]]) -> list[str]:
    """The users whose row is missing, has not counted all their events yet, or differs from
    the oracle as of its ``as_of``."""
    wrong = []
    for user, row in rows(settings, sorted(by_user)).items():
        events = by_user[user]
        if not row or row["as_of"] < max(e.ts for e in events):
            wrong.append(user)
            continue
        try:
            assert_row_matches(row, expected_row(events, row["as_of"]), user)
        except AssertionError:
            wrong.append(user)
    return wrong


def converge(settings: Settings, by_user: dict[str, list[Event]], job_id: str,
             timeout_s: float = 120) -> float:
    """Wait until every row equals the oracle; returns when (monotonic)."""
    wrong: list[str] = []

    def converged() -> bool:
        wrong[:] = mismatches(settings, by_user)
        return not wrong

    wait_for(converged, timeout_s, "every row equal to the oracle",
             lambda: f"{len(wrong)} users wrong, e.g. {wrong[:3]}\n"
                     f"{job_diagnostics(settings, job_id)}")
    return time.monotonic()


def stop_redis(stack: LocalStack, keep_data: bool) -> None:
    """The Redis process gone: shut down after saving its data (a persistent Redis), or
    terminated (the local stack's, which keeps nothing)."""
    if keep_data:
        with contextlib.suppress(redis.ConnectionError):  # it may go before it answers
            stack.redis.client().shutdown(save=True)
        wait_for(lambda: stack.redis.pid() is None, 30, "redis-server to exit")
    stack.redis.stop(echo=lambda line: None)


def start_redis(stack: LocalStack) -> None:
    """Start the stack's Redis again (with the data a ``keep_data`` stop saved, which is then
    deleted: the next start is empty again)."""
    stack.redis.start(echo=lambda line: None)
    Path(stack.redis.log_file.parent, "dump.rdb").unlink(missing_ok=True)


def test_redis_stopped_30s_while_events_flow(stack: LocalStack,
                                             chaos: Callable[[ChaosRow], None]) -> None:
    """The job waits for Redis and writes every row once it is back: none of the events
    produced during the outage comes after it, so each of their rows must be written
    unprompted (a job that dropped a failed write would leave them stale)."""
    settings = isolated(stack, "redis-outage")
    job_id = submit_job(settings, "features")
    try:
        events, by_user = good_events(seed=41, count=1500)
        records = encoded(EventEncoder(registry_for(settings.schema_registry)), events)
        produce(settings, records[:500])
        converge(settings, by_user_of(events[:500]), job_id)

        stop_redis(stack, keep_data=True)
        during = records[500:]
        chunk = len(during) // 5
        for start in range(0, len(during), chunk):  # events flow through the outage
            produce(settings, during[start:start + chunk])
            time.sleep(OUTAGE_S / 5)
        start_redis(stack)
        back = time.monotonic()

        recovered = converge(settings, by_user, job_id)
        failed = failures(settings, job_id)
        chaos(ChaosRow("redis stopped 30 s", len(events), len(by_user), 0, 0, 0,
                       recovered - back, f"rows = oracle; the job failed {failed} time(s) "
                       "(Flink REST exception history)"))
        assert failed == 0, job_diagnostics(settings, job_id)  # it waited, within the budget
    finally:
        cancel_job(settings, job_id)


def test_redis_restarted_empty_then_rematerialize(stack: LocalStack,
                                                  chaos: Callable[[ChaosRow], None]) -> None:
    settings = isolated(stack, "redis-empty")
    job_id = submit_job(settings, "features")
    try:
        events, by_user = good_events(seed=43, count=800)
        produce(settings, encoded(EventEncoder(registry_for(settings.schema_registry)), events))
        converge(settings, by_user, job_id)

        stop_redis(stack, keep_data=False)
        start_redis(stack)
        lost = sum(1 for row in rows(settings, sorted(by_user)).values() if not row)
        assert lost > 0  # and no event of theirs comes to write them back
        started = time.monotonic()
        out = subprocess.run([str(Path(sys.executable).parent / "featurestream"),
                              "rematerialize", "--timeout", "180"],
                             env={**os.environ, **settings.to_env()}, capture_output=True,
                             text=True, check=False, timeout=300)
        print(out.stdout, out.stderr)
        assert out.returncode == 0, out.stderr
        assert "waiting for the first checkpoint" in out.stdout  # progress while it runs
        assert "every entity's row rewritten" in out.stdout
        job_id = FlinkRest(settings.flink_rest_url).running_job(JOB_NAMES["features"]) or job_id
        wrong = mismatches(settings, by_user)  # as the command returns, not eventually
        chaos(ChaosRow("redis restarted empty + rematerialize", len(events), len(by_user),
                       len(wrong), 0, 0, time.monotonic() - started,
                       f"{lost} rows gone, every row back = oracle when the command returned"))
        assert wrong == []
    finally:
        cancel_job(settings, job_id)


def test_rematerialize_without_a_running_job_names_the_fix(stack: LocalStack) -> None:
    settings = isolated(stack, "redis-nojob")
    out = subprocess.run([str(Path(sys.executable).parent / "featurestream"), "rematerialize"],
                         env={**os.environ, **settings.to_env()}, capture_output=True,
                         text=True, check=False, timeout=60)
    assert out.returncode != 0
    assert "no featurestream-features job is running" in out.stderr
    assert "featurestream submit features" in out.stderr
