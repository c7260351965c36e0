"""The synthetic stream: deterministic, realistically shaped, and always a valid contract."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from featurestream.cli import build_parser
from featurestream.devstack.generator import (
    Shift,
    ShiftError,
    StreamConfig,
    generate_events,
    shifted_users,
    user_id,
)
from featurestream.devstack.producing import generate_command
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
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


SHIFT = Shift(amount_factor=3.0, user_share=0.2, after_events=4_000)


def test_a_shift_changes_only_the_shifted_users_amounts_after_its_start() -> None:
    plain = take(StreamConfig(seed=11, users=200), 10_000)
    shifted = take(StreamConfig(seed=11, users=200, shift=SHIFT), 10_000)
    users = shifted_users(StreamConfig(seed=11, users=200, shift=SHIFT))
    assert len(users) == 40 and users <= {user_id(i, 200) for i in range(200)}
    changed = 0
    for index, (before, after) in enumerate(zip(plain, shifted, strict=True)):
        expected = before
        if index >= SHIFT.after_events and before.user_id in users and before.amount is not None:
            expected = before._replace(amount=round(before.amount * 3.0, 2))
            changed += 1
        assert after == expected
    assert changed > 20


def test_shifted_users_are_fixed_by_the_seed() -> None:
    def users(seed: int) -> frozenset[str]:
        return shifted_users(StreamConfig(seed=seed, users=500, shift=SHIFT))
    assert users(1) == users(1) != users(2)
    assert shifted_users(StreamConfig(seed=1)) == frozenset()


@pytest.mark.parametrize(("bad", "field"), [
    ({"amount_factor": 0.0}, "amount_factor"), ({"amount_factor": float("inf")}, "amount_factor"),
    ({"amount_factor": 2.0, "user_share": 0.0}, "user_share"),
    ({"amount_factor": 2.0, "user_share": 1.5}, "user_share"),
    ({"amount_factor": 2.0, "after_events": -1}, "after_events"),
])
def test_shift_rejects_impossible_values(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(ShiftError, match=field) as caught:
        Shift(**bad)
    assert caught.value.field == field


@pytest.mark.parametrize(("options", "message"), [
    (["--shift-amount", "0"], "--shift-amount 0.0: use a finite number > 0"),
    (["--shift-amount", "2", "--shift-users", "2"], "--shift-users 2.0: use in (0, 1]"),
    (["--shift-amount", "2", "--shift-after", "-5"], "--shift-after -5: use >= 0"),
    (["--shift-amount", "2", "--shift-after", "100"], "use fewer than --events (100)"),
    (["--shift-users", "0.5"], "need --shift-amount FACTOR"),
])
def test_generate_names_the_shift_option_to_fix(options: list[str], message: str) -> None:
    args = build_parser().parse_args(["generate", "--events", "100", *options])
    with pytest.raises(UserFacingError) as caught:
        generate_command(Settings(), args)
    assert message in str(caught.value)


def test_generate_writes_the_shifted_stream(tmp_path: Path) -> None:
    out = tmp_path / "shifted.jsonl"
    args = build_parser().parse_args([
        "generate", "--events", "3000", "--users", "50", "--seed", "3", "--out", str(out),
        "--shift-amount", "2", "--shift-users", "1", "--shift-after", "1000"])
    assert generate_command(Settings(), args) == 0
    decoder = EventDecoder(FileSchemaRegistry())
    written = [decoder.decode(line) for line in out.read_bytes().splitlines()]
    config = StreamConfig(seed=3, users=50, shift=Shift(2.0, 1.0, 1000))
    expected = take(config, 3000)
    assert [(e.user_id, e.amount) for e in written if isinstance(e, Event)] == [
        (e.user_id, e.amount) for e in expected]


def test_skip_continues_the_stream_and_the_shift_counts_from_it(tmp_path: Path) -> None:
    def written(*options: str) -> list[Event]:
        out = tmp_path / "events.jsonl"
        args = build_parser().parse_args(["generate", "--users", "40", "--seed", "9", "--out",
                                          str(out), *options])
        assert generate_command(Settings(), args) == 0
        decoder = EventDecoder(FileSchemaRegistry())
        events = [decoder.decode(line) for line in out.read_bytes().splitlines()]
        assert all(isinstance(e, Event) for e in events)
        return events  # type: ignore[return-value]

    whole = written("--events", "3000", "--shift-amount", "3", "--shift-users", "1",
                    "--shift-after", "2000")
    tail = written("--events", "2000", "--skip", "1000", "--shift-amount", "3",
                   "--shift-users", "1", "--shift-after", "1000")
    assert [(e.event_id, e.amount) for e in tail] == [(e.event_id, e.amount)
                                                      for e in whole[1000:]]
    # the first event sent is at about now when paced; a burst ends at about now
    assert abs(tail[-1].ts - whole[-1].ts) < 60_000
