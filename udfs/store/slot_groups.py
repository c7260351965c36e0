"""Which rows one upsert script call may carry on Redis Cluster: a script's keys must share one
hash slot, so the rows are grouped per slot, then split at the per-call limit. Pure: the slot
function is the caller's (``redis.crc.key_slot``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def script_calls(keys: Sequence[K], per_call: int, slot_of: Callable[[K], int]
                 ) -> list[list[K]]:
    """``keys`` split into the key lists of script calls of at most ``per_call`` keys, each
    call's keys of one slot: per slot its keys in their order (so repeats of a key keep
    theirs), slot after slot in the order each first appears. Every key lands in exactly one
    call."""
    by_slot: dict[int, list[K]] = {}
    for key in keys:
        slot = slot_of(key)
        group = by_slot.get(slot)
        if group is None:
            by_slot[slot] = [key]
        else:
            group.append(key)
    return [group[start:start + per_call] for group in by_slot.values()
            for start in range(0, len(group), per_call)]
