"""The embedded stack for real: up on free ports in a temp home, status, topics, a PyFlink job on
the cluster, a harmless second ``up``, then ``down`` leaving no process of this home behind."""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from featurestream.devstack import LocalStack, process
from featurestream.devstack.private import private_settings
from featurestream.errors import UserFacingError
from featurestream.flink_rest import FlinkRest

pytestmark = pytest.mark.flink

SMOKE_JOB = textwrap.dedent("""
    import sys
    from pyflink.common import WatermarkStrategy
    from pyflink.common.serialization import ByteArraySchema
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    env = StreamExecutionEnvironment.get_execution_environment()
    source = (KafkaSource.builder().set_bootstrap_servers(sys.argv[1]).set_topics(sys.argv[2])
              .set_group_id("stack-smoke").set_starting_offsets(KafkaOffsetsInitializer.earliest())
              .set_value_only_deserializer(ByteArraySchema()).build())
    env.from_source(source, WatermarkStrategy.no_watermarks(), "events") \\
        .map(lambda value: len(value)).filter(lambda n: n < 0).print()
    env.execute("stack-smoke")
""")


def processes_of(home: Path) -> list[int]:
    """Processes whose command line, environment or cwd mentions ``home``."""
    text = str(home)
    return [
        pid for pid in process.all_pids()
        if pid != os.getpid() and process.alive(pid) and (
            text in process.cmdline(pid) or process.cwd(pid).startswith(text)
            or any(text in value for value in process.environ(pid).values()))
    ]


@pytest.fixture()
def fresh_stack(tmp_path: Path) -> Iterator[LocalStack]:
    local = LocalStack(private_settings(tmp_path / "home"), echo=lambda line: None)
    try:
        yield local
    finally:
        local.down()


def test_up_status_job_up_again_down(fresh_stack: LocalStack, tmp_path: Path) -> None:
    stack = fresh_stack
    settings = stack.settings
    lines: list[str] = []
    stack.echo = lines.append

    stack.up()
    statuses = {s.name: s for s in stack.status()}
    assert set(statuses) == {"kafka", "redis", "flink"}
    assert all(s.up and s.pid for s in statuses.values()), statuses
    assert statuses["flink"].address == settings.flink_rest_url
    assert any(f"{name} ready in" in line for line in lines for name in ("kafka", "redis"))
    assert any("flink taskmanager ready in" in line for line in lines)

    topics = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(
        timeout=10).topics
    for name in (settings.events_topic, settings.events_dlq_topic, settings.scores_topic,
                 settings.scores_dlq_topic):
        assert len(topics[name].partitions) == settings.topic_partitions

    lib = {p.name for p in (stack.flink_home / "lib").iterdir()}
    assert {"flink-dist-2.0.2.jar", "flink-python-2.0.2.jar", "flink-connector-kafka.jar",
            "kafka-clients.jar"} <= lib
    assert not {"flink-core.jar", "flink-runtime.jar", "flink-streaming-java.jar"} & lib

    # A Python job on the cluster reads the events topic through the lib/ Kafka connector.
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(100):
        producer.produce(settings.events_topic, value=b"event %d" % i)
    assert producer.flush(10) == 0
    del producer  # else librdkafka keeps reconnecting (and logging) after down
    job_file = tmp_path / "smoke_job.py"
    job_file.write_text(SMOKE_JOB)
    submitted = subprocess.run(
        [str(stack.flink_home / "bin" / "flink"), "run", "-d", "-py", str(job_file),
         settings.kafka_bootstrap, settings.events_topic],
        capture_output=True, text=True, timeout=120, check=False)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.split("JobID")[-1].split()[0]
    rest = FlinkRest(settings.flink_rest_url, timeout_s=5)
    deadline, records = time.monotonic() + 120, 0
    while time.monotonic() < deadline and records < 100:
        job = rest.job(job_id)
        assert job["state"] in ("CREATED", "INITIALIZING", "RUNNING"), job["state"]
        vertex = job["vertices"][0]["id"]
        metrics = rest.call(f"/jobs/{job_id}/vertices/{vertex}/metrics"
                            "?get=0.Source__events.numRecordsOut")
        records = int(metrics[0]["value"]) if metrics else 0
        time.sleep(1)
    assert records == 100
    flink_status = next(s for s in stack.status() if s.name == "flink")
    assert [(j.id, j.state) for j in flink_status.jobs] == [(job_id, "RUNNING")]
    workers = stack.flink.python_workers()
    assert workers, "the job's Python workers should belong to this FLINK_HOME"

    lines.clear()
    stack.up()
    assert [line for line in lines if "already up" in line] == [
        f"{c.name} already up on {c.address}" for c in stack.components]

    # Python workers orphaned by a lost TaskManager: ours go, another home's stay.
    def fake_worker(flink_conf: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["bash", "-c", "exec -a pyflink-udf-runner.sh sleep 300"],
                                env={**os.environ, "FLINK_CONF_DIR": str(flink_conf)})

    ours = fake_worker(stack.flink_home / "conf")
    foreign = fake_worker(tmp_path / "other-home" / "flink" / "conf")
    try:
        taskmanager = stack.flink.taskmanager_pid()
        assert taskmanager is not None
        daemons = [s.pid for s in statuses.values() if s.pid is not None] + [taskmanager]
        stack.down()
        assert not any(s.up for s in stack.status())
        assert not any(process.alive(pid) for pid in [*daemons, *workers, ours.pid])
        assert process.alive(foreign.pid)
        assert processes_of(settings.home) == []
        assert not any(process.port_open(p) for p in (
            int(settings.kafka_bootstrap.rsplit(":", 1)[1]),
            int(settings.flink_rest_url.rsplit(":", 1)[1])))
    finally:
        foreign.kill()
        foreign.wait()
        ours.wait()

    lines.clear()
    stack.down()
    assert lines == ["flink already down", "redis already down", "kafka already down"]


def test_port_taken_by_foreign_process_names_the_variable(tmp_path: Path) -> None:
    local = LocalStack(private_settings(tmp_path / "home"), echo=lambda line: None)
    port = int(local.settings.kafka_bootstrap.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(UserFacingError, match=rf"port {port}.*FEATURESTREAM_KAFKA_BOOTSTRAP"):
            local.up()
    assert not any(s.up for s in local.status())
    assert processes_of(local.settings.home) == []


def test_status_and_down_of_a_home_that_never_ran(tmp_path: Path) -> None:
    local = LocalStack(private_settings(tmp_path / "home"), echo=lambda line: None)
    assert [(s.name, s.up) for s in local.status()] == [
        ("kafka", False), ("redis", False), ("flink", False)]
    local.down()
