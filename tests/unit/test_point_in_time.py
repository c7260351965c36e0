"""The point-in-time rule (udfs/features/point_in_time.py), online and offline.

The feature job's operator (through the harness) captures, for each scored event, each entity's
row over the entity's events before it in the log, as of the event's time (or of a later event
that came first), never including the event itself; the offline replay captures the same rows
from the same log, however both are batched and however event time advances -- except for a
scored event that arrives behind the watermark (``late``), whose row the watermark's expiries
may have aged further, depending on when they ran. Checked against a
brute-force oracle (tests/oracle.py) that shares no code with udfs.

A small timeline (user u1; P = purchase, the scored type; ``*`` arrives after later events)::

    event time:  0s    10s    20s    5s*    30s
    log order:   v     c      P1     P2     P3
    P1's row:    as of 20s over v, c
    P2's row:    as of 20s (P1 came first, later) over v, c, P1 -- the row says as_of 20s
    P3's row:    as of 30s over v, c, P1, P2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.udfs.contract.events import Event
from featurestream.udfs.definitions.defaults import ITEM, USER, events_source, user_features
from featurestream.udfs.definitions.model import Feature, FeatureGroup, Source, validate
from featurestream.udfs.features.point_in_time import ScoredEvents
from featurestream.udfs.features.shard import CapturedRow
from featurestream.udfs.offline.replay import Replay
from featurestream.udfs.store.redis_layout import decode_point_in_time, encode_point_in_time
from tests.harness import DAY, EVENTS, PickleDecoder, Record, ShardHarness, user_definitions
from tests.oracle import assert_row_matches, expected_row

WINDOWS = ("1m", "5m", "1h", "24h")
SCORED = ScoredEvents(EVENTS, frozenset({"purchase"}))
T0 = 1_700_000_000_000


def purchase(event_id: str, user: str, ts: int, item: str | None = "i1") -> Event:
    return Event(event_id, user, "purchase", item, 10.0, ts, None)


def view(event_id: str, user: str, ts: int, item: str | None = "i1") -> Event:
    return Event(event_id, user, "view", item, None, ts, None)


def captured_by_event(captured: Sequence[CapturedRow]) -> dict[tuple[str, str], CapturedRow]:
    return {(c.event_id, c.key): c for c in captured}


def test_the_timeline_of_the_docstring() -> None:
    s = 1_000
    log = [view("v", "u1", T0), Event("c", "u1", "click", "i1", None, T0 + 10 * s, None),
           purchase("P1", "u1", T0 + 20 * s), purchase("P2", "u1", T0 + 5 * s),
           purchase("P3", "u1", T0 + 30 * s)]
    h = ShardHarness(user_definitions(WINDOWS), scored=SCORED)
    h.process_bundle(log)
    rows = {c.event_id: c.row for c in h.sink.captured}
    assert list(rows) == ["P1", "P2", "P3"], "one capture per scored event, in log order"
    for event_id, before, as_of in (("P1", log[:2], T0 + 20 * s), ("P2", log[:3], T0 + 20 * s),
                                    ("P3", log[:4], T0 + 30 * s)):
        row = rows[event_id]
        assert row is not None and row["as_of"] == as_of, event_id
        assert_row_matches(row, expected_row(before, as_of, WINDOWS), event_id)
    first = rows["P1"]
    assert first is not None and first["purchases_1m"] == 0, "never the event itself"


def test_a_new_entity_and_one_whose_windows_emptied_have_no_row() -> None:
    h = ShardHarness(user_definitions(("1m",)), lateness=60_000, scored=SCORED)
    h.process_bundle([purchase("first", "u1", T0), view("v", "u2", T0)])
    h.advance_watermark(T0 + 10 * 60_000)  # u2's window empties and its state is cleared
    h.process_bundle([purchase("again", "u2", T0 + 11 * 60_000)])
    h.process_bundle([view("w", "u3", T0 + 11 * 60_000), purchase("empty", "u3",
                                                                  T0 + 13 * 60_000)])
    rows = {c.event_id: c.row for c in h.sink.captured}
    assert rows == {"first": None, "again": None, "empty": None}, \
        "no state, a cleared state and emptied windows all read as no row"


# -- Online (the operator) and offline (the replay) against the oracle, for any log -----------

@st.composite
def logs(draw: st.DrawFn) -> list[Event]:
    """A log of a few users' events over two hours, some arriving behind later ones."""
    count = draw(st.integers(1, 60))
    newest = T0
    log = []
    for i in range(count):
        newest += draw(st.integers(0, 120_000))
        ts = newest - draw(st.sampled_from([0, 0, 0, 1, 30_000, 90_000]))
        kind = draw(st.sampled_from(["view", "click", "add_to_cart", "purchase", "purchase"]))
        log.append(Event(f"e{i}", draw(st.sampled_from(["u0", "u1", "u2"])), kind,
                         draw(st.sampled_from(["i0", "i1", None])),
                         draw(st.sampled_from([1.0, 2.5, 40.0])) if kind == "purchase" else None,
                         ts, None))
    return log


def cuts(draw: Callable[[st.SearchStrategy[list[int]]], list[int]], n: int) -> list[int]:
    return [*sorted(set(draw(st.lists(st.integers(0, n), max_size=6)))), n]


