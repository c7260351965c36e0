"""The embedded local stack: Kafka (tansu), Redis and a Flink session cluster on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from featurestream.devstack import submissions
from featurestream.devstack.component import Component, ComponentStatus, Echo
from featurestream.devstack.endpoints import Endpoints
from featurestream.devstack.flink import FlinkCluster
from featurestream.devstack.kafka import KafkaBroker
from featurestream.devstack.paths import StackPaths
from featurestream.devstack.redis_server import RedisServer
from featurestream.settings import Settings


class LocalStack:
    """Starts, stops and inspects the servers of one ``settings.home``.

    ``echo`` receives one line per lifecycle event (default: print).
    """

    def __init__(self, settings: Settings, echo: Echo = print) -> None:
        self.settings = settings
        self.echo = echo
        self.paths = StackPaths(settings.home)
        endpoints = Endpoints.from_settings(settings)
        self.kafka = KafkaBroker(settings, self.paths, endpoints)
        self.redis = RedisServer(self.paths, endpoints.redis)
        self.flink = FlinkCluster(settings, self.paths, endpoints)

    @property
    def components(self) -> tuple[Component, ...]:
        """Kafka, Redis, Flink: the start order."""
        return (self.kafka, self.redis, self.flink)

    @property
    def flink_home(self) -> Path:
        """The clean FLINK_HOME; submit jobs with its ``bin/flink``."""
        return self.paths.flink_home

    def up(self) -> None:
        """Start what is not running (after checking all of it can start); create the topics.
        A broker started here is empty: the jobs still running are resumed with their source
        positions reset (``submissions.reset_source_positions``)."""
        for component in self.components:
            component.check_startable(self.echo)
        new_broker = not self.kafka.running()
        for component in self.components:
            if component.running():
                self.echo(f"{component.name} already up on {component.address}")
            else:
                component.start(self.echo)
        self.kafka.ensure_topics(self.echo)
        if new_broker:
            submissions.reset_source_positions(self.settings.home, self.flink.rest,
                                               self.settings, self.echo)

    def down(self) -> None:
        """Stop everything this stack started (Flink first); idempotent.

        The jobs running stop with it on purpose: they are dropped from the record `up` resumes
        lost jobs from (a JobManager that died is another matter), so the next `up` starts none
        twice beside a fresh submission. Their retained checkpoints stay on disk.
        """
        stopping = submissions.forget_running(self.settings.home, self.flink.rest, self.settings)
        if stopping:
            self.echo(f"{stopping} submitted job(s) stop with the stack and are not resumed "
                      "by the next up (resume one with featurestream submit JOB "
                      "--from-savepoint PATH, e.g. its last retained checkpoint)")
        for component in reversed(self.components):
            component.stop(self.echo)

    def status(self) -> list[ComponentStatus]:
        """One status per component."""
        return [component.status() for component in self.components]
