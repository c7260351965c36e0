"""Changed definitions over stored state, and user-defined definitions end to end.

Through :class:`ShardHarness`: a job checkpointed with one set of definitions and restarted with
another (a resubmission from a savepoint) keeps every unchanged feature exactly as a job that
always ran the new definitions has it; added features start empty and their rows say until when
they warm up; removed features, windows and entities leave the rows and the state; a changed
entity key is refused. Then a two-entity payments definition set against a brute-force oracle
written here, and the state hygiene of every entity: idle keys leave nothing behind, keys with a
lifetime feature keep their state for good.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st

from featurestream.udfs.contract.events import Event
from featurestream.udfs.definitions.defaults import USER, user_features
from featurestream.udfs.definitions.filters import eq, gt, isin, not_null
from featurestream.udfs.definitions.model import (
    Definitions,
    Entity,
    Feature,
    FeatureGroup,
    Source,
    validate,
)
from featurestream.udfs.features.layout import LAYOUT_ENTRY, StoredLayoutMismatch
from tests.harness import DAY, Record, ShardHarness, as_of, record_of, user_definitions
from tests.oracle import assert_row_matches, expected_row

HOUR = 3_600_000
EVENTS = user_definitions().sources[0]
KINDS = ("view", "click", "purchase")


def stream(count: int, start: int = 0, users: int = 3) -> list[Event]:
    """Built-in events of a few users, a little out of order, every kind, with items."""
    return [Event(f"e{start + i}", f"u{i % users}", KINDS[i % 3], f"i{i % 5}",
                  3.5 if i % 3 == 2 else None, (start + i) * 37_000 + (i % 4) * 5_000, None)
            for i in range(count)]


def feed(harness: ShardHarness, events: Iterable[Event]) -> None:
    for event in events:
        harness.process(event)
        harness.advance_watermark(event.ts - 10_000)


def by_user(events: Iterable[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for event in events:
        out.setdefault(f"user:{event.user_id}", []).append(event)
    return out


def users_with(*groups: FeatureGroup, windows: Sequence[str] = ("1m", "1h")) -> Definitions:
    """The built-in user features over ``windows``, plus ``groups``."""
    return validate([FeatureGroup("user_activity", USER, EVENTS, user_features(windows)),
                     *groups])


def upgraded(before: Definitions, after: Definitions, cut: int = 200, total: int = 400,
             shards: int = 2) -> tuple[ShardHarness, int, list[Event]]:
    """A harness run with ``before`` over ``cut`` events, checkpointed, restarted with
    ``after`` and fed the rest; with the index of its first row after the restart."""
    events = stream(total)
    harness = ShardHarness(before, shard_count=shards)
    feed(harness, events[:cut])
    harness.checkpoint()
    harness.restart(after)
    first = len(harness.rows)
    feed(harness, events[cut:])
    return harness, first, events


def test_a_removed_window_leaves_every_other_feature_as_if_always_defined_so() -> None:
    """1m, 5m, 1h, 24h -> 1m, 1h, 24h: distinct_items_1h and the rest carry on exactly."""
    after = user_definitions(("1m", "1h", "24h"))
    harness, first, events = upgraded(user_definitions(), after)
    always = ShardHarness(after, shard_count=2)
    feed(always, events)
    users = by_user(events)
    assert len(harness.rows) > first
    for key, row in harness.rows[first:]:
        assert not any(name.endswith("_5m") for name in row) and "warming_up" not in row
        assert_row_matches(row, expected_row(users[key], as_of(row), ("1m", "1h", "24h")), key)
    written = {(key, row["as_of"], row["version"]): row for key, row in always.rows}
    for key, row in harness.rows[first:]:
        assert written.get((key, row["as_of"], row["version"]), row) == row
    assert harness.latest_rows() == always.latest_rows()
    assert harness.state_bytes(harness.entities()) == always.state_bytes(always.entities())
    harness.checkpoint()  # the converted states are stored in the new layout
    assert harness.state_bytes(harness.stored_states()) == always.state_bytes(
        {k: s for k, s in always.entities().items()})
    harness.advance_watermark(events[-1].ts + 3 * DAY)  # old timers fire on converted state
    harness.checkpoint()
    assert harness.entities() == {} and harness.stored == {} and harness.timers == {}


def test_added_features_start_empty_and_warm_up_for_a_window() -> None:
    """1m -> 1m, 1h, 24h and a lifetime feature: the new ones count from the change on and the
    row says until when each is incomplete (a ratio of warming features too; a lifetime one,
    for good)."""
    ever = FeatureGroup("user_history", USER, EVENTS, (
        Feature("purchases_ever", "count", window="lifetime",
                where=eq("event_type", "purchase")),))
    before = user_definitions(("1m",))
    after = users_with(ever, windows=("1m", "1h", "24h"))
    cut, total = 200, 2_800  # the last events come more than a day after the change
    events = stream(total)
    harness = ShardHarness(before, shard_count=1)
    feed(harness, events[:cut])
    harness.checkpoint()
    changed_at = max(s.as_of for s in harness.stored_states().values())
    harness.restart(after)
    first = len(harness.rows)
    feed(harness, events[cut:])
    [layout] = harness.layouts().values()
    assert set(layout.entities["user"].since.values()) == {changed_at}
    lengths = {"1h": HOUR, "24h": DAY}
    added = {name: changed_at + lengths[name.rsplit("_", 1)[1]]
             for name in harness.rows[-1][1] if name.endswith(("_1h", "_24h"))}
    assert len(added) == 2 * 7 + 1  # ctr_1h among them
    everything, since_change = by_user(events), by_user(events[cut:])
    warm = cold = 0
    for key, row in harness.rows[first:]:
        expect = {name: until for name, until in added.items() if until > as_of(row)}
        assert row.pop("warming_up") == {**expect, "purchases_ever": None}
        warm, cold = warm + bool(expect), cold + (not expect)
        after_change = expected_row(since_change[key], as_of(row), ("1h", "24h"))
        assert_row_matches({n: row.pop(n) for n in added}, {n: after_change[n] for n in added},
                           key)
        assert row.pop("purchases_ever") == sum(
            e.event_type == "purchase" for e in since_change[key] if e.ts <= as_of(row))
        assert_row_matches(row, expected_row(everything[key], as_of(row), ("1m",)), key)
    assert warm and cold  # rows before and after the warm-up ended


def test_after_a_change_every_restored_row_shows_the_added_feature_at_once() -> None:
    """1m -> 1m and 1h: at the first checkpoint after the restart (its marker touches every
    shard) each entity's row is written again, with the 1 h features at 0 and warming up --
    not only at the entity's next event; a restart without a change rewrites nothing."""
    before, after = user_definitions(("1m",)), user_definitions(("1m", "1h"))
    harness = ShardHarness(before, shard_count=4)
    feed(harness, stream(300, users=7))
    harness.checkpoint()
    last = harness.latest_rows()
    harness.restart(after)
    first = len(harness.rows)
    harness.checkpoint()
    rewritten = dict(harness.rows[first:])
    assert set(rewritten) == set(last) and len(harness.rows) - first == len(last) == 7
    for key, row in rewritten.items():
        assert as_of(row) == as_of(last[key])
        assert row["events_1h"] == 0 and "events_1h" in row["warming_up"], key
        assert {n: row[n] for n in last[key] if n != "warming_up"} == {
            n: v for n, v in last[key].items() if n != "warming_up"}, key
    harness.restart()  # the same definitions again: nothing to show
    first = len(harness.rows)
    harness.checkpoint()
    assert harness.rows[first:] == []


