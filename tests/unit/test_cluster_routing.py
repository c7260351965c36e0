"""The reader's Redis Cluster routing without a cluster: slots of the hash-tagged keys, the slot
map, grouping per node and replies put back in command order (property tests against a
brute-force owner lookup), redirects, and the cluster client's retries over fake nodes that
answer ``MOVED``/``ASK`` like a cluster in the middle of a failover. The real 3+3 cluster:
``tests/integration/test_reader_cluster.py``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.serving.cluster_routing import (
    NO_KEY,
    Node,
    Redirect,
    SlotMap,
    command_slot,
    group_by_node,
    parse_redirect,
    reassemble,
)
from featurestream.serving.redis_client import RedisTarget, RedisUnavailable
from featurestream.serving.redis_cluster_client import ClusterClient, check_cluster_settings
from featurestream.settings import Settings, SettingsError
from featurestream.udfs.store.redis_layout import entity_key, score_key, user_key

pytestmark = pytest.mark.unit

SLOTS = 16384
NODES = [Node("127.0.0.1", 7000 + i) for i in range(4)]
ids = st.text(st.sampled_from("abcxyz019.-_@:|"), min_size=1, max_size=12)


@st.composite
def slot_maps(draw: st.DrawFn) -> dict[tuple[int, int], Node]:
    """Every slot owned: ranges cut at random points, each given to one of 1-4 nodes."""
    cuts = sorted(draw(st.sets(st.integers(1, SLOTS - 1), max_size=8)))
    bounds = [0, *cuts, SLOTS]
    nodes = NODES[:draw(st.integers(1, len(NODES)))]
    return {(first, last - 1): draw(st.sampled_from(nodes))
            for first, last in itertools.pairwise(bounds)}


def owner(ranges: dict[tuple[int, int], Node], slot: int) -> Node:
    """Brute force: the range holding ``slot``."""
    return next(node for (first, last), node in ranges.items() if first <= slot <= last)


@given(ids)
def test_a_users_row_and_scores_share_a_slot_on_a_cluster(user_id: str) -> None:
    row = command_slot(("HGETALL", user_key("fs:", user_id, cluster=True)))
    assert row == command_slot(("HGETALL", score_key("fs:", user_id, cluster=True)))
    assert row == command_slot(("HGETALL", entity_key("other:", "item", user_id, cluster=True)))


def test_a_command_without_a_key_goes_to_any_master() -> None:
    slots = SlotMap({(0, SLOTS - 1): NODES[1]})
    assert command_slot(("PING",)) == NO_KEY
    assert slots.node_of(NO_KEY) == NODES[1]
    assert SlotMap({}).node_of(NO_KEY) is None


@settings(max_examples=200)
@given(slot_maps(), st.lists(ids, max_size=60))
def test_replies_come_back_in_command_order_whatever_the_grouping(
        ranges: dict[tuple[int, int], Node], keys: list[str]) -> None:
    slots = SlotMap(ranges)
    commands = [("HGETALL", f"fs:user:{{{key}}}") for key in keys]
    groups, unserved = group_by_node(
        (i, slots.node_of(command_slot(c))) for i, c in enumerate(commands))
    assert unserved == []
    for node, indices in groups.items():
        assert indices == sorted(indices)  # each node gets its commands in order
        assert all(owner(ranges, command_slot(commands[i])) == node for i in indices)
    # each node answers with who it is and what it was asked
    answered = [(indices, [(node, commands[i][1]) for i in indices])
                for node, indices in groups.items()]
    assert reassemble(len(commands), answered) == [
        (owner(ranges, command_slot(c)), c[1]) for c in commands]


def test_slots_no_master_serves_are_set_apart() -> None:
    slots = SlotMap({(0, 99): NODES[0]})
    commands = [("GET", k) for k in ("a", "{b}", "c")]
    groups, unserved = group_by_node(
        (i, slots.node_of(command_slot(c))) for i, c in enumerate(commands))
    served = [i for indices in groups.values() for i in indices]
    assert sorted(served + unserved) == [0, 1, 2]
    assert all(command_slot(commands[i]) <= 99 for i in served)
    assert all(command_slot(commands[i]) > 99 for i in unserved)


def test_the_slot_map_reads_cluster_slots_and_an_empty_host_is_the_asked_nodes() -> None:
    reply = [[0, 5460, ["10.0.0.1", 7000, "id1", []], ["10.0.0.4", 7003, "id4", []]],
             [5461, 16383, ["", 7001, "id2"]]]
    slots = SlotMap.from_cluster_slots(reply, Node("10.0.0.9", 7001))
    assert slots.node_of(0) == slots.node_of(5460) == Node("10.0.0.1", 7000)
    assert slots.node_of(5461) == slots.node_of(16383) == Node("10.0.0.9", 7001)
    assert slots.masters == (Node("10.0.0.1", 7000), Node("10.0.0.9", 7001))


@pytest.mark.parametrize(("error", "redirect"), [
    ("MOVED 3999 127.0.0.1:6381", Redirect("MOVED", 3999, Node("127.0.0.1", 6381))),
    ("ASK 12 ::1:7000", Redirect("ASK", 12, Node("::1", 7000))),
    ("MOVED x 127.0.0.1:6381", None),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", None),
    ("ERR unknown command", None),
])
def test_redirects_are_read_from_error_replies(error: str, redirect: Redirect | None) -> None:
    assert parse_redirect(error) == redirect


# --- the client's retries, over fake nodes -------------------------------------------------

class FakeCluster:
    """Nodes answering as a cluster whose slot ``owner`` map changes under the client: a key
    of another node's slot gets ``MOVED``; a slot ``migrating`` to another node gets ``ASK``
    there (answered after ``ASKING``); ``down`` nodes cannot be reached."""

    def __init__(self, ranges: dict[tuple[int, int], Node]) -> None:
        self.ranges = ranges
        self.migrating: dict[int, Node] = {}
        self.down: set[Node] = set()
        self.sent: list[tuple[Node, list[tuple[str, ...]]]] = []
        self.tried: list[tuple[Node, list[tuple[str, ...]]]] = []  # ``down`` nodes' too

    def answer(self, node: Node, commands: Sequence[tuple[str, ...]]) -> list[Any]:
        self.tried.append((node, list(commands)))
        if node in self.down:
            raise RedisUnavailable("connection", f"cannot reach Redis at {node}")
        self.sent.append((node, list(commands)))
        replies: list[Any] = []
        asking = False
        for command in commands:
            if command == ("ASKING",):
                asking = True
                replies.append("OK")
                continue
            if command == ("CLUSTER", "SLOTS"):
                replies.append([[first, last, [n.host, n.port, "id"]]
                                for (first, last), n in self.ranges.items()])
                continue
            if command == ("PING",):
                replies.append("PONG")
                continue
            slot = command_slot(command)
            mine = owner(self.ranges, slot)
            if slot in self.migrating and mine == node and not asking:
                target = self.migrating[slot]
                replies.append(hiredis.ReplyError(f"ASK {slot} {target.host}:{target.port}"))
            elif mine != node and not (asking and self.migrating.get(slot) == node):
                replies.append(hiredis.ReplyError(f"MOVED {slot} {mine.host}:{mine.port}"))
            else:
                replies.append(f"{command[1]}@{node.port}")
            asking = False
        return replies


class FakeNodeClient:
    def __init__(self, cluster: FakeCluster, node: Node) -> None:
        self.cluster, self.node = cluster, node

    async def execute(self, commands: Sequence[tuple[str, ...]], *,
                      inline_errors: bool = False) -> list[Any]:
        await asyncio.sleep(0)
        replies = self.cluster.answer(self.node, commands)
        if not inline_errors:
            assert not any(isinstance(r, hiredis.ReplyError) for r in replies)
        return replies

    async def close(self) -> None:
        pass


def client_over(cluster: FakeCluster, seed: Node) -> ClusterClient:
    client = ClusterClient(RedisTarget(seed.host, seed.port), timeout_s=1.0)
    clients: dict[Node, Any] = {}
    client._client = lambda node: clients.setdefault(  # type: ignore[method-assign]
        node, FakeNodeClient(cluster, node))
    return client


@settings(max_examples=60, deadline=None)
@given(slot_maps(), slot_maps(), st.lists(ids, min_size=1, max_size=40))
def test_a_changed_slot_map_is_followed_and_replies_stay_in_order(
        before: dict[tuple[int, int], Node], after: dict[tuple[int, int], Node],
        keys: list[str]) -> None:
    cluster = FakeCluster(before)
    client = client_over(cluster, next(iter(before.values())))
    commands = [("HGETALL", f"fs:user:{{{key}}}") for key in keys]

    async def run() -> None:
        await client.execute(commands[:1])  # the map of ``before`` is known
        cluster.ranges = after  # a failover: the client's map is stale now
        replies = await client.execute(commands)
        assert replies == [f"{c[1]}@{owner(after, command_slot(c)).port}" for c in commands]

    asyncio.run(run())


def test_ask_sends_asking_first_and_keeps_the_map() -> None:
    ranges = {(0, SLOTS - 1): NODES[0]}
    cluster = FakeCluster(ranges)
    client = client_over(cluster, NODES[0])
    command = ("HGETALL", "fs:user:{u-1}")
    cluster.migrating[command_slot(command)] = NODES[1]

    async def run() -> None:
        assert await client.execute([("PING",), command]) == [
            "PONG", f"{command[1]}@{NODES[1].port}"]
        cluster.sent.clear()
        assert await client.execute([command]) == [f"{command[1]}@{NODES[1].port}"]
        assert cluster.sent == [(NODES[0], [command]), (NODES[1], [("ASKING",), command])]

    asyncio.run(run())


def two_masters() -> tuple[FakeCluster, ClusterClient, list[tuple[str, ...]]]:
    """A cluster of NODES[0] and NODES[1], a client seeded with NODES[0], reads of both."""
    cluster = FakeCluster({(0, 8000): NODES[0], (8001, SLOTS - 1): NODES[1]})
    return (cluster, client_over(cluster, NODES[0]),
            [("HGETALL", f"fs:user:{{u-{i}}}") for i in range(20)])


def test_a_lost_node_still_serving_its_slots_fails_the_call() -> None:
    cluster, client, commands = two_masters()

    async def run() -> None:
        await client.execute(commands)
        cluster.down.add(NODES[1])
        with pytest.raises(RedisUnavailable) as raised:
            await client.execute(commands)
        assert raised.value.kind == "connection"
        cluster.ranges = {(0, SLOTS - 1): NODES[0]}  # its replica's node took over
        assert await client.execute(commands) == [f"{c[1]}@{NODES[0].port}" for c in commands]

    asyncio.run(run())


def test_the_map_is_asked_of_its_masters_not_first_of_a_seed_that_was_replaced() -> None:
    cluster, client, commands = two_masters()

    async def run() -> None:
        await client.execute(commands)
        cluster.down.add(NODES[0])  # the seed is lost, NODES[1] serves its slots now
        cluster.ranges = {(0, SLOTS - 1): NODES[1]}
        assert await client.execute(commands) == [f"{c[1]}@{NODES[1].port}" for c in commands]
        cluster.ranges = {(0, 8000): NODES[2], (8001, SLOTS - 1): NODES[1]}  # MOVED: refresh
        cluster.tried.clear()
        assert await client.execute(commands) == [
            f"{c[1]}@{owner(cluster.ranges, command_slot(c)).port}" for c in commands]
        assert [node for node, sent in cluster.tried if sent == [("CLUSTER", "SLOTS")]] == [
            NODES[1]]

    asyncio.run(run())


def test_errors_that_are_not_redirects_are_raised_like_on_one_redis() -> None:
    cluster = FakeCluster({(0, SLOTS - 1): NODES[0]})
    client = client_over(cluster, NODES[0])
    cluster.answer = lambda node, commands: [  # type: ignore[method-assign]
        hiredis.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")
        if c[0] == "HGETALL" else [[0, SLOTS - 1, [node.host, node.port]]] for c in commands]

    async def run() -> None:
        with pytest.raises(RedisUnavailable) as raised:
            await client.execute([("HGETALL", "fs:user:{a}")])
        assert raised.value.about_the_data

    asyncio.run(run())


def test_cluster_mode_refuses_what_it_cannot_do_naming_the_settings() -> None:
    base = Settings().replace(redis_cluster=True, cache_invalidation=False)
    check_cluster_settings(base)
    check_cluster_settings(base.replace(cache_invalidation=True, cache_ttl_ms=0))
    with pytest.raises(SettingsError, match="FEATURESTREAM_CACHE_INVALIDATION=false"):
        check_cluster_settings(base.replace(cache_invalidation=True))
    with pytest.raises(SettingsError, match="FEATURESTREAM_REDIS_URL"):
        check_cluster_settings(base.replace(redis_url="redis://127.0.0.1:7000/2"))
    check_cluster_settings(Settings().replace(redis_cluster=False, cache_invalidation=True))
