"""The local stack's pure logic: port derivation, lib/ jar selection, Flink config rendering,
file layout and status lines (no JVM, no servers)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pytest

from featurestream.devstack import ComponentStatus, Job
from featurestream.devstack.commands import status_lines
from featurestream.devstack.endpoints import Endpoints
from featurestream.devstack.flink_home import (
    CONNECTOR_DIST,
    FLINK_DIST,
    config_template,
    config_values,
    render_config,
    select_lib_jars,
    wheel_files,
)
from featurestream.devstack.paths import StackPaths
from featurestream.errors import UserFacingError
from featurestream.settings import Settings

FLINK_RECORD = [PurePosixPath(p) for p in (
    "pyflink/lib/flink-dist-2.0.2.jar", "pyflink/lib/flink-table-runtime-2.0.2.jar",
    "pyflink/lib/log4j-api-2.24.3.jar", "pyflink/opt/flink-python-2.0.2.jar",
    "pyflink/opt/flink-sql-client-2.0.2.jar", "pyflink/bin/bash-java-utils.jar",
    "pyflink/plugins/metrics-jmx/flink-metrics-jmx-2.0.2.jar", "pyflink/lib/README.txt",
)]
CONNECTOR_RECORD = [PurePosixPath(f"pyflink/lib/{name}") for name in (
    "flink-core.jar", "flink-runtime.jar", "flink-streaming-java.jar", "flink-connector-base.jar",
    "flink-connector-kafka.jar", "kafka-clients.jar", "zstd-jni.jar", "lz4-java.jar",
)]


def local_settings(tmp_path: Path, **changes: object) -> Settings:
    defaults = {"home": tmp_path / "home", "kafka_bootstrap": "127.0.0.1:19092",
                "redis_url": "redis://127.0.0.1:16379/0", "flink_rest_url": "http://127.0.0.1:18081"}
    return Settings().replace(**{**defaults, **changes})


def parse_flat_yaml(text: str) -> dict[str, object]:
    """Flink's flat ``key: value`` config; quoted values are JSON strings."""
    config: dict[str, object] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(": ")
            config[key] = json.loads(value) if value.startswith('"') else value
    return config


# -- ports -------------------------------------------------------------------------------------

def test_ports_come_from_the_settings_and_rpc_is_rest_plus_one(tmp_path: Path) -> None:
    endpoints = Endpoints.from_settings(local_settings(tmp_path))
    assert (endpoints.kafka.port, endpoints.redis.port) == (19092, 16379)
    assert (endpoints.flink_rest.port, endpoints.flink_rpc.port) == (18081, 18082)
    assert (endpoints.flink_jobmanager_metrics.port,
            endpoints.flink_taskmanager_metrics.port) == (18083, 18084)
    assert endpoints.flink_rpc.variable == "FEATURESTREAM_FLINK_REST_URL"
    assert endpoints.kafka.address == "127.0.0.1:19092"


def test_localhost_is_accepted(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, kafka_bootstrap="localhost:9999")
    assert Endpoints.from_settings(settings).kafka.address == "127.0.0.1:9999"


@pytest.mark.parametrize(("field", "value", "variable"), [
    ("kafka_bootstrap", "kafka.example.com:9092", "FEATURESTREAM_KAFKA_BOOTSTRAP"),
    ("kafka_bootstrap", "127.0.0.1:1,127.0.0.1:2", "FEATURESTREAM_KAFKA_BOOTSTRAP"),
    ("redis_url", "redis://10.0.0.5:6379/0", "FEATURESTREAM_REDIS_URL"),
    ("redis_url", "redis://127.0.0.1/0", "FEATURESTREAM_REDIS_URL"),
    ("flink_rest_url", "http://127.0.0.1:65535", "FEATURESTREAM_FLINK_REST_URL"),
    ("flink_rest_url", "http://127.0.0.1:notaport", "FEATURESTREAM_FLINK_REST_URL"),
])
def test_non_local_or_bad_addresses_name_the_variable(
        tmp_path: Path, field: str, value: str, variable: str) -> None:
    settings = local_settings(tmp_path, **{field: value})
    with pytest.raises(UserFacingError, match=variable):
        Endpoints.from_settings(settings)


# -- lib/ jars ---------------------------------------------------------------------------------

def test_lib_gets_flink_jars_python_jar_and_kafka_connector_only() -> None:
    names = [jar.name for jar in select_lib_jars(FLINK_RECORD, CONNECTOR_RECORD)]
    assert names == sorted([
        "flink-dist-2.0.2.jar", "flink-table-runtime-2.0.2.jar", "log4j-api-2.24.3.jar",
        "flink-python-2.0.2.jar", "flink-connector-kafka.jar", "kafka-clients.jar",
        "zstd-jni.jar",
    ])