def test_a_feature_removed_then_added_back_warms_up_again() -> None:
    """Its old state went with the first change: it starts empty like any added feature."""
    without = validate([FeatureGroup("user_activity", USER, EVENTS, tuple(
        f for f in user_features(("1m", "1h")) if f.name != "distinct_items_1h"))])
    harness = ShardHarness(user_definitions(("1m", "1h")), shard_count=1)
    events = stream(120)
    feed(harness, events[:60])
    harness.checkpoint()
    harness.restart(without)
    feed(harness, events[60:90])
    harness.checkpoint()
    changed_at = max(s.as_of for s in harness.stored_states().values())
    harness.restart(user_definitions(("1m", "1h")))
    first = len(harness.rows)
    feed(harness, events[90:])
    since_change = by_user(events[90:])
    for key, row in harness.rows[first:]:
        assert row["warming_up"] == {"distinct_items_1h": changed_at + HOUR}
        assert row["distinct_items_1h"] == expected_row(
            since_change[key], as_of(row), ("1h",))["distinct_items_1h"]


def test_a_removed_feature_leaves_the_rows_and_the_state() -> None:
    kept = tuple(f for f in user_features(("1m", "1h")) if not f.name.startswith("distinct"))
    after = validate([FeatureGroup("user_activity", USER, EVENTS, kept)])
    harness, first, events = upgraded(user_definitions(("1m", "1h")), after)
    for key, row in harness.rows[first:]:
        assert "distinct_items_1h" not in row
        assert_row_matches(row, {n: v for n, v in expected_row(
            by_user(events)[key], as_of(row), ("1m", "1h")).items() if not n.startswith(
            "distinct")}, key)
    harness.checkpoint()
    plan = harness.processors["user"].plan
    assert not any('"distinct"' in signature for signature in plan.layout)
    stored = harness.stored_states()  # every state in the new layout (checked as it loads)
    assert stored and all(s.layout == plan.layout_id for s in stored.values())
    assert all(len(window[2]) == len(slots) for s in stored.values()
               for window, slots in zip(s.windows, [[a for a in plan.accumulators
                                                     if a.window == w.name]
                                                    for w in plan.windows], strict=True))


