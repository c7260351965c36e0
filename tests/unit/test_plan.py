"""``featurestream plan`` without Redis: :func:`plan_changes` over :func:`describe` of real
compiled definitions (added windows and entities, removed and changed features, renames that
keep their state, refused key and shard changes), a published layout read back as the writer
stores it, the printed plan, and a property test against an oracle over declared features."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream.cli.plan import duration, render, summary, warm_up
from featurestream.udfs.definitions.filters import eq
from featurestream.udfs.definitions.model import (
    Definitions,
    Entity,
    Feature,
    FeatureGroup,
    validate,
)
from featurestream.udfs.features.layout import (
    FeatureChange,
    PlanReport,
    describe,
    parse_published,
    plan_changes,
)
from featurestream.udfs.features.plan import compile_plans
from tests.harness import user_definitions

EVENTS = user_definitions().sources[0]
USER = Entity("user", ("user_id",))
ITEM = Entity("item", ("item_id",))
HOUR = 3_600_000


def layout(definitions: Definitions, shards: int = 4) -> dict:
    return describe(compile_plans(definitions), shards)


def users(*features: Feature, entity: Entity = USER) -> Definitions:
    return validate([group("user_activity", entity, list(features))])


def group(name: str, entity: Entity, features: list[Feature]) -> FeatureGroup:
    return FeatureGroup(name, entity, EVENTS, tuple(features))


def by_name(changes: list[FeatureChange]) -> dict[str, FeatureChange]:
    return {c.name: c for c in changes}


def test_an_added_window_warms_up_for_its_length_and_the_ratio_with_it() -> None:
    running = layout(user_definitions(("1m", "5m")))
    report = plan_changes(running, layout(user_definitions(("1m", "5m", "1h"))))
    added = by_name(report.added)
    assert set(added) == {"user.events_1h", "user.views_1h", "user.clicks_1h",
                          "user.purchases_1h", "user.spend_1h", "user.avg_spend_1h",
                          "user.distinct_items_1h", "user.ctr_1h"}
    assert all(c.starts_empty and c.complete_after_ms == HOUR for c in added.values())
    assert not any(c.whole_entity for c in added.values())
    assert added["user.spend_1h"].definition == ("sum(amount) over 1h of events where "
                                                 "eq('event_type', 'purchase')")
    assert added["user.ctr_1h"].definition == "ratio(clicks_1h / views_1h)"
    assert not report.removed and not report.changed and report.can_apply
    assert len(report.unchanged) == 11 and "user.last_event_ts" in report.unchanged


def test_a_removed_feature_and_a_changed_filter() -> None:
    running = layout(users(Feature("events_1m", "count", window="1m"),
                           Feature("views_1m", "count", window="1m",
                                   where=eq("event_type", "view")),
                           Feature("spend_1h", "sum", field="amount", window="1h")))
    new = layout(users(Feature("events_1m", "count", window="1m"),
                       Feature("views_1m", "count", window="1m",
                               where=eq("event_type", "click"))))
    report = plan_changes(running, new)
    assert report.unchanged == ["user.events_1m"] and not report.added
    assert report.removed == [FeatureChange("user", "spend_1h", "sum(amount) over 1h of events")]
    assert report.changed == [FeatureChange(
        "user", "views_1m", "count() over 1m of events where eq('event_type', 'click')",
        before="count() over 1m of events where eq('event_type', 'view')",
        starts_empty=True, complete_after_ms=60_000)]
    assert report.can_apply and report.has_changes


def test_a_lifetime_feature_added_to_running_state_never_completes() -> None:
    running = layout(users(Feature("events_1m", "count", window="1m")))
    report = plan_changes(running, layout(users(Feature("events_1m", "count", window="1m"),
                                                Feature("total", "count", window="lifetime"))))
    assert report.added == [FeatureChange("user", "total", "count() over lifetime of events",
                                          starts_empty=True, complete_after_ms=None)]
    assert warm_up(report.added[0]).startswith("starts empty; never complete: it misses history")


def test_a_feature_reading_kept_aggregations_keeps_its_state() -> None:
    views = Feature("views_1m", "count", window="1m", where=eq("event_type", "view"))
    running = layout(users(Feature("events_1m", "count", window="1m"), views))
    renamed = Feature("page_views_1m", "count", window="1m", where=eq("event_type", "view"))
    # events_1m now counts views: the accumulator views_1m read is kept
    retargeted = Feature("events_1m", "count", window="1m", where=eq("event_type", "view"))
    report = plan_changes(running, layout(users(retargeted, renamed)))
    assert [(c.name, c.starts_empty) for c in report.added] == [("user.page_views_1m", False)]
    assert [(c.name, c.starts_empty) for c in report.changed] == [("user.events_1m", False)]
    assert [c.name for c in report.removed] == ["user.views_1m"]
    assert warm_up(report.added[0]) == ("keeps its state: it reads only aggregations the job "
                                        "already keeps")


def test_a_changed_entity_key_and_shard_count_are_refused_with_the_fix() -> None:
    running = layout(users(Feature("events_1m", "count", window="1m")))
    rekeyed = layout(users(Feature("events_1m", "count", window="1m"),
                           entity=Entity("user", ("event_id",))), shards=8)
    report = plan_changes(running, rekeyed)
    assert [r.subject for r in report.refused] == ["state shards", "entity 'user'"]
    assert report.refused[0].reason.startswith("4 -> 8")
    assert report.refused[0].fix == "set FEATURESTREAM_STATE_SHARDS back to 4"
    assert "keys user_id -> event_id" in report.refused[1].reason
    assert "new entity name" in report.refused[1].fix
    assert not report.can_apply
    assert summary(report) == ("Plan: 0 to add, 0 to change, 0 to remove; the job would refuse "
                               "to start: state shards; entity 'user' cannot be carried over "
                               "(!).")


def test_a_new_entity_and_a_removed_one() -> None:
    running = validate([
        group("user_activity", USER, [Feature("events_1m", "count", window="1m")]),
        group("sessions", Entity("session", ("event_id",)), [Feature("n", "count", window="5m")])])
    new = validate([
        group("user_activity", USER, [Feature("events_1m", "count", window="1m")]),
        group("items", ITEM, [
            Feature("buyers_24h", "distinct", field="user_id", window="24h"),
            Feature("recent", "last_n", field="user_id", n=3, window="1h")])])
    report = plan_changes(layout(running), layout(new))
    assert report.added == [
        FeatureChange("item", "buyers_24h", "distinct(user_id) over 24h of events",
                      starts_empty=True, complete_after_ms=24 * HOUR, whole_entity=True),
        FeatureChange("item", "recent", "last_n(user_id, n=3) over 1h of events",
                      starts_empty=True, complete_after_ms=HOUR, whole_entity=True)]
    assert report.removed == [FeatureChange("session", "n", "count() over 5m of events",
                                            whole_entity=True)]
    assert report.can_apply


def test_a_published_layout_read_back_plans_the_same() -> None:
    running = layout(user_definitions())
    new = layout(user_definitions(("1m", "1h", "7d")))
    stored = json.dumps(running, sort_keys=True)  # as RedisRowWriter.publish_layout stores it
    read_back, direct = plan_changes(parse_published(stored.encode()), new), plan_changes(
        running, new)
    read_back.removed.sort(key=lambda c: c.name)  # stored with sorted keys: in name order
    direct.removed.sort(key=lambda c: c.name)
    assert read_back == direct and read_back.removed and read_back.added
    assert not plan_changes(parse_published(stored), running).has_changes


@pytest.mark.parametrize(("text", "message"), [
    ("16", "format None"), ("{nope", "not JSON"), ('{"format": 9}', "format 9")])
def test_a_layout_this_release_cannot_read_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_published(text)


def test_the_printed_plan() -> None:
    running = layout(users(Feature("events_1m", "count", window="1m"),
                           Feature("views_1m", "count", window="1m",
                                   where=eq("event_type", "view")),
                           Feature("spend_1h", "sum", field="amount", window="1h")))
    new = validate([
        group("user_activity", USER, [
            Feature("events_1m", "count", window="1m"),
            Feature("views_1m", "count", window="1m", where=eq("event_type", "click")),
            Feature("total", "count", window="lifetime")]),
        group("items", ITEM, [Feature("views_90m", "count", window="90m")])])
    assert render(plan_changes(running, layout(new))) == [
        "",
        "  + user.total = count() over lifetime of events",
        "      starts empty; never complete: it misses history (reported as warming up for "
        "good)",
        "  + item.views_90m = count() over 90m of events  (new entity item)",
        "      starts empty; warms up for 1h30m (reported as warming up until then)",
        "  ~ user.views_1m = count() over 1m of events where eq('event_type', 'view')",
        "      -> count() over 1m of events where eq('event_type', 'click')",
        "      restarts empty; warms up for 1m (reported as warming up until then)",
        "  - user.spend_1h = sum(amount) over 1h of events",
        "",
        "1 feature unchanged.",
        "Plan: 2 to add, 1 to change, 1 to remove; the job can resume from its savepoint.",
    ]
    assert render(plan_changes(running, running)) == [
        "3 features unchanged.",
        "Plan: 0 to add, 0 to change, 0 to remove; the running job already runs these "
        "definitions."]
    assert render(PlanReport()) == [summary(PlanReport())]


@pytest.mark.parametrize(("ms", "text"), [(60_000, "1m"), (5_400_000, "1h30m"),
                                          (7 * 24 * HOUR, "7d"), (1_500, "1s500ms"), (0, "0ms")])
def test_durations_read_as_people_write_them(ms: int, text: str) -> None:
    assert duration(ms) == text


# -- Property: the plan of any two sets of declared features, by an oracle over the declarations

SPECS = {  # a pool of declarations, and each one's window length (None: lifetime)
    "count_1m": (Feature("x", "count", window="1m"), 60_000),
    "views_5m": (Feature("x", "count", window="5m", where=eq("event_type", "view")), 300_000),
    "max_1h": (Feature("x", "max", field="amount", window="1h"), HOUR),
    "total": (Feature("x", "count", window="lifetime"), None),
}
declared = st.dictionaries(st.sampled_from("abcde"), st.sampled_from(sorted(SPECS)),
                           min_size=1, max_size=5)


def declare(features: dict[str, str]) -> Definitions:
    return users(*(Feature(name, SPECS[spec][0].kind, field=SPECS[spec][0].field,
                           window=SPECS[spec][0].window, where=SPECS[spec][0].where)
                   for name, spec in sorted(features.items())))


@given(declared, declared)
def test_the_plan_of_any_change_matches_the_oracle(running: dict[str, str],
                                                   new: dict[str, str]) -> None:
    report = plan_changes(layout(declare(running)), layout(declare(new)))
    kept = set(running.values())  # the aggregations the running job keeps
    expect_added = {n: (s not in kept, SPECS[s][1] if s not in kept else None)
                    for n, s in new.items() if n not in running}
    expect_changed = {n: (s not in kept, SPECS[s][1] if s not in kept else None)
                      for n, s in new.items() if n in running and running[n] != s}
    assert {c.feature: (c.starts_empty, c.complete_after_ms) for c in report.added} == \
        expect_added
    assert {c.feature: (c.starts_empty, c.complete_after_ms) for c in report.changed} == \
        expect_changed
    assert {c.feature for c in report.removed} == set(running) - set(new)
    assert set(report.unchanged) == {f"user.{n}" for n, s in new.items() if running.get(n) == s}
    assert report.can_apply
