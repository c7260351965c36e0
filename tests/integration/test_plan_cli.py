"""``featurestream plan`` and ``featurestream features --entity`` as users run them: the real
console script against a real redis-server, the layout published by the feature job's own
writer (:class:`RedisRowWriter`), changed definitions in a file; printed plan and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from featurestream.cli.plan import refuse_unresumable_state
from featurestream.errors import UserFacingError
from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.settings import Settings
from featurestream.udfs.definitions.defaults import default_definitions
from featurestream.udfs.features.layout import describe
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.store.redis_layout import layout_key
from testing.reader_fixtures import (
    FEATURESTREAM,
    REPO,
    RedisProcess,
    free_port,
    write_item_definitions,
)

pytestmark = pytest.mark.redis

PREFIX = "t:"
CHANGED = '''"""Built-in users without the 5m window, a filter changed, a lifetime count."""
from featurestream.definitions import Feature, FeatureGroup, eq, isin
from featurestream.udfs.definitions.defaults import USER, ITEM, events_source, user_features

events = events_source("events")
features = [f for f in user_features(("1m", "1h", "24h")) if f.name != "views_1m"]
user_activity = FeatureGroup("user_activity", USER, events, features + [
    Feature("views_1m", "count", window="1m", where=isin("event_type", ["view", "click"])),
    Feature("total_events", "count", window="lifetime"),
])
item_popularity = FeatureGroup("item_popularity", ITEM, events, [
    Feature("views_1h", "count", window="1h", where=eq("event_type", "view")),
])
'''


@pytest.fixture()
def published(server: RedisProcess) -> RedisRowWriter:
    """The built-in definitions' layout, published as the feature job does at open()."""
    writer = RedisRowWriter(RedisTarget(server.url, PREFIX, 60, 100))
    plans = compile_plans(default_definitions(Settings().windows, "events"))
    writer.publish_layout(describe(plans, 16))
    return writer