def test_changed_entity_keys_are_refused_with_the_fix() -> None:
    rekeyed = validate([FeatureGroup("user_activity", Entity("user", ("user_id", "item_id")),
                                     EVENTS, user_features(("1m", "1h")))])
    harness = ShardHarness(user_definitions(("1m", "1h")), shard_count=2)
    feed(harness, stream(30))
    harness.checkpoint()
    for touch in (lambda: harness.process(stream(1, start=40)[0]),
                  lambda: harness.advance_watermark(2 * DAY)):
        harness.restart(rekeyed)
        with pytest.raises(StoredLayoutMismatch, match=re.escape(
                "entity 'user': its stored state is keyed by user_id, the definitions key it by "
                "user_id, item_id: the stored ids would mean something else. Keep the keys, or "
                "give the new key a new entity name (it starts empty)")):
            touch()


def test_an_entity_added_to_running_state_warms_up() -> None:
    """The job read earlier events without counting them for a new entity: its rows say so, from
    the shard's latest event time, or (a shard that held no state) its first event after."""
    items = FeatureGroup("item_activity", Entity("item", ("item_id",)), EVENTS, (
        Feature("events_5m", "count", window="5m"),))
    harness, first, events = upgraded(user_definitions(("1m", "1h")), users_with(items),
                                      cut=100, total=120, shards=2)
    item_rows = [row for key, row in harness.rows[first:] if key.startswith("item:")]
    assert "warming_up" in item_rows[0]
    for row in item_rows:
        if "warming_up" in row:
            until = row["warming_up"]["events_5m"]
            assert until > row["as_of"]
            assert events[99].ts - 60_000 <= until - 5 * 60_000 <= row["as_of"]
        else:  # a full window after the change
            assert row["as_of"] >= events[99].ts + 4 * 60_000


def test_a_removed_entity_leaves_the_state_and_later_expiries_pass() -> None:
    items = FeatureGroup("item_activity", Entity("item", ("item_id",)), EVENTS, (
        Feature("events_5m", "count", window="5m"),
        Feature("buyers_1h", "distinct", field="user_id", window="1h",
                where=eq("event_type", "purchase"))))
    harness, first, events = upgraded(users_with(items), user_definitions(("1m", "1h")),
                                      cut=100, total=150, shards=3)
    assert all(key.startswith("user:") for key, _ in harness.rows[first:])
    harness.checkpoint()
    assert all(key.startswith("user:") for m in harness.map_states.values() for key in m
               if key != LAYOUT_ENTRY)
    assert all(list(layout.entities) == ["user"] for layout in harness.layouts().values())
    harness.advance_watermark(events[-1].ts + 3 * DAY)  # the items' timers fire: nothing due
    harness.checkpoint()
    assert harness.entities() == {} and harness.stored == {} and harness.timers == {}


