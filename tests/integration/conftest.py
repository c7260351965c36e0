"""A real stack for the integration tests: tansu, redis-server and a Flink session cluster on
free ports in a temporary home, so a running demo stack is never touched."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from featurestream.devstack import LocalStack
from featurestream.devstack.private import private_stack
from featurestream.flink_rest import FlinkRest
from featurestream.settings import Settings
from testing.reader_fixtures import RedisProcess


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with private_stack(Path(tmp_path_factory.mktemp("featurestream-home")),
                       checkpoint_interval_ms=2_000) as local:
        yield local


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own, on a free port (a module may seed it: override)."""
    process = RedisProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def flink_get(settings: Settings, path: str) -> Any:
    return FlinkRest(settings.flink_rest_url).call(path)


def job_diagnostics(settings: Settings, job_id: str) -> str:
    """The job's state, vertex states and latest exception, for failure messages."""
    job = flink_get(settings, f"/jobs/{job_id}")
    vertices = ", ".join(f"{v['name'][:40]}={v['status']}" for v in job["vertices"])
    entries = job_exceptions(settings, job_id)
    latest = entries[0][:3000] if entries else "no exceptions"
    return f"job {job['state']}: {vertices}\n{latest}"


def job_exceptions(settings: Settings, job_id: str) -> list[str]:
    """Stack traces of every failure (and restart) the job has had."""
    return FlinkRest(settings.flink_rest_url).exceptions(job_id)


def cancel_job(settings: Settings, job_id: str) -> None:
    FlinkRest(settings.flink_rest_url).cancel(job_id)


def read_topic(settings: Settings, topic: str, partitions: int) -> list:
    """Every record currently in ``topic`` (reads until no record arrives for 3 s)."""
    consumer = Consumer(settings.kafka_config({"group.id": "tests", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records = []
    try:
        while batch := consumer.consume(1000, timeout=3):
            records += [m for m in batch if m.error() is None]
    finally:
        consumer.close()
    return records


def wait_for(check: Callable[[], bool], timeout_s: float, what: str,
             diagnostics: Callable[[], str] = str) -> None:
    """Poll ``check`` every 2 s until it holds; fail naming ``what``, with the diagnostics."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}\n{diagnostics()}")
