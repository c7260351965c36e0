"""The synthetic stream: deterministic, realistically shaped, and always a valid contract."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from typing import Any

import pytest

from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry

N = 20_000


def take(config: StreamConfig, n: int = N) -> list[Event]:
    return list(islice(generate_events(config), n))


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    return take(StreamConfig(seed=7))


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    assert take(StreamConfig(seed=1), 2_000) == take(StreamConfig(seed=1), 2_000)
    assert take(StreamConfig(seed=1), 2_000) != take(StreamConfig(seed=2), 2_000)


def late_by(events: list[Event]) -> list[int]:
    """For each out-of-order event: how far behind the newest earlier ts it is."""
    lateness, newest = [], events[0].ts
    for event in events[1:]:
        if event.ts < newest:
            lateness.append(newest - event.ts)
        newest = max(newest, event.ts)
    return lateness


def test_out_of_order_fraction_and_bound(stream: list[Event]) -> None:
    lateness = late_by(stream)
    assert len(lateness) / len(stream) == pytest.approx(0.02, abs=0.005)
    assert max(lateness) <= StreamConfig().max_out_of_order_ms


def test_no_out_of_order_events_when_disabled() -> None:
    assert late_by(take(StreamConfig(seed=3, out_of_order_fraction=0.0), 5_000)) == []


def test_event_time_advances_at_the_simulated_rate() -> None:
    events = take(StreamConfig(seed=4, events_per_second=500.0, start_ts=1_000_000))
    assert events[0].ts >= 1_000_000
    span_s = (max(e.ts for e in events) - 1_000_000) / 1000
    assert span_s == pytest.approx(N / 500.0, rel=0.05)


def test_funnel_narrows_at_every_step(stream: list[Event]) -> None:
    counts = Counter(e.event_type for e in stream)
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert 0.01 < counts["purchase"] / len(stream) < 0.10


def test_funnel_steps_follow_their_predecessors_within_a_session(stream: list[Event]) -> None:
    required = {"click": "view", "add_to_cart": "click", "purchase": "add_to_cart"}
    last_step: dict[str, tuple[str, str | None]] = {}
    for event in stream:
        assert event.context is not None
        session = event.context["session_id"]
        if session not in last_step:
            assert event.event_type == "view", "sessions start with a view"
        elif event.event_type in required:
            assert last_step[session] == (required[event.event_type], event.item_id)
        last_step[session] = (event.event_type, event.item_id)


def test_only_purchases_carry_positive_amounts(stream: list[Event]) -> None:
    for event in stream:
        if event.event_type == "purchase":
            assert event.amount is not None and event.amount > 0
        else:
            assert event.amount is None


def test_user_activity_is_skewed(stream: list[Event]) -> None:
    per_user = sorted(Counter(e.user_id for e in stream).values(), reverse=True)
    top_decile = sum(per_user[: len(per_user) // 10])
    assert top_decile > 0.3 * len(stream)


def test_every_event_encodes_and_decodes(stream: list[Event]) -> None:
    registry = FileSchemaRegistry()
    decoder, encoder = EventDecoder(registry), EventEncoder(registry)
    for event in stream[:5_000]:
        assert decoder.decode(encoder.avro(event)) == event
        assert decoder.decode(encoder.json(event)) == event


@pytest.mark.parametrize("bad", [
    {"users": 0}, {"items": 0}, {"events_per_second": 0.0}, {"out_of_order_fraction": 1.5},
    {"max_out_of_order_ms": 0}, {"concurrent_sessions": 0},
])
def test_config_rejects_impossible_shapes(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        StreamConfig(**bad)