def test_a_change_and_a_failure_later_replay_to_the_same_rows() -> None:
    """A restart from a checkpoint taken after the change converts nothing again."""
    after = users_with(windows=("1m", "5m", "24h"))
    harness, first, _ = upgraded(user_definitions(("1m", "1h")), after, cut=150, total=250)
    assert all("warming_up" in row for _, row in harness.rows[first:])
    harness.checkpoint()
    layouts = {n: m[LAYOUT_ENTRY] for n, m in harness.map_states.items()}
    steady_rows = len(harness.rows)
    more = stream(60, start=250)
    feed(harness, more)
    expected = harness.rows[steady_rows:]
    harness.restart()
    feed(harness, more)
    assert harness.rows[steady_rows + len(expected):] == expected
    assert {n: m[LAYOUT_ENTRY] for n, m in harness.map_states.items()} == layouts


# -- User-defined definitions against a brute-force oracle ---------------------------------------

PAYMENTS = Source("payments", topic="payments", timestamp="ts", fields={
    "merchant_id": "string", "card_id": "string", "amount": "double", "items": "long",
    "status": "string", "country": "string?", "ts": "long"})
CHARGEBACKS = Source("chargebacks", topic="disputes", timestamp="at", fields={
    "card_id": "string", "reason": "string", "at": "long"})
MERCHANT = Entity("merchant", ("merchant_id",))
CARD = Entity("card", ("card_id",))
DECLINED = eq("status", "declined")
PAYMENT_GROUPS = (
    FeatureGroup("merchant_velocity", MERCHANT, PAYMENTS, (
        Feature("payments_5m", "count", window="5m"),
        Feature("payments_1h", "count", window="1h"),
        Feature("declined_1h", "count", window="1h", where=DECLINED),
        Feature("settled_1h", "sum", field="amount", window="1h",
                where=isin("status", ("ok", "pending"))),
        Feature("items_1h", "sum", field="items", window="1h"),
        Feature("big_max_1h", "max", field="amount", window="1h", where=gt("amount", 50)),
        Feature("min_amount_5m", "min", field="amount", window="5m"),
        Feature("mean_amount_1h", "mean", field="amount", window="1h"),
        Feature("cards_1h", "approx_distinct", field="card_id", window="1h"),
        Feature("countries_1h", "distinct", field="country", window="1h"),
        Feature("last_status_5m", "last", field="status", window="5m"),
        Feature("since_decline", "time_since_last", window="1h", where=DECLINED),
        Feature("decline_rate_1h", "ratio", numerator="declined_1h",
                denominator="payments_1h"),
        Feature("amount_ever", "sum", field="amount", window="lifetime"),
    )),
    FeatureGroup("card_activity", CARD, PAYMENTS, (
        Feature("countries_last_3", "last_n", field="country", window="1h", n=3,
                where=not_null("country")),
        Feature("payments_1m", "count", window="1m"),
        Feature("max_amount_ever", "max", field="amount", window="lifetime"),
        Feature("last_payment_ts", "last_event_ts"),
    )),
    FeatureGroup("card_disputes", CARD, CHARGEBACKS, (  # a second source of the card
        Feature("chargebacks_1h", "count", window="1h"),
        Feature("fraud_ever", "count", window="lifetime", where=eq("reason", "fraud")),
    )),
)
PAYMENT_DEFINITIONS = validate(PAYMENT_GROUPS)


@dataclass(frozen=True)
class Fact:
    """An event of a source, its event time and its arrival number (ties in event time go to
    the later arrival)."""

    seq: int
    source: str
    ts: int
    fields: dict[str, Any]


