"""The local Redis Cluster of the tests (``testing.redis_cluster``) is what it claims: 3
masters sharing every slot, a replica each, and a manual failover that swaps a master with its
replica and keeps every key."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from testing.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.redis


def test_keys_spread_over_three_masters_and_survive_a_manual_failover(
        redis_cluster: LocalRedisCluster) -> None:
    redis_cluster.flush()
    client = redis_cluster.client()
    keys = [f"k{i}" for i in range(300)]
    for i, key in enumerate(keys):
        client.set(key, i)
    masters = {client.get_node_from_key(key).port for key in keys}
    assert len(masters) == 3
    assert len({key_slot(key.encode()) for key in keys}) > 100

    old_master, replica = redis_cluster.master_and_replica()
    new_master, demoted = redis_cluster.failover(replica)
    assert (new_master.port, demoted.port) == (replica.port, old_master.port)
    roles = {role.port: role for role in redis_cluster.roles()}
    assert roles[new_master.port].master_id == ""
    assert roles[demoted.port].master_id == roles[new_master.port].node_id
    assert [int(client.get(key)) for key in keys] == list(range(300))
