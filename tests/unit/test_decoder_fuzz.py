"""Fuzzing the event decoders (issue 13, "Hostile input"): whatever the bytes, the built-in
decoder, its adapter, a declared source's decoder and the sharding stage's router return a
record or a typed decode :class:`Problem` with a short message (it becomes a DLQ header) --
nothing escapes, even with the little stack headroom a Flink Python worker leaves. The hostile
corpus of the faults suite gets its verdicts here first, in milliseconds.

Bounded for CI: a few hundred examples per property, no per-example deadline (the corpus holds
1 MB and 10 MB records)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.events import EVENT_TYPES, Event
from featurestream.udfs.contract.records import decoder_for
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.definitions.defaults import default_definitions, events_source
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.features.routing import EventRouter
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage
from featurestream.udfs.wire.frames import encode_source_frame
from testing.hostile import MB, Hostile, hostile_corpus
from tests.unit.test_records import DECODER as PAYMENTS_DECODER
from tests.unit.test_records import VALID as VALID_PAYMENT

REGISTRY = FileSchemaRegistry()
DECODER = EventDecoder(REGISTRY)
ENCODER = EventEncoder(REGISTRY)
BUILTIN = decoder_for(events_source("events"), REGISTRY)
NOW = 1_700_000_000_000
ROUTER = EventRouter(compile_plans(default_definitions(("1m", "1h"), "events")),
                     {"events": BUILTIN}, 4, clock=lambda: NOW)
VICTIM = Event("e-1", "u-1", "purchase", "i-1", 9.5, NOW - 60_000, {"device": "mobile"})
MAX_MESSAGE = 400  # characters: a DLQ header, never a copy of the record
LONG = range(-(2**63), 2**63)
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def route(raw: bytes) -> list[Problem]:
    """The sharding stage's verdicts on one record (none when it reaches a shard)."""
    groups, failed = ROUTER.group_by_shard([encode_source_frame("events", 0, 7, NOW, raw)])
    assert bool(groups) != bool(failed), (groups, failed)
    return [problem for _, problem in failed]


@contextmanager
def worker_stack(headroom: int) -> Iterator[None]:
    """Only ``headroom`` frames of recursion left, as deep in a Flink Python worker's stack."""
    depth, frame = 0, sys._getframe()
    while frame.f_back is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def obeys_the_contract(event: Event) -> bool:
    """The event contract, written out again (user_event.avsc and its rules)."""
    return (type(event.event_id) is str and event.event_id != ""
            and type(event.user_id) is str and event.user_id != ""
            and event.event_type in EVENT_TYPES
            and (event.item_id is None or type(event.item_id) is str)
            and (event.amount is not None or event.event_type != "purchase")
            and (event.amount is None or (type(event.amount) is float
                                          and math.isfinite(event.amount) and event.amount >= 0))
            and type(event.ts) is int and event.ts in LONG
            and (event.context is None or all(type(k) is str and type(v) is str
                                              for k, v in event.context.items())))


def assert_typed(result: object, record: Callable[[object], bool]) -> None:
    """A record ``record`` accepts, or a decode problem with a short message."""
    if isinstance(result, Problem):
        assert result.stage == Stage.DECODE, result
        assert isinstance(result.error_class, ErrorClass)
        assert 0 < len(result.message) <= MAX_MESSAGE, result.message[:MAX_MESSAGE]
    else:
        assert record(result), result


def assert_decoders_agree(raw: bytes) -> None:
    """Every decoder of the built-in contract gives ``raw`` a typed verdict, the same one."""
    event = DECODER.decode(raw)
    assert_typed(event, lambda e: isinstance(e, Event) and obeys_the_contract(e))
    fields = BUILTIN.decode(raw)
    if isinstance(event, Problem):
        assert fields == event
        assert route(raw) == [event]
    else:
        assert isinstance(fields, dict) and Event(**fields) == event
        future = route(raw)
        assert (future != []) == (event.ts > NOW + ROUTER._max_future_skew_ms)
    assert_typed(PAYMENTS_DECODER.decode(raw), lambda r: isinstance(r, dict))


@pytest.mark.parametrize("hostile", hostile_corpus(ENCODER, VICTIM, big_record_bytes=10 * MB),
                         ids=lambda h: h.kind)