def _covered(facts: Sequence[Fact], as_of: int, window: str, source: str = "payments"
             ) -> list[Fact]:
    """The ``source`` events a window covers, by the rule of ``udfs/aggregations/windows.py``
    written out: hop = length / 60, ``(as_of // hop + 1) * hop - length <= ts <= as_of``;
    lifetime: ``ts <= as_of``."""
    facts = [f for f in facts if f.source == source and f.ts <= as_of]
    if window == "lifetime":
        return facts
    length = {"1m": 60_000, "5m": 300_000, "1h": HOUR}[window]
    hop = length // 60
    return [f for f in facts if (as_of // hop + 1) * hop - length <= f.ts]


def _where(facts: Sequence[Fact], test: Callable[[dict[str, Any]], bool]) -> list[Fact]:
    return [f for f in facts if test(f.fields)]


def _values(facts: Sequence[Fact], name: str) -> list[Any]:
    return [f.fields[name] for f in facts if f.fields[name] is not None]


def _newest_first(facts: Sequence[Fact], name: str) -> list[Any]:
    ordered = sorted((f for f in facts if f.fields[name] is not None),
                     key=lambda f: (f.ts, f.seq), reverse=True)
    return [f.fields[name] for f in ordered]


def merchant_row(facts: Sequence[Fact], as_of: int) -> dict[str, Any]:
    w5, w1h = _covered(facts, as_of, "5m"), _covered(facts, as_of, "1h")
    declined = _where(w1h, lambda f: f["status"] == "declined")
    amounts = _values(w1h, "amount")
    row: dict[str, Any] = {
        "payments_5m": len(w5),
        "payments_1h": len(w1h),
        "declined_1h": len(declined),
        "settled_1h": math.fsum(_values(_where(w1h, lambda f: f["status"] in ("ok", "pending")),
                                        "amount")),
        "items_1h": sum(_values(w1h, "items")),
        "big_max_1h": max(_values(_where(w1h, lambda f: f["amount"] > 50), "amount"),
                          default=None),
        "min_amount_5m": min(_values(w5, "amount"), default=None),
        "mean_amount_1h": math.fsum(amounts) / len(amounts) if amounts else None,
        "cards_1h": len(set(_values(w1h, "card_id"))),  # few cards: the sketch is exact
        "countries_1h": len(set(_values(w1h, "country"))),
        "last_status_5m": next(iter(_newest_first(w5, "status")), None),
        "since_decline": as_of - max(f.ts for f in declined) if declined else None,
        "amount_ever": math.fsum(_values(_covered(facts, as_of, "lifetime"), "amount")),
    }
    row["decline_rate_1h"] = (row["declined_1h"] / row["payments_1h"] if row["payments_1h"]
                              else None)
    return row


def card_row(facts: Sequence[Fact], as_of: int) -> dict[str, Any]:
    disputes = "chargebacks"
    return {
        "countries_last_3": _newest_first(_covered(facts, as_of, "1h"), "country")[:3],
        "payments_1m": len(_covered(facts, as_of, "1m")),
        "max_amount_ever": max(_values(_covered(facts, as_of, "lifetime"), "amount"),
                               default=None),
        "last_payment_ts": max((f.ts for f in facts if f.ts <= as_of), default=None),
        "chargebacks_1h": len(_covered(facts, as_of, "1h", disputes)),
        "fraud_ever": len(_where(_covered(facts, as_of, "lifetime", disputes),
                                 lambda f: f["reason"] == "fraud")),
    }


def records(facts: Sequence[Fact]) -> list[Record]:
    """The harness records of ``facts`` (the arrival number rides along as a field the sources
    do not declare, so the test can tell which event was rejected)."""
    return [Record(f.source, {**f.fields, "seq": f.seq}) for f in facts]


ORACLES = {"merchant": merchant_row, "card": card_row}
KEYS = {"merchant": "merchant_id", "card": "card_id"}

facts_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=HOUR),  # event time
        st.sampled_from(["m1", "m2"]),
        st.sampled_from(["c1", "c2", "c3", "c4", "c5"]),
        st.sampled_from([0.5, 10.0, 49.99, 50.0, 75.25, 120.0]),
        st.integers(min_value=0, max_value=5),  # items
        st.sampled_from(["ok", "pending", "declined", "refunded"]),
        st.sampled_from(["FR", "DE", "", None]),
        st.integers(min_value=0, max_value=30 * 60_000),  # how far behind the stream it arrives
        st.integers(min_value=1, max_value=3),  # events in the bundle this one starts
        st.sampled_from(["payments"] * 3 + ["chargebacks"]),
    ),
    min_size=1,
    max_size=40,
)


def fact(seq: int, ts: int, merchant: str, card: str, amount: float, items: int, status: str,
         country: str | None, source: str) -> Fact:
    if source == "chargebacks":
        return Fact(seq, source, ts, {"card_id": card, "reason": status, "at": ts})
    return Fact(seq, source, ts, {"merchant_id": merchant, "card_id": card, "amount": amount,
                                  "items": items, "status": status, "country": country,
                                  "ts": ts})