def test_missing_connector_jar_names_the_wheel_to_reinstall() -> None:
    without_kafka = [f for f in CONNECTOR_RECORD if f.name != "kafka-clients.jar"]
    with pytest.raises(UserFacingError, match=f"kafka-clients.jar.*{CONNECTOR_DIST}"):
        select_lib_jars(FLINK_RECORD, without_kafka)


@pytest.mark.parametrize("missing", ["flink-dist-2.0.2.jar", "flink-python-2.0.2.jar"])
def test_missing_flink_jar_names_the_wheel_to_reinstall(missing: str) -> None:
    record = [f for f in FLINK_RECORD if f.name != missing]
    with pytest.raises(UserFacingError, match=FLINK_DIST):
        select_lib_jars(record, CONNECTOR_RECORD)


def test_installed_wheels_give_no_stray_2_0_0_jars() -> None:
    jars = select_lib_jars(wheel_files(FLINK_DIST), wheel_files(CONNECTOR_DIST))
    names = {jar.name for jar in jars}
    assert {"flink-dist-2.0.2.jar", "flink-python-2.0.2.jar", "flink-connector-kafka.jar",
            "kafka-clients.jar", "zstd-jni.jar"} <= names
    assert not {"flink-core.jar", "flink-runtime.jar", "flink-streaming-java.jar",
                "flink-connector-base.jar"} & names


# -- config ------------------------------------------------------------------------------------

def rendered(settings: Settings) -> dict[str, object]:
    values = config_values(settings, StackPaths(settings.home), Endpoints.from_settings(settings))
    text = render_config(config_template(), values)
    assert "${" not in "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return parse_flat_yaml(text)


def test_config_binds_to_loopback_with_derived_ports(tmp_path: Path) -> None:
    config = rendered(local_settings(tmp_path))
    for key in ("jobmanager.rpc.address", "jobmanager.bind-host", "taskmanager.host",
                "taskmanager.bind-host", "rest.address", "rest.bind-address"):
        assert config[key] == "127.0.0.1", key
    assert (config["rest.port"], config["jobmanager.rpc.port"]) == ("18081", "18082")
    assert "blob.server.port" not in config  # ephemeral (Flink default), so stacks never collide


def test_config_sizing_state_and_python(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, python_executable="/opt/my venv/bin/python")
    config = rendered(settings)
    assert config["taskmanager.numberOfTaskSlots"] == "2"
    assert config["taskmanager.memory.process.size"] == "4096m"
    assert config["jobmanager.memory.process.size"] == "1600m"
    assert config["state.backend.type"] == "hashmap"
    assert config["python.executable"] == config["python.client.executable"] == (
        "/opt/my venv/bin/python")
    assert "--add-opens=java.base/java.util=ALL-UNNAMED" in str(config["env.java.opts.all"])


def test_config_paths_live_under_home(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    config = rendered(settings)
    home = settings.home
    assert config["env.pid.dir"] == str(home / "run")
    assert config["env.log.dir"] == str(home / "logs" / "flink")
    assert config["io.tmp.dirs"] == str(home / "flink" / "tmp")
    checkpoints = (home / "checkpoints").resolve().as_uri()
    assert config["execution.checkpointing.dir"] == checkpoints
    assert config["execution.checkpointing.savepoint-dir"] == f"{checkpoints}/savepoints"


def test_explicit_checkpoint_dir_is_used(tmp_path: Path) -> None:
    config = rendered(local_settings(tmp_path, checkpoint_dir="s3://bucket/ckpt/"))
    assert config["execution.checkpointing.dir"] == "s3://bucket/ckpt"
    assert config["execution.checkpointing.savepoint-dir"] == "s3://bucket/ckpt/savepoints"


# -- layout and status -------------------------------------------------------------------------

def test_layout_under_home(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    assert paths.pid_file("kafka") == tmp_path / "run" / "kafka.pid"
    assert paths.log_file("redis") == tmp_path / "logs" / "redis.log"
    assert paths.flink_pid_file("taskexecutor") == (
        tmp_path / "run" / "flink-featurestream-taskexecutor.pid")
    assert paths.flink_log_file("standalonesession").parent == tmp_path / "logs" / "flink"


def test_status_lines() -> None:
    lines = status_lines([
        ComponentStatus("kafka", True, "127.0.0.1:9092", 11, "topics: events"),
        ComponentStatus("redis", False, "127.0.0.1:6379"),
        ComponentStatus("flink", True, "http://127.0.0.1:8081", 12, "web UI x",
                        (Job("abc", "features", "RUNNING"),)),
    ])
    assert lines == [
        "kafka   up    127.0.0.1:9092  pid 11  topics: events",
        "redis   down  127.0.0.1:6379",
        "flink   up    http://127.0.0.1:8081  pid 12  web UI x",
        "         job features  abc  RUNNING",
    ]
