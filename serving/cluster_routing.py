"""Which Redis Cluster node answers which command, and the replies put back in command order:
the pure part of :mod:`.redis_cluster_client` (no I/O).

A command's slot is its key's (the first argument: every command the reader sends reads one
key there; :func:`redis.crc.key_slot`, so a hash tag ``{u-1}`` decides it). A command without
a key (``PING``) goes to any master. The slot map comes from ``CLUSTER SLOTS``; a
``MOVED``/``ASK`` reply names the node to ask instead (:func:`parse_redirect`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

Command = tuple[str, ...]
NO_KEY = -1  # the "slot" of a command without a key


class Node(NamedTuple):
    """A cluster node's address (a master, as far as the slot map knows). A named tuple: it
    is hashed once per command routed, and a tuple's hash is C (a dataclass's is Python)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def command_slot(command: Command) -> int:
    """The slot of the command's key, or :data:`NO_KEY`."""
    if len(command) < 2:
        return NO_KEY
    return key_slot(command[1].encode())


class SlotMap:
    """Slot -> the master serving it, as one node answered ``CLUSTER SLOTS``."""

    def __init__(self, owners: Mapping[tuple[int, int], Node]) -> None:
        self._owner: list[Node | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for (first, last), node in owners.items():
            self._owner[first:last + 1] = [node] * (last - first + 1)
        self.masters = tuple(sorted(set(owners.values())))

    @classmethod
    def from_cluster_slots(cls, reply: Sequence[Any], asked: Node) -> SlotMap:
        """The map from a ``CLUSTER SLOTS`` reply given by node ``asked``: ``[[first, last,
        [host, port, id, ...], replica...], ...]``; an empty host means ``asked``'s."""
        owners = {}
        for first, last, master, *_ in reply:
            host = master[0] if master[0] not in ("", "?") else asked.host
            owners[(int(first), int(last))] = Node(str(host), int(master[1]))
        return cls(owners)

    def node_of(self, slot: int) -> Node | None:
        """The master of ``slot`` (any master for :data:`NO_KEY`); None if none serves it."""
        if slot == NO_KEY:
            return self.masters[0] if self.masters else None
        return self._owner[slot]


def group_by_node(routed: Iterable[tuple[int, Node | None]]
                  ) -> tuple[dict[Node, list[int]], list[int]]:
    """From (command index, its node), the indices each node is sent (in the order given),
    and those no node serves."""
    groups: dict[Node, list[int]] = {}
    unserved = []
    for i, node in routed:
        if node is None:
            unserved.append(i)
        else:
            groups.setdefault(node, []).append(i)
    return groups, unserved


def reassemble(count: int, answered: Iterable[tuple[Sequence[int], Sequence[Any]]]) -> list[Any]:
    """The replies in command order, from each node's (command indices, replies)."""
    replies: list[Any] = [None] * count
    for indices, node_replies in answered:
        for i, reply in zip(indices, node_replies, strict=True):
            replies[i] = reply
    return replies


@dataclass(frozen=True)
class Redirect:
    """``MOVED`` (the slot lives on ``node`` now: the map is stale) or ``ASK`` (this once, ask
    ``node`` after ``ASKING``: the slot is migrating)."""

    kind: Literal["MOVED", "ASK"]
    slot: int
    node: Node


def parse_redirect(error: str) -> Redirect | None:
    """The redirect an error reply says, e.g. ``MOVED 3999 127.0.0.1:6381`` (None otherwise)."""
    kind, _, rest = error.partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, address = rest.partition(" ")
    host, _, port = address.rpartition(":")
    if not slot.isdigit() or not port.isdigit():
        return None
    return Redirect("MOVED" if kind == "MOVED" else "ASK", int(slot), Node(host, int(port)))


def is_transient(error: str) -> bool:
    """An error the cluster answers while it changes (failover, resharding): ask again."""
    return error.startswith(("TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN"))