def featurestream(server: RedisProcess, *args: str, url: str = "", prefix: str = PREFIX,
                  **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTREAM_")}
    full.update({"FEATURESTREAM_REDIS_URL": url or server.url,
                 "FEATURESTREAM_REDIS_KEY_PREFIX": prefix, "FEATURESTREAM_STATE_SHARDS": "16"})
    full.update({f"FEATURESTREAM_{k.upper()}": v for k, v in env.items()})
    return subprocess.run([str(FEATURESTREAM), *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_plan_of_changed_definitions_against_the_published_layout(
        server: RedisProcess, published: RedisRowWriter, tmp_path: Path) -> None:
    changed = tmp_path / "changed.py"
    changed.write_text(CHANGED, encoding="utf-8")
    run = featurestream(server, "plan", "--definitions", str(changed))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert f"Definitions: {changed} (fingerprint " in out
    assert f"Running layout: {server.url} under {PREFIX}_meta:features_layout (16 state " \
        "shards)" in out
    assert ("  + user.total_events = count() over lifetime of events\n"
            "      starts empty; never complete: it misses history") in out
    assert ("  + item.views_1h = count() over 1h of events where eq('event_type', 'view')  "
            "(new entity item)\n      starts empty; warms up for 1h") in out
    assert ("  ~ user.views_1m = count() over 1m of events where eq('event_type', 'view')\n"
            "      -> count() over 1m of events where isin('event_type', ['view', 'click'])\n"
            "      restarts empty; warms up for 1m") in out
    assert "  - user.spend_5m = sum(amount) over 5m of events where eq('event_type', " \
        "'purchase')" in out
    assert "20 features unchanged." in out
    assert out.rstrip().endswith("Plan: 2 to add, 1 to change, 5 to remove; the job can "
                                 "resume from its savepoint.")
    # The same definitions as the running job: nothing to do.
    same = featurestream(server, "plan")
    assert same.returncode == 0, same.stderr
    assert same.stdout.rstrip().endswith("the running job already runs these definitions.")


def test_a_plan_the_job_would_refuse_exits_1(server: RedisProcess, published: RedisRowWriter,
                                             tmp_path: Path) -> None:
    run = featurestream(server, "plan", "--definitions",
                        str(write_item_definitions(tmp_path)), state_shards="8")
    assert run.returncode == 1, run.stderr
    assert "  ! state shards: 16 -> 8: the shard count is fixed for the life of the state\n" \
        "      fix: set FEATURESTREAM_STATE_SHARDS back to 16" in run.stdout
    assert run.stdout.rstrip().endswith(
        "Plan: 4 to add, 0 to change, 0 to remove; the job would refuse to start: state "
        "shards cannot be carried over (!).")


def test_without_a_published_layout_everything_is_new(server: RedisProcess,
                                                      published: RedisRowWriter) -> None:
    run = featurestream(server, "plan", prefix="other:")
    assert run.returncode == 0, run.stderr
    assert (f"No published layout at {server.url} under other:_meta:features_layout: no "
            "feature job has run against this Redis and prefix, so everything is new.") \
        in run.stdout
    assert "  + user.ctr_1h = ratio(clicks_1h / views_1h)" in run.stdout
    assert "Plan: 26 to add, 0 to change, 0 to remove" in run.stdout


def test_errors_are_one_line_and_exit_2(server: RedisProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(CHANGED.replace('window="lifetime"', 'window="90s"'), encoding="utf-8")
    run = featurestream(server, "plan", "--definitions", str(bad))
    assert run.returncode == 2 and not run.stdout
    assert run.stderr.count("\n") == 1
    assert "FEATURESTREAM_DEFINITIONS=" in run.stderr and "total_events" in run.stderr \
        and "whole number of minutes" in run.stderr
    server.stop()
    secret = server.url.replace("redis://", "redis://:hunter2@")
    down = featurestream(server, "plan", url=secret)
    assert down.returncode == 2 and not down.stdout
    assert down.stderr.count("\n") == 1 and "hunter2" not in down.stderr
    assert down.stderr.startswith("featurestream: error: cannot read Redis at redis://:***@")
    assert "check FEATURESTREAM_REDIS_URL" in down.stderr


def test_features_of_any_entity(server: RedisProcess, published: RedisRowWriter,
                                tmp_path: Path) -> None:
    published.add("item:sku-1", {"as_of": 5, "version": 1, "views_1h": 3,
                                 "recent_buyers": ["u1", "u2"]})
    published.add("user:u1", {"as_of": 6, "version": 2, "events_1m": 1})
    published.flush()
    items = str(write_item_definitions(tmp_path))
    run = featurestream(server, "features", "--entity", "item", definitions=items)
    assert run.returncode == 0, run.stderr
    [row] = [json.loads(line) for line in run.stdout.splitlines()]
    assert isinstance(row.pop("updated_at"), int)
    assert row == {"item_id": "sku-1", "as_of": 5, "version": 1, "views_1h": 3,
                   "recent_buyers": ["u1", "u2"]}
    named = featurestream(server, "features", "--entity", "item", "nope", "sku-1",
                          definitions=items)
    assert [json.loads(line)["item_id"] for line in named.stdout.splitlines()] == ["nope",
                                                                                  "sku-1"]
    assert named.stdout.splitlines()[0] == '{"item_id": "nope", "missing": true}'
    user = featurestream(server, "features", definitions=items)
    assert [json.loads(line)["user_id"] for line in user.stdout.splitlines()] == ["u1"]
    unknown = featurestream(server, "features", "--entity", "merchant", definitions=items)
    assert unknown.returncode == 2 and unknown.stderr == (
        "featurestream: error: no entity 'merchant' in the definitions; they declare: user, "
        "item (choose one with --entity)\n")


def test_resuming_state_of_another_shard_count_is_refused_before_the_job_starts(
        server: RedisProcess, published: RedisRowWriter) -> None:
    """The default shard count changed (16 -> one per key group): a savepoint of a 16-shard job
    is refused by `submit --from-savepoint` itself, naming the fix, before any subtask could
    write a row counted from empty state; with the count it was written with, it goes on."""
    settings = Settings(redis_url=server.url, redis_key_prefix=PREFIX)
    assert settings.state_shards == settings.max_parallelism != 16
    with pytest.raises(UserFacingError) as refused:
        refuse_unresumable_state(settings)
    assert "state shards: 16 -> 128" in str(refused.value)
    assert "set FEATURESTREAM_STATE_SHARDS back to 16" in str(refused.value)
    refuse_unresumable_state(settings.replace(state_shards=16))
    # Nothing published (a new Redis or prefix): nothing to compare with, nothing refused.
    refuse_unresumable_state(settings.replace(redis_key_prefix="other:"))
    # A layout Redis answers but this release cannot read is refused as such ...
    server.client().set(layout_key(PREFIX), "not a layout")
    with pytest.raises(UserFacingError) as unreadable_layout:
        refuse_unresumable_state(settings)
    assert "cannot be read" in str(unreadable_layout.value)
    assert "once Redis answers" not in str(unreadable_layout.value)
    # ... and a Redis that does not answer says why the resume waits for it.
    with pytest.raises(UserFacingError) as no_redis:
        refuse_unresumable_state(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    assert "submit again once Redis answers" in str(no_redis.value)
