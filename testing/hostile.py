"""The hostile corpus (issue 13, "Hostile input"): records a careless or hostile producer
writes to the events topic, each with the verdict the pipeline owes it. The decoder's unit
fuzz test checks every verdict in seconds; the faults suite mixes the corpus into a valid
stream on the real stack and checks each bad record reaches ``events.dlq`` once, with its
reason, while the hostile-but-valid ones are counted like any other event."""

from __future__ import annotations

import json
from dataclasses import dataclass

from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.wire.dead_letters import ErrorClass, Stage

MB = 2**20
YEAR_3000_MS = 32_503_680_000_000
UNKNOWN_SCHEMA_ID = 999_999


@dataclass(frozen=True)
class Hostile:
    """One record of the corpus. ``reasons`` are the error classes its dead letter may carry
    (a 1970 event is ``LateEvent`` or ``ExpiredEvent`` depending on the watermark when it
    arrives); none for a record that is valid, however hostile, and must be counted as
    ``event``. ``fragment`` must be in the dead letter's message."""

    kind: str
    value: bytes
    reasons: tuple[ErrorClass, ...] = ()
    stage: Stage = Stage.DECODE
    fragment: str = ""
    event: Event | None = None


def _json(fields: dict) -> bytes:
    return json.dumps(fields, allow_nan=True).encode()


def hostile_corpus(encoder: EventEncoder, victim: Event, big_record_bytes: int = 10 * MB
                   ) -> list[Hostile]:
    """The corpus around ``victim`` (a valid event of the stream: its user and time). Valid
    records among them are ``victim`` copies with new ids, so the oracle counts them for its
    user. ``big_record_bytes`` sizes the largest record (the broker's and the job's limits
    decide what a test can send)."""
    base = victim._asdict()
    bad = {**base, "event_id": "hostile"}
    avro = encoder.avro(Event(**bad))
    malformed, schema, invalid = (ErrorClass.MALFORMED_RECORD, ErrorClass.SCHEMA_VIOLATION,
                                  ErrorClass.INVALID_VALUE)
    deep = 100_000
    huge_item = victim._replace(event_id="hostile-1mb-item", item_id="i" * MB)
    big = victim._replace(event_id="hostile-big", context={"blob": "b" * big_record_bytes})
    return [
        Hostile("truncated Avro", avro[:-3], (malformed,), fragment="truncated or corrupt"),
        Hostile("Avro cut after its header", avro[:5], (malformed,),
                fragment="truncated or corrupt"),
        Hostile("unknown schema id",
                b"\x00" + UNKNOWN_SCHEMA_ID.to_bytes(4, "big") + avro[5:],
                (ErrorClass.UNKNOWN_SCHEMA_ID,), fragment=str(UNKNOWN_SCHEMA_ID)),
        Hostile("wrong type: ts a string", _json({**bad, "ts": "yesterday"}), (schema,),
                fragment="field 'ts' must be an integer"),
        Hostile("wrong type: amount a string", _json({**bad, "amount": "12.50"}), (schema,),
                fragment="field 'amount' must be a number or null"),
        Hostile("wrong type: user_id a number", _json({**bad, "user_id": 42}), (schema,),
                fragment="field 'user_id' must be a string"),
        Hostile("missing user_id",
                _json({k: v for k, v in bad.items() if k != "user_id"}), (schema,),
                fragment="missing required field 'user_id'"),
        Hostile("empty user_id (JSON)", _json({**bad, "user_id": ""}), (invalid,),
                fragment="field 'user_id' is empty"),
        Hostile("empty user_id (Avro)", encoder.avro(Event(**{**bad, "user_id": ""})),
                (invalid,), fragment="field 'user_id' is empty"),
        Hostile("empty event_id", _json({**bad, "event_id": ""}), (invalid,),
                fragment="field 'event_id' is empty"),
        Hostile("1 MB event_type", _json({**bad, "event_type": "x" * MB}), (schema,),
                fragment="field 'event_type' is 'xxx"),
        Hostile("NaN amount (JSON)", _json({**bad, "event_type": "purchase",
                                            "amount": float("nan")}),
                (invalid,), fragment="must be finite"),
        Hostile("infinite amount (JSON)", _json({**bad, "event_type": "purchase",
                                                 "amount": float("inf")}),
                (invalid,), fragment="must be finite"),
        Hostile("NaN amount (Avro)", encoder.avro(Event(**{**bad, "event_type": "purchase",
                                                          "amount": float("nan")})),
                (invalid,), fragment="must be finite"),
        Hostile("non-UTF-8 bytes in JSON", _json(bad).replace(b'"hostile"', b'"\xff\xfe"'),
                (malformed,), fragment="invalid UTF-8"),
        Hostile("lone surrogate escape in user_id (JSON)",
                _json({**bad, "user_id": "SURROGATE"}).replace(b"SURROGATE", b"\\ud800"),
                (malformed,), fragment="lone UTF-16 surrogate"),
        Hostile("non-UTF-8 bytes in Avro", avro.replace(b"hostile", b"\xff" * len("hostile")),
                (malformed,), fragment="truncated or corrupt"),
        Hostile(f"JSON nested {deep:,} deep", b"[" * deep + b"]" * deep, (malformed,),
                fragment="nested too deeply"),
        Hostile("user_id nested 1,000 deep", _json({**bad, "user_id": 0}).replace(
            b'"user_id": 0', b'"user_id": ' + b"[" * 1000 + b"]" * 1000), (schema,),
                fragment="field 'user_id' must be a string"),
        Hostile("timestamp in 1970", encoder.avro(Event(**{**bad, "ts": 0})),
                (ErrorClass.LATE_EVENT, ErrorClass.EXPIRED_EVENT), Stage.WINDOW),
        Hostile("timestamp in the year 3000", encoder.avro(Event(**{**bad, "ts": YEAR_3000_MS})),
                (ErrorClass.FUTURE_EVENT,), Stage.WINDOW,
                fragment="FEATURESTREAM_MAX_FUTURE_SKEW_MS"),
        Hostile("1 MB item_id (valid: counted)", encoder.avro(huge_item), event=huge_item),
        Hostile(f"{big_record_bytes / MB:g} MB record (valid: counted)", encoder.json(big),
                event=big),
    ]
