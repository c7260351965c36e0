"""Window logic: scenario tables with ASCII timelines, a hypothesis oracle, and state hygiene.

Everything runs through :class:`ShardHarness`, which drives the shards as the Flink job does
(one timer per shard, entity states stored at each checkpoint marker).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.udfs.contract.events import EVENT_TYPES, Event
from tests.harness import DAY, ShardHarness, as_of, record_of, user_definitions
from tests.oracle import assert_row_matches, expected_row

WINDOWS = ("1m", "5m", "1h", "24h")


def make_harness(windows: tuple[str, ...] = WINDOWS, lateness: int = DAY,
                 shard_count: int = 4) -> ShardHarness:
    return ShardHarness(user_definitions(windows), lateness=lateness, shard_count=shard_count)


def ev(ts: int, kind: str = "view", user: str = "u1", item: str | None = "i1",
       amount: float | None = None, n: list[int] = [0]) -> Event:  # noqa: B006 - id counter
    n[0] += 1
    if kind == "purchase" and amount is None:
        amount = 10.0
    return Event(f"e{n[0]}", user, kind, item, amount, ts, None)


# Each scenario: events (seconds, type) in arrival order, then the watermark sweeps to `until`
# one second at a time; `expect` lists (as_of seconds, events_1m, events_5m) of the rows
# emitted, in order.
SCENARIOS = [
    pytest.param(
        # t(s)  0        30          60 61  90 91
        #       v        c           |  |   |  └ 30s bucket leaves the 1m window
        #                            |  └ 0s bucket leaves the 1m window (expiry 0 + 60)
        [(0, "view"), (30, "click")], 100,
        [(0, 1, 1), (30, 2, 2), (60, 1, 2), (90, 0, 2)],
        id="events age out of the 1m window at their bucket expiry",
    ),
    pytest.param(
        # t(s)  10   5(late, same 1m window)    70
        #       v    c                          └ both gone from 1m, still in 5m
        [(10, "view"), (5, "click")], 70,
        [(10, 1, 1), (10, 2, 2), (65, 1, 2), (70, 0, 2)],
        id="an out-of-order event lands in its own bucket and expires on its own",
    ),
    pytest.param(
        # t(s)  0      100 (advances as_of; the 0s event is out of the 1m window)
        #       v      v
        [(0, "view"), (100, "view")], 100,
        [(0, 1, 1), (100, 1, 2)],
        id="a newer event expires older buckets before it is counted",
    ),
    pytest.param(
        # t(s)  0.5 0.9 (same 1s bucket)   60 (bucket [0,1s) expires at 60s)
        [(0.5, "view"), (0.9, "view")], 61,
        [(0.5, 1, 1), (0.9, 2, 2), (60, 0, 2)],
        id="events in one hop expire together at the hop's end + W",
    ),
]


@pytest.mark.parametrize(("arrivals", "until", "expect"), SCENARIOS)
def test_scenarios(arrivals: list[tuple[float, str]], until: int,
                   expect: list[tuple[float, int, int]]) -> None:
    harness = make_harness()
    for seconds, kind in arrivals:
        harness.process(ev(int(seconds * 1000), kind))
    for second in range(until + 1):
        harness.advance_watermark(second * 1000)
    got = [(as_of(row) / 1000, row["events_1m"], row["events_5m"]) for _, row in harness.rows]
    assert got == [(a, b, c) for a, b, c in expect]


def test_row_versions_grow_and_as_of_never_goes_back() -> None:
    harness = make_harness()
    for ts in (5_000, 1_000, 70_000, 2_000, 200_000):
        harness.process(ev(ts))
        harness.advance_watermark(ts - 5_000)
    keys = [(row["as_of"], row["version"]) for _, row in harness.rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_event_older_than_largest_window_is_rejected_not_counted() -> None:
    harness = make_harness(("1m", "1h"))
    harness.process(ev(3 * 3_600_000))
    harness.process(ev(1_000))  # two hours older than the user's row: outside every window
    [(event, rejection)] = harness.rejected
    assert event.ts == 1_000 and rejection.error_class == "ExpiredEvent"
    assert "largest window (1h)" in rejection.message
    assert harness.latest_rows()["user:u1"]["events_1h"] == 1


def test_event_beyond_allowed_lateness_is_rejected() -> None:
    harness = make_harness(lateness=60_000)
    harness.advance_watermark(10 * 60_000)
    harness.process(ev(10 * 60_000 - 60_001, user="new-user"))
    [(_, rejection)] = harness.rejected
    assert rejection.error_class == "LateEvent"
    assert "allowed lateness is 60000 ms" in rejection.message
    assert "user:new-user" not in harness.entities() and not harness.rows


def test_idle_users_leave_no_state_and_no_timers() -> None:
    harness = make_harness(lateness=60_000)
    for i in range(50):
        harness.process(ev(i * 997, "purchase", user=f"u{i % 7}", item=f"i{i % 5}"))
    harness.checkpoint()
    assert harness.entities() and harness.stored and harness.timers
    harness.advance_watermark(2 * DAY)
    harness.checkpoint()
    assert harness.entities() == {} and harness.stored == {} and harness.timers == {}
    for user, row in harness.latest_rows().items():  # the last rows fell back to zero
        assert row["events_24h"] == 0 and row["spend_24h"] == 0.0, user
        assert row["avg_spend_24h"] is None and row["distinct_items_24h"] == 0


def test_a_bundle_writes_one_row_per_user_with_every_event_counted() -> None:
    # t(s)   1  2  3 (u1)   2 (u2)   -- one bundle: one row each, all events in it
    harness = make_harness()
    harness.process_bundle([ev(1_000), ev(2_000, user="u2"), ev(2_000), ev(3_000, "click")])
    assert [(key, row["as_of"], row["events_1m"], row["clicks_1m"], row["version"])
            for key, row in harness.rows] == [("user:u1", 3_000, 3, 1, 3),
                                              ("user:u2", 2_000, 1, 0, 1)]


def test_no_expiry_is_missed_and_timers_stay_few() -> None:
    """Every shard with users has a Flink timer no later than its earliest user expiry."""
    harness = make_harness(shard_count=3)
    for i in range(300):
        harness.process(ev((i * 7919) % 500_000 + i * 1_000, user=f"u{i % 11}"))
        harness.advance_watermark(i * 1_000 - 30_000)
        for number, shard in harness.shards.items():
            due = shard.next_expiry()
            if due is not None:
                assert min(harness.timers[number]) <= due
        assert all(len(t) <= 3 for t in harness.timers.values()), harness.timers


def test_stored_state_replays_to_the_state_in_memory_at_every_checkpoint() -> None:
    """States are stored when events change them; aging is replayed from the stored state."""
    harness = make_harness()
    processor = harness.processors["user"]
    for ts in (1_000, 2_000, 3_600_000, 3_590_000, 3_700_000):
        harness.process(ev(ts, "purchase", item=f"i{ts}"))
        for watermark in range(ts - 5_000, ts + 200_000, 20_000):
            harness.advance_watermark(watermark)
            harness.checkpoint()
            stored = harness.stored_states()
            assert stored.keys() == harness.entities().keys()
            for user, state in harness.entities().items():
                replayed = stored[user]
                # Replay the aging, as a restored shard does.
                while replayed.expiry is not None and replayed.expiry <= harness.watermark:
                    processor.advance(replayed, replayed.expiry)
                    replayed.expiry = processor.next_expiry(replayed)
                assert processor.to_bytes(replayed) == processor.to_bytes(state)


def test_a_job_restarted_from_a_checkpoint_ends_like_an_uninterrupted_one() -> None:
    events = [ev(ts, kind, user=f"u{ts % 3}", item=f"i{ts % 4}")
              for ts, kind in zip(range(0, 900_000, 7_001), EVENT_TYPES * 40, strict=False)]
    steady, restarted = (make_harness() for _ in range(2))
    checkpointed, failed_at, i = 0, -1, 0
    while i < len(events):
        event = events[i]
        restarted.process(event)
        restarted.advance_watermark(event.ts - 5_000)
        if i % 11 == 0:
            restarted.checkpoint()
            checkpointed = i + 1
        if i % 17 == 16 and i > failed_at:  # fail once here: replay from the last checkpoint
            restarted.restart()
            failed_at, i = i, checkpointed
            continue
        i += 1
    for event in events:
        steady.process(event)
        steady.advance_watermark(event.ts - 5_000)
    # The same (as_of, version) always carries the same row, and the newest rows agree.
    written = {(user, row["as_of"], row["version"]): row for user, row in steady.rows}
    for user, row in restarted.rows:
        assert written.get((user, row["as_of"], row["version"]), row) == row
    assert restarted.latest_rows() == steady.latest_rows()
    assert restarted.state_bytes(restarted.entities()) == steady.state_bytes(steady.entities())


events_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3 * 3_600_000),  # event time within 3 hours
        st.sampled_from(EVENT_TYPES),
        st.sampled_from(["a", "b", "c", None]),
        st.floats(min_value=0.01, max_value=1_000, allow_nan=False),
        st.sampled_from(["u1", "u2", "u3"]),
        st.integers(min_value=0, max_value=120_000),  # how far behind the stream it arrives
        st.integers(min_value=1, max_value=3),  # events in the bundle this one starts
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(events_strategy, st.sampled_from([60_000, 3_600_000, DAY]), st.sampled_from([1, 2]))
def test_every_row_equals_the_oracle(raw: list[tuple[int, str, str | None, float, str, int, int]],
                                     lateness: int, shards: int) -> None:
    """Disordered arrivals, bundles, watermarks and expiry: every emitted row is exact."""
    harness = make_harness(lateness=lateness, shard_count=shards)
    # Arrival order: by (event time + delay), so some events arrive after later ones.
    arrivals = sorted(raw, key=lambda r: r[0] + r[5])
    accepted: dict[str, list[Event]] = {f"user:u{n}": [] for n in (1, 2, 3)}
    events = [Event(f"e{i}", user, kind, item, amount if kind == "purchase" else None, ts, None)
              for i, (ts, kind, item, amount, user, _, _) in enumerate(arrivals)]
    max_seen, i = 0, 0
    while i < len(events):
        bundle = events[i:i + arrivals[i][6]]
        i += len(bundle)
        rows_before, rejected_before = len(harness.rows), len(harness.rejected)
        harness.process_bundle(bundle)
        rejected_ids = {record_of(e)["event_id"] for e, _ in harness.rejected[rejected_before:]}
        for event in bundle:
            if event.event_id not in rejected_ids:
                accepted[f"user:{event.user_id}"].append(event)
        for key, row in harness.rows[rows_before:]:
            assert_row_matches(row, expected_row(accepted[key], as_of(row)), f"bundle {i}")
        max_seen = max(max_seen, *(e.ts for e in bundle))
        rows_before = len(harness.rows)
        harness.advance_watermark(max_seen - 5_000)
        for key, row in harness.rows[rows_before:]:
            assert_row_matches(row, expected_row(accepted[key], as_of(row)), f"timer {i}")
        if i % 5 == 0:  # a checkpoint, then a restart from it
            harness.checkpoint()
            harness.restart()
    harness.advance_watermark(max_seen + 3 * DAY)  # expiry (24h) + lateness (<= 24h)
    harness.checkpoint()
    assert harness.entities() == {} and harness.stored == {} and harness.timers == {}