@settings(max_examples=150, deadline=None)
@given(facts_strategy, st.sampled_from([60_000, 5 * 60_000, HOUR]), st.sampled_from([1, 3]))
def test_every_row_of_user_defined_entities_equals_the_oracle(
        raw: list[tuple[int, str, str, float, int, str, str | None, int, int, str]],
        lateness: int, shards: int) -> None:
    """Two entities from one source, one of them also from a second source: disordered
    arrivals, bundles, lateness, expiry, restarts; every row equals the oracle."""
    harness = ShardHarness(PAYMENT_DEFINITIONS, lateness=lateness, shard_count=shards)
    arrivals = sorted(raw, key=lambda r: r[0] + r[7])
    facts = [fact(i, ts, m, c, a, n, s, country, source)
             for i, (ts, m, c, a, n, s, country, _, _, source) in enumerate(arrivals)]
    accepted: dict[str, list[Fact]] = {}
    max_seen, i, checked = 0, 0, 0

    def check(rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        nonlocal checked
        for key, row in rows:
            mine = accepted.get(key, [])
            assert row["version"] == len(mine) and "warming_up" not in row
            assert_row_matches(row, ORACLES[key.split(":")[0]](mine, as_of(row)), key)
            checked += 1

    while i < len(facts):
        bundle = facts[i:i + arrivals[i][8]]
        i += len(bundle)
        before, rejected_before = len(harness.rows), len(harness.rejected)
        harness.process_bundle(records(bundle))
        rejected = {(e.key, record_of(e)["seq"]) for e, _ in harness.rejected[rejected_before:]}
        for f in bundle:
            for entity, field in KEYS.items():
                key = f"{entity}:{f.fields.get(field)}"
                if field in f.fields and (key, f.seq) not in rejected:
                    accepted.setdefault(key, []).append(f)
        check(harness.rows[before:])
        max_seen = max(max_seen, *(f.ts for f in bundle))
        before = len(harness.rows)
        harness.advance_watermark(max_seen - 60_000)
        check(harness.rows[before:])
        if i % 4 == 0:
            harness.checkpoint()
            harness.restart()
    assert checked
    target(len(harness.rejected), label="rejected events")
    before = len(harness.rows)
    harness.advance_watermark(max_seen + 2 * DAY)
    check(harness.rows[before:])
    harness.checkpoint()  # loads the shards no timer touched since the last restart ...
    harness.advance_watermark(harness.watermark)  # ... and replays their aging
    # Every key keeps its state for good (lifetime features), without timers.
    assert harness.timers == {} and set(harness.stored_states()) == set(accepted)


def test_idle_keys_of_every_entity_leave_nothing_and_lifetime_keys_keep_their_state() -> None:
    sliding = tuple(replace(g, features=tuple(f for f in g.features if f.window != "lifetime"))
                    for g in PAYMENT_GROUPS)
    for groups, kept in ((sliding, set()), ((sliding[0], PAYMENT_GROUPS[1]), {"card"})):
        harness = ShardHarness(validate(groups), lateness=HOUR, shard_count=3)
        for i in range(60):
            harness.process(records([fact(i, i * 20_000, f"m{i % 4}", f"c{i % 7}", 1.0 + i,
                                          i % 3, "ok", "FR", "payments")])[0])
        harness.checkpoint()
        assert {k.split(":")[0] for k in harness.stored_states()} == {"merchant", "card"}
        assert harness.timers
        harness.advance_watermark(3 * DAY)
        harness.checkpoint()
        assert harness.timers == {}
        assert {k.split(":")[0] for k in harness.entities()} == kept
        assert {k.split(":")[0] for k in harness.stored_states()} == kept
        harness.restart()
        harness.advance_watermark(4 * DAY)
        assert harness.timers == {}
        if kept:
            card = harness.latest_rows()["card:c3"]
            assert card["payments_1m"] == 0 and card["max_amount_ever"] == 60.0
            # Without the lifetime feature the kept keys go too, even when a checkpoint marker
            # is the first to touch their shard after the change.
            harness.restart(validate(sliding))
            harness.checkpoint()
            harness.advance_watermark(6 * DAY)
            harness.checkpoint()
            assert harness.entities() == {} and harness.stored == {} and harness.timers == {}
