"""Dead-letter records: the original bytes plus Kafka Connect style error headers."""

from __future__ import annotations

from featurestream.udfs.wire.frames import SourceRecord, encode_sink_frame

HEADER_TOPIC = "__connect.errors.topic"
HEADER_PARTITION = "__connect.errors.partition"
HEADER_OFFSET = "__connect.errors.offset"
HEADER_STAGE = "__connect.errors.stage"
HEADER_EXCEPTION_CLASS = "__connect.errors.exception.class.name"
HEADER_EXCEPTION_MESSAGE = "__connect.errors.exception.message"
HEADER_MODEL_VERSION = "__connect.errors.model.version"  # scoring: the version routed to


def dlq_headers(record: SourceRecord, stage: str, error_class: str, message: str,
                model_version: int | None = None) -> list[tuple[str, bytes]]:
    """Headers naming where the record came from, the failing stage and the error.

    Scoring adds the model version the record was routed to, when it got that far.
    """
    headers = [
        (HEADER_TOPIC, record.topic.encode()),
        (HEADER_PARTITION, str(record.partition).encode()),
        (HEADER_OFFSET, str(record.offset).encode()),
        (HEADER_STAGE, stage.encode()),
        (HEADER_EXCEPTION_CLASS, error_class.encode()),
        (HEADER_EXCEPTION_MESSAGE, message.encode()),
    ]
    if model_version is not None:
        headers.append((HEADER_MODEL_VERSION, str(model_version).encode()))
    return headers


def dlq_frame(dlq_topic: str, record: SourceRecord, stage: str, error_class: str,
              message: str, key: bytes | None = None, model_version: int | None = None) -> bytes:
    """A sink frame for ``dlq_topic`` whose value is the record's original bytes."""
    headers = dlq_headers(record, stage, error_class, message, model_version)
    return encode_sink_frame(dlq_topic, key, record.value, headers)
