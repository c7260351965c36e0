"""Development tooling, never shipped with the jobs: the embedded local stack
(``featurestream up|down|status``: tansu Kafka, Redis, Flink on 127.0.0.1), event producers and
the synthetic generator."""

from featurestream.devstack.component import ComponentStatus, Job
from featurestream.devstack.local import LocalStack

__all__ = ["ComponentStatus", "Job", "LocalStack"]
