"""Dead letters: why a record was not processed (:class:`Problem`), and the record that goes to
the dead-letter topic (the original bytes plus Kafka Connect style error headers).

Errors are data across the pipeline: decoding, windowing, vector assembly and scoring each
return a :class:`Problem` instead of raising, and the job routes it here. The stage and the
error class are enums, so they are safe to count, alert on and compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from featurestream.udfs.wire.frames import SourceRecord, encode_sink_frame


class Stage(StrEnum):
    """Where in the pipeline a record failed (the ``__connect.errors.stage`` header)."""

    DECODE = "decode"  # bytes -> event (both jobs)
    WINDOW = "window"  # the feature job's event-time bounds: late, expired or in the future
    FEATURES = "features"  # the scoring job's feature vector
    MODEL = "model"  # the scoring job's model


class ErrorClass(StrEnum):
    """Stable names for why a record failed (the ``...exception.class.name`` header)."""

    # decode
    MALFORMED_RECORD = "MalformedRecord"  # not a readable Avro frame or JSON object
    UNKNOWN_SCHEMA_ID = "UnknownSchemaId"  # the frame names a schema the registry lacks
    INCOMPATIBLE_SCHEMA = "IncompatibleSchema"  # the writer schema cannot be read as UserEvent
    SCHEMA_VIOLATION = "SchemaViolation"  # missing field, wrong type, unknown event_type
    INVALID_VALUE = "InvalidValue"  # well-typed but breaks a rule (empty user_id, amount...)
    # window
    LATE_EVENT = "LateEvent"  # further behind the watermark than the allowed lateness
    EXPIRED_EVENT = "ExpiredEvent"  # older than the largest window as of the entity's row
    # Further ahead of the wall clock than FEATURESTREAM_MAX_FUTURE_SKEW_MS. Refused by the
    # sharding stage, before its event time can reach the watermark, but stage "window", not
    # "decode": the record decoded fine (nothing is wrong with its bytes or schema); like
    # LateEvent and ExpiredEvent it lies outside the event times the windows accept, and
    # alerts on the window stage are the ones about producers' clocks and event time.
    FUTURE_EVENT = "FutureEvent"
    # features
    UNKNOWN_USER = "UnknownUser"  # no feature row, and the model declares no default
    MISSING_FEATURE = "MissingFeature"  # a feature without value or default
    NON_FINITE_FEATURE = "NonFiniteFeature"  # NaN or infinity in the vector
    CORRUPT_FEATURE_ROW = "CorruptFeatureRow"  # the stored row cannot be read
    # The feature job did not capture the event's rows within FEATURESTREAM_POINT_IN_TIME_WAIT_MS.
    FEATURES_NOT_READY = "FeaturesNotReady"
    # model
    MODEL_UNAVAILABLE = "ModelUnavailable"  # the routed version cannot be loaded
    PREDICT_FAILED = "PredictFailed"  # the model raised
    NON_FINITE_SCORE = "NonFiniteScore"  # the model returned NaN or infinity


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a record was not processed: the failing stage, a stable error class and a precise
    message for humans.

    ``exception_class`` is set when the problem is an exception raised by code we do not own
    (a model's ``predict``): the dead letter's class header then names that exception, as Kafka
    Connect's does and as the README documents, while ``error_class`` still says what kind of
    failure it was.
    """

    stage: Stage
    error_class: ErrorClass
    message: str
    exception_class: str | None = None

    def __str__(self) -> str:
        return f"{self.error_class}: {self.message}"


HEADER_TOPIC = "__connect.errors.topic"
HEADER_PARTITION = "__connect.errors.partition"
HEADER_OFFSET = "__connect.errors.offset"
HEADER_STAGE = "__connect.errors.stage"
HEADER_EXCEPTION_CLASS = "__connect.errors.exception.class.name"
HEADER_EXCEPTION_MESSAGE = "__connect.errors.exception.message"
HEADER_MODEL_VERSION = "__connect.errors.model.version"  # scoring: the version routed to
HEADER_ORIGINAL_BYTES = "featurestream.original.bytes"  # the value's full size, when it was cut

# A dead letter keeps at most this much of the record's value (and of its key and message):
# Kafka's Java producer refuses a record over max.request.size (1 MiB by default) and the job
# would fail on it at every replay -- one oversized bad record would stop the pipeline. The
# whole record stays in its topic, at the partition and offset the headers name.
MAX_VALUE_BYTES = 512 * 1024
MAX_KEY_BYTES = 1024
MAX_MESSAGE_CHARS = 1000


def dlq_headers(record: SourceRecord, problem: Problem,
                model_version: int | None = None) -> list[tuple[str, bytes]]:
    """Headers naming where the record came from, the failing stage and the error.

    Scoring adds the model version the record was routed to, when it got that far.
    """
    headers = [
        (HEADER_TOPIC, record.topic.encode()),
        (HEADER_PARTITION, str(record.partition).encode()),
        (HEADER_OFFSET, str(record.offset).encode()),
        (HEADER_STAGE, problem.stage.encode()),
        (HEADER_EXCEPTION_CLASS, (problem.exception_class or problem.error_class).encode()),
        (HEADER_EXCEPTION_MESSAGE, _bounded(problem.message).encode()),
    ]
    if model_version is not None:
        headers.append((HEADER_MODEL_VERSION, str(model_version).encode()))
    return headers


def dlq_frame(dlq_topic: str, record: SourceRecord, problem: Problem, key: bytes | None = None,
              model_version: int | None = None) -> bytes:
    """A sink frame for ``dlq_topic`` whose value is the record's original bytes (the first
    :data:`MAX_VALUE_BYTES` of them, with :data:`HEADER_ORIGINAL_BYTES` saying how many there
    were, when there are more)."""
    headers = dlq_headers(record, problem, model_version)
    value = record.value
    if len(value) > MAX_VALUE_BYTES:
        headers.append((HEADER_ORIGINAL_BYTES, str(len(value)).encode()))
        value = value[:MAX_VALUE_BYTES]
    if key is not None and len(key) > MAX_KEY_BYTES:
        key = key[:MAX_KEY_BYTES]
    return encode_sink_frame(dlq_topic, key, value, headers)


def _bounded(message: str) -> str:
    """``message``, cut to :data:`MAX_MESSAGE_CHARS` characters (saying so)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}... ({len(message):,} characters)"
