"""The produce/generate commands, with Kafka replaced by a recording fake."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import pytest

from featurestream.devstack import producing
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventDecoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.offline.training_set import read_labels

SETTINGS = Settings()
DECODER = EventDecoder(FileSchemaRegistry())
GOOD = {"event_id": "e-1", "user_id": "u-1", "event_type": "view", "ts": 1_700_000_000_000}


class RecordingProducer:
    """Stands in for :class:`EventProducer`; every send is delivered."""

    instances: ClassVar[list[RecordingProducer]] = []

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.topic = topic or settings.events_topic
        self.records: list[tuple[str, bytes, int]] = []
        self.delivered = self.failed = 0
        self.first_error: str | None = None
        self.instances.append(self)

    def send(self, key: str, value: bytes, ts: int) -> None:
        self.records.append((key, value, ts))
        self.delivered += 1

    def flush(self, timeout_s: float = 60.0) -> int:
        return 0

    def __enter__(self) -> RecordingProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.flush()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[RecordingProducer]:
    monkeypatch.setattr(RecordingProducer, "instances", [])
    monkeypatch.setattr(producing, "EventProducer", RecordingProducer)
    return RecordingProducer.instances


def produce_args(file: Path, fmt: str = "avro", topic: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(file=str(file), format=fmt, topic=topic)


def generate_args(**overrides: object) -> argparse.Namespace:
    args = {"events": 300, "users": 20, "rate": 0.0, "format": "avro", "seed": 5, "out": None,
            "labels": None, "shift_amount": None, "shift_users": None, "shift_after": None,
            "skip": 0}
    return argparse.Namespace(**{**args, **overrides})


def test_produce_skips_and_reports_bad_lines(
    tmp_path: Path, sent: list[RecordingProducer], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [json.dumps(GOOD), "", json.dumps({**GOOD, "ts": "soon"}), "not json",
             json.dumps({**GOOD, "event_id": "e-2", "user_id": "u-2", "ts": 5})]
    file = tmp_path / "events.jsonl"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    assert producing.produce_command(SETTINGS, produce_args(file, topic="t")) == 1

    (producer,) = sent
    assert producer.topic == "t"
    assert [(key, ts) for key, _, ts in producer.records] == [
        ("u-1", 1_700_000_000_000), ("u-2", 5)]
    assert all(isinstance(DECODER.decode(value), Event) for _, value, _ in producer.records)
    assert producer.records[0][1][0] == 0  # framed Avro
    out, err = capsys.readouterr()
    assert f"{file}:3: skipped, SchemaViolation: field 'ts'" in err
    assert f"{file}:4: skipped, MalformedRecord" in err
    assert "sent 2 events to 't' as avro: 2 delivered, 0 failed; skipped 2 bad lines" in out


def test_produce_json_sends_validated_lines_as_they_are(
    tmp_path: Path, sent: list[RecordingProducer]
) -> None:
    line = json.dumps(GOOD, indent=None)
    file = tmp_path / "events.jsonl"
    file.write_text(line + "\n", encoding="utf-8")
    assert producing.produce_command(SETTINGS, produce_args(file, fmt="json")) == 0
    assert sent[0].records == [("u-1", line.encode(), GOOD["ts"])]
    assert sent[0].topic == SETTINGS.events_topic


def test_produce_names_a_missing_file(tmp_path: Path, sent: list[RecordingProducer]) -> None:
    with pytest.raises(UserFacingError, match="cannot read"):
        producing.produce_command(SETTINGS, produce_args(tmp_path / "absent.jsonl"))


def test_generate_sends_every_event_keyed_and_timestamped(sent: list[RecordingProducer]) -> None:
    assert producing.generate_command(SETTINGS, generate_args()) == 0
    (producer,) = sent
    assert len(producer.records) == 300
    for key, value, ts in producer.records:
        event = DECODER.decode(value)
        assert isinstance(event, Event)
        assert (key, ts) == (event.user_id, event.ts)


def test_generate_out_writes_valid_json_lines(tmp_path: Path,
                                              sent: list[RecordingProducer]) -> None:
    out = tmp_path / "stream.jsonl"
    assert producing.generate_command(SETTINGS, generate_args(out=str(out))) == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 300
    assert all(isinstance(DECODER.decode(line), Event) for line in lines)
    assert sent == []


def test_generate_labels_writes_each_events_fraud_label(
    tmp_path: Path, sent: list[RecordingProducer]
) -> None:
    labels_file = tmp_path / "labels.csv"
    assert producing.generate_command(SETTINGS, generate_args(labels=str(labels_file))) == 0
    events = [DECODER.decode(value) for _, value, _ in sent[0].records]
    labels = read_labels(labels_file)
    assert list(labels) == [e.event_id for e in events if isinstance(e, Event)]
    fraud = {e.event_type for e in events if isinstance(e, Event) and labels[e.event_id]}
    assert fraud <= {"purchase"}  # the generator labels fraud sessions' purchases


def test_generate_rejects_impossible_arguments() -> None:
    with pytest.raises(UserFacingError, match="--users"):
        producing.generate_command(SETTINGS, generate_args(users=0))


def test_unreachable_broker_is_one_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    settings = SETTINGS.replace(kafka_bootstrap=f"127.0.0.1:{port}")
    with pytest.raises(UserFacingError, match="FEATURESTREAM_KAFKA_BOOTSTRAP") as caught:
        EventProducer(settings, connect_timeout_s=1.0)
    assert "featurestream up" in str(caught.value)
