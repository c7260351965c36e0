"""State sharded by key group: by default one state shard per key group, so the feature job
runs at any parallelism up to its max parallelism; state written with the 16 shards of earlier
releases is refused at restore with the setting that continues from it."""

from __future__ import annotations

import pytest

from featurestream.settings import Settings, SettingsError
from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.layout import StoredLayoutMismatch
from tests.harness import MapState, ShardHarness, user_definitions


def test_by_default_one_state_shard_per_key_group() -> None:
    assert Settings().state_shards == Settings().max_parallelism == 128
    assert Settings.from_env({"FEATURESTREAM_MAX_PARALLELISM": "512"}).state_shards == 512
    wide = Settings.from_env({"FEATURESTREAM_PARALLELISM": "40"})
    assert (wide.parallelism, wide.state_shards) == (40, 128)
    assert Settings.from_env({"FEATURESTREAM_STATE_SHARDS": "16"}).state_shards == 16


def test_more_subtasks_than_explicit_shards_is_refused_with_the_fix() -> None:
    """Subtasks beyond the shards would never get work."""
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"FEATURESTREAM_PARALLELISM": "20", "FEATURESTREAM_STATE_SHARDS": "16"})
    assert "FEATURESTREAM_STATE_SHARDS='16'" in str(error.value)
    assert "FEATURESTREAM_PARALLELISM (20)" in str(error.value)
    assert "leave it unset" in str(error.value)


def test_state_of_sixteen_shards_is_refused_naming_the_setting_to_continue_from_it() -> None:
    """A savepoint of a release that sharded by 16, restored with the default layout: old
    shard ``i``'s key is the smallest key of key group ``8 * i`` (``ShardKeys``), which is new
    shard ``8 * i``'s; the checkpoint marker touches every shard."""
    shards = Settings().state_shards
    old = ShardHarness(user_definitions(("1m",)), shard_count=16)
    old.process_bundle([Event(f"e{i}", f"u{i}", "view", None, None, 60_000 + i, None)
                        for i in range(40)])
    old.checkpoint()
    restored = ShardHarness(user_definitions(("1m",)), shard_count=shards)
    restored.map_states = {n * shards // 16: MapState(m) for n, m in old.map_states.items()}
    with pytest.raises(StoredLayoutMismatch) as error:
        restored.checkpoint()
    assert str(error.value) == (
        "this state was written with 16 state shards, but FEATURESTREAM_STATE_SHARDS is 128: "
        "set it back to 16 (the shard count is fixed for the life of the state)")
    assert restored.rows == []


def test_opening_a_shard_refuses_its_state_before_any_event() -> None:
    """The keyed adapter opens every shard of its subtask at its first record, so a shard
    without state cannot write a row from empty state before one with old state refuses."""
    old = ShardHarness(user_definitions(("1m",)), shard_count=16)
    old.process(Event("e", "u1", "view", None, None, 60_000, None))
    old.checkpoint()
    restored = ShardHarness(user_definitions(("1m",)), shard_count=128)
    restored.map_states = {n * 8: MapState(m) for n, m in old.map_states.items()}
    restored.operator.open_shard(1, MapState())  # no state: opens
    with pytest.raises(StoredLayoutMismatch, match="set it back to 16"):
        restored.operator.open_shard(0, restored.map_states[0])