def test_the_hostile_corpus_gets_its_verdicts(hostile: Hostile) -> None:
    with worker_stack(200):
        result, routed = DECODER.decode(hostile.value), route(hostile.value)
    assert_decoders_agree(hostile.value)
    if hostile.stage == Stage.DECODE and hostile.reasons:
        assert isinstance(result, Problem) and result.error_class in hostile.reasons, result
        assert hostile.fragment in result.message, result.message
        assert routed == [result]
    elif hostile.reasons == (ErrorClass.FUTURE_EVENT,):
        assert isinstance(result, Event)
        [problem] = routed
        assert (problem.stage, problem.error_class) == (Stage.WINDOW, ErrorClass.FUTURE_EVENT)
        assert hostile.fragment in problem.message
    else:  # valid bytes: late (judged by the shard) or counted
        assert isinstance(result, Event) and routed == []
        assert hostile.event is None or result == hostile.event


# --- structure-aware fuzzing: a valid event, then one hostile change --------------------------

hostile_values = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=20) | st.sampled_from(["", "x" * MB, "\ud800", 2**63, -(2**63) - 1])
    | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=3),
                                                            st.text(max_size=3) | st.integers(),
                                                            max_size=3))
valid_events = st.builds(
    Event, event_id=st.text(min_size=1, max_size=8), user_id=st.text(min_size=1, max_size=8),
    event_type=st.sampled_from(EVENT_TYPES), item_id=st.none() | st.text(max_size=8),
    amount=st.floats(min_value=0, max_value=1e9, allow_nan=False), ts=st.integers(0, 2**45),
    context=st.none() | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))


@st.composite
def hostile_json(draw: st.DrawFn) -> bytes:
    """A valid JSON event with one field replaced (any JSON value, nested up to 1,100 deep),
    removed, or one unknown field added, sometimes with bytes broken afterwards."""
    record: dict[str, Any] = dict(draw(valid_events)._asdict())
    name = draw(st.sampled_from([*Event._fields, "unknown"]))
    change = draw(st.sampled_from(["replace", "remove", "deep"]))
    if change == "remove":
        record.pop(name, None)
    elif change == "deep":
        depth = draw(st.integers(500, 1_100))
        text = json.dumps(record, allow_nan=True).encode()
        return text[:-1] + f', "{name}": '.encode() + b"[" * depth + b"]" * depth + b"}"
    else:
        record[name] = draw(hostile_values)
    raw = json.dumps(record, allow_nan=True, ensure_ascii=draw(st.booleans())).encode(
        "utf-8", "surrogatepass")
    return _damage(draw, raw)


@st.composite
def hostile_avro(draw: st.DrawFn) -> bytes:
    """A valid framed Avro event (NaN and infinite amounts allowed: Avro carries them) with its
    schema id, length, or bytes changed."""
    event = draw(valid_events)
    event = event._replace(amount=draw(st.sampled_from([event.amount, math.nan, math.inf,
                                                        -math.inf, -1.0])))
    raw = ENCODER.avro(event)
    change = draw(st.sampled_from(["schema id", "cut", "bytes"]))
    if change == "schema id":
        return b"\x00" + draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big") + raw[5:]
    if change == "cut":
        return raw[:draw(st.integers(0, len(raw)))]
    return _damage(draw, raw, start=5)


def _damage(draw: st.DrawFn, raw: bytes, start: int = 0) -> bytes:
    """``raw`` with up to three bytes overwritten (often invalid UTF-8) at or after ``start``."""
    damaged = bytearray(raw)
    for _ in range(draw(st.integers(0, 3))):
        if len(damaged) > start:
            at = draw(st.integers(start, len(damaged) - 1))
            damaged[at] = draw(st.sampled_from([0xff, 0xc0, 0x80, 0x00, 0x22, 0x5c])
                               | st.integers(0, 255))
    return bytes(damaged)


@FUZZ
@given(hostile_json() | hostile_avro())
def test_hostile_events_get_a_typed_verdict(raw: bytes) -> None:
    assert_decoders_agree(raw)


@FUZZ
@given(hostile_json() | hostile_avro() | st.binary(max_size=64), st.integers(60, 400))
def test_verdicts_hold_with_little_stack_left(raw: bytes, headroom: int) -> None:
    """A Flink worker decodes deep in its stack: no verdict may depend on recursion left."""
    with worker_stack(headroom):
        assert_decoders_agree(raw)


@FUZZ
@given(st.dictionaries(st.sampled_from([*VALID_PAYMENT, "x"]), hostile_values, max_size=8))
def test_a_declared_source_gives_any_json_a_typed_verdict(record: dict[str, Any]) -> None:
    raw = json.dumps({**VALID_PAYMENT, **record}).encode("utf-8", "surrogatepass")
    assert_typed(PAYMENTS_DECODER.decode(raw), lambda r: isinstance(r, dict))
