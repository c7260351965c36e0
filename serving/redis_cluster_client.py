"""The reader's Redis Cluster client: :class:`~.redis_client.RedisClient`'s ``execute`` contract
(replies in command order, the whole call bounded by ``timeout_s``, RedisUnavailable otherwise)
over every master of a cluster.

The slot map comes from ``CLUSTER SLOTS`` of any node (the URL names one; the others are
discovered). A call's commands are grouped by the master of their key's slot
(:mod:`.cluster_routing`) and sent to all of them at once, each group pipelined on that node's
own :class:`RedisClient` (one connection per node, the single-Redis path's speed), and the
replies are put back in order. While the cluster changes, within the same time bound: a
``MOVED`` reply (a failover, a finished migration) refreshes the map and asks the new master;
``ASK`` asks the named node once (``ASKING``); ``TRYAGAIN``/``CLUSTERDOWN`` are asked again
after a short pause. A node that cannot be reached, or stays silent for most of the bound,
refreshes the map: if another node serves its slots now, they are asked there, else the call
fails with that node's RedisUnavailable, so the breaker, the 503s and the fallbacks work as on
one Redis.

Reads only go to masters (a replica may lag behind a row the feature job wrote). No client-side
caching invalidation on a cluster (:func:`check_cluster_settings`): ``CLIENT TRACKING``'s
``REDIRECT`` must name a client on the same node, so it would need a listener per master, kept
in step with failovers; the cache then serves on its TTL alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import hiredis

from featurestream.serving.cluster_routing import (
    Node,
    Redirect,
    SlotMap,
    command_slot,
    group_by_node,
    is_transient,
    parse_redirect,
    reassemble,
)
from featurestream.serving.redis_client import (
    Command,
    RedisClient,
    RedisTarget,
    RedisUnavailable,
    parse_redis_url,
    raise_reply_errors,
)
from featurestream.settings import Settings, SettingsError

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.005  # between attempts while the cluster reconfigures
# A node's own bound, as a share of the call's: a node silent that long fails (its connection
# dropped, the slot map asked for again) inside the call's bound, so a master that vanished
# without a word is replaced once the cluster promotes its replica.
NODE_TIMEOUT_SHARE = 0.8
ASKING: Command = ("ASKING",)


class ClusterClient:
    """Time-bounded calls routed by slot over the cluster that ``seed`` belongs to."""

    def __init__(self, seed: RedisTarget, timeout_s: float) -> None:
        self.target = seed
        self._seed = Node(seed.host, seed.port)
        self._timeout_s = timeout_s
        self._nodes: dict[Node, RedisClient] = {}
        self._slots: SlotMap | None = None
        self._masters: tuple[Node, ...] = ()  # of the last map: asked for the next one first
        self._refreshing = asyncio.Lock()

    @property
    def timeout_s(self) -> float:
        """The bound on every call, retries included."""
        return self._timeout_s

    def describe(self) -> str:
        """The node named in the URL, without credentials."""
        return f"{self.target.describe()} (Redis Cluster)"

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` to the masters of their keys in parallel; their replies in order
        (RedisUnavailable: a node could not be reached, the cluster did not answer within the
        time bound, or a command failed)."""
        if not commands:
            return []
        attempt = _Attempt(commands)
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await self._route(attempt)
        except TimeoutError:
            raise RedisUnavailable("timeout", f"Redis Cluster via {self.target.describe()} did "
                                   f"not answer within {self._timeout_s * 1000:.0f} ms"
                                   + (f" ({attempt.last_error})" if attempt.last_error else "")
                                   ) from None
        raise_reply_errors(replies)
        return replies

    async def close(self) -> None:
        """Close every node's connection."""
        for client in self._nodes.values():
            await client.close()

    async def _route(self, attempt: _Attempt) -> list[Any]:
        """Until every command has its reply: send what is left, read redirects."""
        commands = attempt.commands
        left = list(range(len(commands)))
        answered: list[tuple[list[int], list[Any]]] = []
        while True:
            slots = await self._slot_map()
            asked = attempt.asked
            groups, unserved = group_by_node(
                (i, asked[i] if i in asked else slots.node_of(command_slot(commands[i])))
                for i in left)
            results = await asyncio.gather(
                *(self._send(node, [commands[i] for i in idx], [i in attempt.asked for i in idx])
                  for node, idx in groups.items()), return_exceptions=True)
            left = list(unserved)
            if unserved:
                attempt.last_error = "a slot served by no master"
                self._slots = None
            attempt.asked = {}
            for (node, indices), result in zip(groups.items(), results, strict=True):
                if isinstance(result, RedisUnavailable):
                    await self._lost(node, result, attempt)
                    left += indices
                    continue
                if isinstance(result, BaseException):
                    raise result
                done, replies = [], []
                for i, reply in zip(indices, result, strict=True):
                    if isinstance(reply, hiredis.ReplyError) and self._again(i, reply, attempt):
                        left.append(i)
                    else:
                        done.append(i)
                        replies.append(reply)
                answered.append((done, replies))
            if not left:
                return reassemble(len(commands), answered)
            left.sort()
            await asyncio.sleep(RETRY_PAUSE_S)

    def _again(self, index: int, reply: hiredis.ReplyError, attempt: _Attempt) -> bool:
        """Whether the command must be sent again (noting where, or that the map is stale)."""
        error = str(reply)
        redirect: Redirect | None = parse_redirect(error)
        if redirect is None and not is_transient(error):
            return False
        attempt.last_error = error
        if redirect is not None and redirect.kind == "ASK":
            attempt.asked[index] = redirect.node
        else:
            self._slots = None  # MOVED, CLUSTERDOWN: ask for the map again
        return True

    async def _lost(self, node: Node, error: RedisUnavailable, attempt: _Attempt) -> None:
        """``node`` failed: if a fresh map still has it serving slots, fail with its error."""
        attempt.last_error = str(error)
        if self._slots is not None and node not in self._slots.masters:
            return  # another call has the new map already
        self._slots = None
        if node in (await self._slot_map(avoid=node)).masters:
            raise error

    async def _send(self, node: Node, commands: list[Command], asking: list[bool]) -> list[Any]:
        """``commands`` on ``node``'s connection; those flagged ``asking`` after an ASKING."""
        client = self._client(node)
        if not any(asking):
            return await client.execute(commands, inline_errors=True)
        wire: list[Command] = []
        for command, ask in zip(commands, asking, strict=True):
            wire += [ASKING, command] if ask else [command]
        replies = await client.execute(wire, inline_errors=True)
        kept, position = [], 0
        for ask in asking:
            position += 1 if ask else 0  # skip ASKING's OK
            kept.append(replies[position])
            position += 1
        return kept

    def _client(self, node: Node) -> RedisClient:
        client = self._nodes.get(node)
        if client is None:
            target = replace(self.target, host=node.host, port=node.port, unix_path="")
            client = self._nodes[node] = RedisClient(target,
                                                     self._timeout_s * NODE_TIMEOUT_SHARE)
        return client

    async def _slot_map(self, avoid: Node | None = None) -> SlotMap:
        """The slot map, asked for again if it was dropped (one asking at a time; concurrent
        callers share the answer)."""
        if self._slots is not None:
            return self._slots
        async with self._refreshing:
            if self._slots is None:
                self._slots = await self._ask_slots(avoid)
            return self._slots

    async def _ask_slots(self, avoid: Node | None) -> SlotMap:
        """``CLUSTER SLOTS`` from the first node that answers: the last map's masters, then
        the other nodes known, then the seed (``avoid``, a node that just failed, last). A
        seed that failed and was replaced is thus not asked first again: silent, it would
        cost most of the call's bound on every refresh."""
        candidates = sorted(dict.fromkeys([*self._masters, *self._nodes, self._seed]),
                            key=lambda n: n == avoid)
        failures = []
        for node in candidates:
            try:
                [reply] = await self._client(node).execute([("CLUSTER", "SLOTS")])
            except RedisUnavailable as exc:
                failures.append(f"{node}: {exc}")
                continue
            slots = SlotMap.from_cluster_slots(reply, node)
            if slots.masters:
                self._masters = slots.masters
                log.info("redis cluster: slot map from %s: masters %s", node,
                         ", ".join(map(str, slots.masters)))
                return slots
            failures.append(f"{node}: no slots served")
        raise RedisUnavailable("connection", "no Redis Cluster node answered CLUSTER SLOTS ("
                               + "; ".join(failures) + ")")


