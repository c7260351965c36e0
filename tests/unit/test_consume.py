"""``featurestream consume``: scores decoded, dead letters shown with their error headers."""

from __future__ import annotations

from dataclasses import dataclass, field

from featurestream.cli.consume import describe_dead_letter, describe_score
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec, ScoreRecord
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage, dlq_headers
from featurestream.udfs.wire.frames import SourceRecord

CODEC = ScoreCodec(FileSchemaRegistry(), "scores-value")
SCORE: ScoreRecord = {
    "event_id": "e-1", "user_id": "u-1", "event_type": "purchase", "ts": 5,
    "model": "purchase_risk", "version": 2, "variant": "v2", "score": 0.25,
    "features": {"amount": 3.0}, "features_missing": False, "as_of": 4, "scored_at": 6,
    "shadow": {"version": 3, "score": None}, "experiment": "exp-2"}


@dataclass
class Message:
    raw: bytes
    header_list: list = field(default_factory=list)
    key_bytes: bytes | None = None

    def value(self) -> bytes:
        return self.raw

    def headers(self) -> list:
        return self.header_list

    def key(self) -> bytes | None:
        return self.key_bytes

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return 7


def test_scores_are_decoded_and_features_shown_on_request() -> None:
    message = Message(CODEC.encode(SCORE))
    assert describe_score(CODEC, message, with_features=True) == SCORE
    assert "features" not in describe_score(CODEC, message, with_features=False)
    assert describe_score(CODEC, Message(b"junk"), False)["undecodable"]


def test_dead_letters_show_headers_and_an_excerpt() -> None:
    record = SourceRecord("events", 0, 12, 0, b"x" * 100)
    headers = dlq_headers(record, Problem(Stage.FEATURES, ErrorClass.UNKNOWN_USER, "no row"),
                          model_version=2)
    shown = describe_dead_letter(Message(record.value, headers, b"u-9"))
    assert shown["stage"] == "features" and shown["model.version"] == "2"
    assert shown["exception.class.name"] == "UnknownUser"
    assert (shown["topic"], shown["offset"], shown["key"]) == ("events", "12", "u-9")
    assert shown["value"] == "x" * 80 + "..."