def oracle(log: Sequence[Event], index: int, entity_of: str) -> tuple[int, dict] | None:
    """The expected (as_of, row) of the event at ``index`` for its user or item."""
    event = log[index]
    key = getattr(event, f"{entity_of}_id")
    earlier = [e for e in log[:index] if getattr(e, f"{entity_of}_id") == key]
    if not earlier:
        return None
    as_of = max(event.ts, *(e.ts for e in earlier))
    return as_of, expected_row(earlier, as_of, WINDOWS)


def check(captured: dict[tuple[str, str], CapturedRow], log: Sequence[Event]) -> None:
    for index, event in enumerate(log):
        if event.event_type != "purchase":
            continue
        for entity in ("user", "item"):
            ident = getattr(event, f"{entity}_id")
            if ident is None:
                assert (event.event_id, f"{entity}:None") not in captured
                continue
            got = captured.pop((event.event_id, f"{entity}:{ident}"))
            want = oracle(log, index, entity)
            if got.late:  # behind the watermark: its expiries may have aged the row further
                assert want is None or got.row is None or got.row["as_of"] >= want[0]
                continue
            if want is None:
                assert got.row is None, (event, entity)
                continue
            assert got.row is not None and got.ts == event.ts
            assert got.row["as_of"] == want[0]
            assert_row_matches(got.row, want[1], f"{entity} {event.event_id}")
    assert not captured, "nothing captured for events that are not scored"


USER_AND_ITEM = validate([FeatureGroup("user_activity", USER, events_source(EVENTS),
                                       user_features(WINDOWS)),
                          FeatureGroup("item_activity", ITEM, events_source(EVENTS),
                                       user_features(WINDOWS))])


@settings(max_examples=150, deadline=None)
@given(data=st.data(), log=logs(), shards=st.integers(1, 4))
def test_online_and_offline_capture_the_oracles_rows(data: st.DataObject, log: list[Event],
                                                      shards: int) -> None:
    h = ShardHarness(USER_AND_ITEM, lateness=DAY, shard_count=shards, scored=SCORED)
    start = 0
    for end in cuts(data.draw, len(log)):
        h.process_bundle(log[start:end])
        if data.draw(st.booleans()) and log[:end]:
            h.advance_watermark(max(e.ts for e in log[:end]) - 5_001)  # timers fire
        start = end
    online = captured_by_event(h.sink.captured)
    replay = Replay(USER_AND_ITEM, {EVENTS: PickleDecoder()}, SCORED,
                    out_of_orderness_ms=5_000, allowed_lateness_ms=DAY)
    frames = [h.frame(e) for e in log]
    offline: list[CapturedRow] = []
    start = 0
    for end in cuts(data.draw, len(frames)):
        batch = replay.feed(frames[start:end])
        assert not batch.dead
        offline += batch.captured
        start = end
    offline_by_event = captured_by_event(offline)
    assert offline_by_event.keys() == online.keys()
    for key, capture in online.items():
        if not (capture.late or offline_by_event[key].late):
            assert offline_by_event[key] == capture, "offline replays what the job captured"
    check(online, log)


# -- Probes: entities the scored events do not feed -------------------------------------------

CATALOG = Source("catalog", topic="catalog", timestamp="ts",
                 fields={"item_id": "string", "price": "double", "ts": "long"})
PROBED = validate([
    FeatureGroup("user_activity", USER, events_source(EVENTS), user_features(("1h",))),
    FeatureGroup("item_prices", ITEM, CATALOG, (
        Feature("updates_1h", "count", window="1h"),
        Feature("max_price_1h", "max", field="price", window="1h")))])


def price(item: str, value: float, ts: int) -> Record:
    return Record("catalog", {"item_id": item, "price": value, "ts": ts})


def test_a_scored_event_probes_entities_its_source_does_not_feed() -> None:
    h = ShardHarness(PROBED, scored=SCORED)
    h.process_bundle([price("i1", 5.0, T0), price("i1", 9.0, T0 + 1_000),
                      purchase("p1", "u1", T0 + 2_000, item="i1"),
                      price("i1", 99.0, T0 + 3_000),
                      purchase("p2", "u1", T0 + 4_000, item="i-unknown"),
                      purchase("p3", "u1", T0 + 5_000, item=None)])
    rows = captured_by_event(h.sink.captured)
    item_row = rows[("p1", "item:i1")].row
    assert item_row is not None
    assert (item_row["updates_1h"], item_row["max_price_1h"], item_row["as_of"]) == (
        2, 9.0, T0 + 2_000), "the catalog before the purchase, as of the purchase"
    assert rows[("p2", "item:i-unknown")].row is None
    assert ("p3", "item:None") not in rows, "no item: nothing to probe"
    assert set(h.entities()) == {"user:u1", "item:i1"}, "a probe leaves no state behind"
    assert h.entities()["item:i1"].version == 3, "a probe counts nothing"
    latest = h.latest_rows()["item:i1"]
    assert (latest["updates_1h"], latest["max_price_1h"]) == (3, 99.0)
    assert math.isclose(h.latest_rows()["user:u1"]["spend_1h"], 30.0)


# -- Stored form ------------------------------------------------------------------------------

values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                   st.floats(allow_nan=False), st.text(max_size=8),
                   st.lists(st.one_of(st.none(), st.text(max_size=3), st.floats(allow_nan=False)),
                            max_size=3))


@given(entity_id=st.text(max_size=10),
       row=st.none() | st.dictionaries(st.text(max_size=10), values, max_size=8))
def test_a_captured_row_is_stored_exactly(entity_id: str, row: dict | None) -> None:
    assert decode_point_in_time(encode_point_in_time(entity_id, row)) == (entity_id, row)
