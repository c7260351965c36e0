"""A batching Kafka producer for encoded events that counts delivery outcomes.

librdkafka's own log lines go to the ``featurestream.kafka`` logger (silent unless the
application configures logging), so an unreachable broker shows up as one clear error instead.
"""

from __future__ import annotations

import logging
from types import TracebackType

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from featurestream.errors import UserFacingError
from featurestream.settings import Settings

_log = logging.getLogger("featurestream.kafka")
_log.addHandler(logging.NullHandler())

_THROUGHPUT_CONFIG = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 200_000,
    "message.timeout.ms": 30_000,
    "acks": "all",
    "partitioner": "murmur2_random",  # same key -> partition mapping as the Java clients
}
_MISSING_TOPIC = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)


class EventProducer:
    """Send keyed, timestamped values to one topic; checks the broker and topic on creation.

    ``delivered`` and ``failed`` count delivery reports (served by :meth:`send` and
    :meth:`flush`); ``first_error`` describes the first failed delivery.
    """

    def __init__(self, settings: Settings, topic: str | None = None,
                 connect_timeout_s: float = 5.0) -> None:
        self.topic = topic or settings.events_topic
        self.delivered = 0
        self.failed = 0
        self.first_error: str | None = None
        self._producer = Producer(settings.kafka_config({"logger": _log, **_THROUGHPUT_CONFIG}))
        self._check_topic(settings.kafka_bootstrap, connect_timeout_s)

    def _check_topic(self, bootstrap: str, timeout_s: float) -> None:
        try:
            metadata = self._producer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as exc:
            raise UserFacingError(
                f"cannot reach Kafka at {bootstrap} ({exc.args[0].str()}); start the local stack"
                " with `featurestream up` or set FEATURESTREAM_KAFKA_BOOTSTRAP to your brokers"
            ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or (topic.error is not None and topic.error.code() in _MISSING_TOPIC):
            raise UserFacingError(
                f"topic {self.topic!r} does not exist on {bootstrap}; `featurestream up` creates"
                " the featurestream topics (or create it, or pick another with --topic)"
            )

    def send(self, key: str, value: bytes, ts: int) -> None:
        """Queue one record with Kafka timestamp ``ts`` (epoch ms); waits if the queue is full."""
        while True:
            try:
                self._producer.produce(self.topic, value, key, timestamp=ts,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered."""
        return self._producer.flush(timeout_s)

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = error.str()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.flush()
