"""Shards grouped by the keyed subtask that owns them, against a brute-force oracle of Flink's
key group ranges (``KeyGroupRangeAssignment.computeKeyGroupRangeForOperatorIndex``, not the
operator-index formula the code uses): every shard in exactly one record per batch, in its
owner's record, routed by a key of that owner; markers cover every shard once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from featurestream.udfs.features.placement import SubtaskRoutes
from featurestream.udfs.features.routing import MARKER_TIME, ShardEvent


def owner_oracle(key_group: int, parallelism: int, max_parallelism: int) -> int:
    """The subtask whose key group range holds ``key_group``, by scanning every range."""
    owners = [i for i in range(parallelism)
              if (i * max_parallelism + parallelism - 1) // parallelism <= key_group
              <= ((i + 1) * max_parallelism - 1) // parallelism]
    assert len(owners) == 1
    return owners[0]


@st.composite
def layouts(draw: st.DrawFn) -> tuple[int, int, int, set[int]]:
    """(parallelism, max parallelism, shards, the shards with events in a batch)."""
    max_parallelism = draw(st.integers(1, 300))
    parallelism = draw(st.integers(1, max_parallelism))
    shards = draw(st.integers(1, max_parallelism))
    busy = draw(st.sets(st.integers(0, shards - 1)))
    return parallelism, max_parallelism, shards, busy


def event(ts: int) -> ShardEvent:
    return ShardEvent("user", f"user:{ts}", ts, 0, (), b"")


@given(layouts())
def test_each_shard_goes_to_its_owner_once(layout: tuple[int, int, int, set[int]]) -> None:
    parallelism, max_parallelism, shards, busy = layout
    keys = [10_000 + shard for shard in range(shards)]  # distinct, like ShardKeys's
    owner = {keys[shard]: owner_oracle(shard * max_parallelism // shards, parallelism,
                                       max_parallelism) for shard in range(shards)}
    routes = SubtaskRoutes(keys, parallelism, max_parallelism)
    for subtask in range(parallelism):
        assert routes.keys_of(subtask) == {k for k, o in owner.items() if o == subtask}

    records = routes.records({shard: [event(shard)] for shard in busy}, 77)
    sent = [(group.key, group.events) for record in records for group in record.groups]
    assert sorted(sent) == sorted((keys[shard], [event(shard)]) for shard in busy)
    assert len({owner[record.key] for record in records}) == len(records)  # one per subtask
    for record in records:
        assert record.newest_ts == 77 and record.key == record.groups[0].key
        assert {owner[group.key] for group in record.groups} == {owner[record.key]}

    markers = routes.markers(MARKER_TIME)
    marked = [group for marker in markers for group in marker.groups]
    assert sorted(group.key for group in marked) == keys
    assert all(group.is_checkpoint_marker for group in marked)
    assert len({owner[marker.key] for marker in markers}) == len(markers)
    for marker in markers:
        assert marker.newest_ts == MARKER_TIME
        assert {owner[group.key] for group in marker.groups} == {owner[marker.key]}


@given(st.integers(1, 300).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m))))
def test_with_one_shard_per_key_group_every_subtask_has_shards(
        sizes: tuple[int, int]) -> None:
    """The default layout (state shards = max parallelism): no idle keyed subtask."""
    max_parallelism, parallelism = sizes
    routes = SubtaskRoutes(range(max_parallelism), parallelism, max_parallelism)
    assert all(routes.keys_of(subtask) for subtask in range(parallelism))
