"""``featurestream consume TOPIC``: tail the scores or a dead-letter topic as JSON lines.

Scores are decoded (Avro, ``schemas/score.avsc``); dead letters show their error headers and a
short excerpt of the original bytes. Reads committed records only, like any downstream consumer
of the exactly-once scoring job.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    TopicPartition,
)

from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.score_codec import ScoreCodec

_EXCERPT = 80
_log = logging.getLogger("featurestream.kafka")  # librdkafka's lines: silent unless configured
_log.addHandler(logging.NullHandler())


Headers = Mapping[str, bytes | str | None] | Sequence[tuple[str, bytes | str | None]]


class Record(Protocol):
    """What is read of a Kafka message (confluent-kafka's ``Message`` has it)."""

    def value(self) -> bytes | str | None: ...

    def key(self) -> bytes | str | None: ...

    def headers(self) -> Headers | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...


def _bytes(value: bytes | str | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


def _topic(settings: Settings, role: str) -> str:
    return {"scores": settings.scores_topic, "scores.dlq": settings.scores_dlq_topic,
            "events.dlq": settings.events_dlq_topic}[role]


def describe_score(codec: ScoreCodec, message: Record, with_features: bool) -> dict[str, Any]:
    """A scores record as a dict (features left out unless asked for)."""
    try:
        score = codec.decode(_bytes(message.value()))
    except (ValueError, LookupError, EOFError) as exc:
        return {"partition": message.partition(), "offset": message.offset(),
                "undecodable": str(exc)}
    if not with_features:
        score.pop("features")
    return score


def describe_dead_letter(message: Record) -> dict[str, Any]:
    """A dead letter: its error headers (short names) and the start of the original bytes."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    headers = {name.removeprefix("__connect.errors."): _bytes(value).decode(errors="replace")
               for name, value in pairs}
    value = _bytes(message.value())
    excerpt = value[:_EXCERPT].decode(errors="backslashreplace")
    return {**headers, "key": _bytes(message.key()).decode(errors="replace"),
            "value": excerpt + ("..." if len(value) > _EXCERPT else "")}


def committed_consumer(settings: Settings, purpose: str,
                       config: Mapping[str, Any] | None = None) -> Consumer:
    """A consumer of committed records only (what downstream of the exactly-once scoring job
    sees), for ``assign``: it never joins its group nor commits; librdkafka's lines stay quiet."""
    return Consumer(settings.kafka_config({
        "group.id": f"featurestream-{purpose}-{os.getpid()}",  # required; never joined
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "logger": _log,
        **(config or {}),
    }))


def topic_partitions(consumer: Consumer, topic: str) -> list[int]:
    """The partition numbers of ``topic`` (KafkaException if Kafka cannot be reached)."""
    return sorted(consumer.list_topics(topic, timeout=5).topics[topic].partitions)


def unreachable(settings: Settings, topic: str, exc: KafkaException) -> UserFacingError:
    """The one-line error when ``topic`` cannot be read."""
    return UserFacingError(f"cannot read {topic} from {settings.kafka_bootstrap}: {exc}; "
                           "is Kafka up (featurestream status)?")


def consume_command(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: print records as JSON lines until --limit, --timeout or Ctrl-C."""
    topic = _topic(settings, args.topic)
    codec = ScoreCodec(registry_for(settings.schema_registry), f"{topic}-value")
    consumer = committed_consumer(settings, "consume")
    printed, idle_since = 0, time.monotonic()
    try:
        start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start)
                         for p in topic_partitions(consumer, topic)])
        while not args.limit or printed < args.limit:
            message = consumer.poll(0.5)
            if message is None:
                if args.timeout and time.monotonic() - idle_since > args.timeout:
                    break
                continue
            error = message.error()
            if error is not None:
                raise UserFacingError(f"reading {topic} from {settings.kafka_bootstrap} "
                                      f"failed: {error.str()}")
            idle_since = time.monotonic()
            record = (describe_score(codec, message, args.features) if args.topic == "scores"
                      else describe_dead_letter(message))
            print(json.dumps(record), flush=True)
            printed += 1
    except KafkaException as exc:
        raise unreachable(settings, topic, exc) from None
    finally:
        consumer.close()
    return 0