class _Attempt:
    """One call's progress: its commands, where ASK sent some of them, the last error seen."""

    def __init__(self, commands: Sequence[Command]) -> None:
        self.commands = commands
        self.asked: dict[int, Node] = {}
        self.last_error = ""


def check_cluster_settings(settings: Settings) -> None:
    """SettingsError for what the reader cannot do on Redis Cluster: select a database, use a
    unix socket, or have the cache invalidated by client-side caching."""
    if not settings.redis_cluster:
        return
    target = parse_redis_url(settings.redis_url)
    if target.unix_path or target.db:
        raise SettingsError("FEATURESTREAM_REDIS_URL: on Redis Cluster (FEATURESTREAM_REDIS_"
                            "CLUSTER=true) name one node as redis://host:port (database 0, "
                            "TCP), not a unix socket or another database")
    if settings.cache_ttl_ms and settings.cache_invalidation:
        raise SettingsError(
            "FEATURESTREAM_CACHE_INVALIDATION: the reader's cache cannot be invalidated by Redis "
            "Cluster (FEATURESTREAM_REDIS_CLUSTER=true; client-side caching works per node); "
            "set FEATURESTREAM_CACHE_INVALIDATION=false (cached rows then live up to "
            "FEATURESTREAM_CACHE_TTL_MS) or FEATURESTREAM_CACHE_TTL_MS=0 (no cache)")
