"""The per-slot grouping of upsert script calls on Redis Cluster, against a brute-force oracle:
every key lands in exactly one call, a call's keys share one slot and fit the limit, and the
order of a slot's keys (repeats of a key included) is kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from featurestream.udfs.store.redis_layout import hash_tagged, hash_untagged
from featurestream.udfs.store.slot_groups import script_calls


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


# Few distinct ids, so slots and keys repeat; some hash-tagged like the cluster's keys.
ids = st.sampled_from([f"u-{i}" for i in range(40)] + ["", "{", "}", "{}", "a{b}c"])
keys = st.lists(st.tuples(ids, st.booleans()).map(
    lambda t: f"fs:user:{hash_tagged(t[0], t[1])}"), max_size=300)


@given(keys, st.integers(min_value=1, max_value=120))
def test_every_key_in_one_call_of_one_slot_in_order(keys: list[str], per_call: int) -> None:
    calls = script_calls(keys, per_call, slot)
    assert sorted(k for call in calls for k in call) == sorted(keys)
    assert all(call and len(call) <= per_call for call in calls)
    assert all(len({slot(k) for k in call}) == 1 for call in calls)
    for s in {slot(k) for k in keys}:  # each slot's keys, call after call, as they came
        assert [k for call in calls for k in call if slot(k) == s] == \
            [k for k in keys if slot(k) == s]


def test_a_hash_tag_puts_an_entitys_keys_in_one_slot() -> None:
    tagged = [f"fs:user:{hash_tagged('u-1', True)}", f"fs:score:{hash_tagged('u-1', True)}"]
    assert script_calls(tagged, 100, slot) == [tagged]
    assert hash_untagged(hash_tagged("u-1", True), True) == "u-1"
    assert hash_untagged("{u-1}", False) == "{u-1}"  # a single Redis's id is what it is
