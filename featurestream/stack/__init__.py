"""The embedded local stack (``featurestream up|down|status``): Kafka, Redis, Flink on 127.0.0.1."""

from featurestream.stack.component import ComponentStatus, Job
from featurestream.stack.local import LocalStack

__all__ = ["ComponentStatus", "Job", "LocalStack"]
