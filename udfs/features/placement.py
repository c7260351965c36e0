"""Which keyed subtask owns each state shard, so the sharding stage sends each subtask one
record per batch.

The shard keys (``ShardKeys.java``) put shard ``i`` of ``n`` in key group
``i * max_parallelism // n``; Flink gives key group ``g`` to the keyed operator's subtask
``g * parallelism // max_parallelism``
(``KeyGroupRangeAssignment.computeOperatorIndexForKeyGroup``).
With one shard per key group (the default) state follows Flink's own unit of rescaling, so the
job runs at any parallelism up to its max parallelism, and rescales, without another layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from featurestream.udfs.features.routing import (
    ShardEvent,
    ShardGroup,
    SubtaskRecord,
    checkpoint_marker,
)


def key_group_of_shard(shard: int, shards: int, max_parallelism: int) -> int:
    """The key group the key of shard ``shard`` of ``shards`` lands in (``ShardKeys.java``)."""
    return shard * max_parallelism // shards


def subtask_of_key_group(key_group: int, parallelism: int, max_parallelism: int) -> int:
    """The keyed subtask that owns ``key_group`` (Flink's operator index for it)."""
    return key_group * parallelism // max_parallelism


class SubtaskRoutes:
    """The shards of each keyed subtask at one parallelism: groups in, subtask records out.

    ``shard_keys[i]`` is the Flink key of shard ``i``. Subtasks that own no shard (possible
    only with fewer shards than key groups) get no records.
    """

    def __init__(self, shard_keys: Sequence[int], parallelism: int, max_parallelism: int
                 ) -> None:
        shards = len(shard_keys)
        self._keys = tuple(shard_keys)
        self._owner = [subtask_of_key_group(key_group_of_shard(i, shards, max_parallelism),
                                            parallelism, max_parallelism)
                       for i in range(shards)]
        owned: dict[int, list[int]] = {}
        for shard, subtask in enumerate(self._owner):
            owned.setdefault(subtask, []).append(self._keys[shard])
        self._owned = owned

    def keys_of(self, subtask: int) -> frozenset[int]:
        """The shard keys ``subtask`` owns."""
        return frozenset(self._owned.get(subtask, ()))

    def records(self, groups: Mapping[int, list[ShardEvent]], time: int
                ) -> list[SubtaskRecord]:
        """``groups`` (events by shard number) as one record per subtask, with event time
        ``time``."""
        keys, owner = self._keys, self._owner
        by_subtask: dict[int, list[ShardGroup]] = {}
        for shard, events in groups.items():
            subtask = owner[shard]
            target = by_subtask.get(subtask)
            if target is None:
                target = by_subtask[subtask] = []
            target.append(ShardGroup(keys[shard], events))
        return [SubtaskRecord(target[0].key, time, target) for target in by_subtask.values()]

    def markers(self, time: int) -> list[SubtaskRecord]:
        """The checkpoint marker of every shard: one record per subtask, event time ``time``."""
        return [checkpoint_marker(keys, time) for keys in self._owned.values()]
