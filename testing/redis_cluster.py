"""A real local Redis Cluster for tests: 3 masters and 3 replicas, each a private
redis-server (``--cluster-enabled yes``, no persistence) on a free port, joined with
``redis-cli --cluster create``; plus what fault tests need: find a master and its replica,
fail one over by hand (``CLUSTER FAILOVER`` on the replica), lose a master (its replica is
elected) and restart it, stop or freeze any node.

Use :func:`redis_cluster` (a context manager) or the session fixture ``redis_cluster`` of
``tests/conftest.py``.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from featurestream.devstack.process import port_open
from testing.reader_fixtures import RedisProcess, wait_until

BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000 (so the port <= 55535)
NODE_TIMEOUT_MS = 2_000  # how long a node may not answer before its replica takes over
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class NodeRole:
    """One node as ``CLUSTER NODES`` names it: its id, port, and the master it replicates
    (``master_id`` empty for a master)."""

    node_id: str
    port: int
    master_id: str


class LocalRedisCluster:
    """``masters`` masters with ``replicas`` replicas each on 127.0.0.1, files in
    ``workdir`` (one folder per node). :attr:`url` names one node, as
    ``FEATURESTREAM_REDIS_URL`` would; clients discover the rest."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.masters, self.replicas = masters, replicas
        self.nodes: list[RedisProcess] = []
        ports: set[int] = set()
        for i in range(masters * (1 + replicas)):
            node_dir = workdir / f"node-{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(RedisProcess(node_dir, port=_cluster_port(ports), extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(node_dir))))
        self.url = f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> None:
        """Start every node, create the cluster, wait until every node says it is ok."""
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        result = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas",
             str(self.replicas), "--cluster-yes"], capture_output=True, text=True, check=False,
            timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}"
                               f"\n{result.stderr}")
        self.wait_healthy()

    def stop(self) -> None:
        """Stop every node (everything in them is lost)."""
        for node in self.nodes:
            node.stop()

    def flush(self) -> None:
        """Empty every master (replicas follow), e.g. between tests sharing the cluster."""
        for role in self.roles():
            if not role.master_id:
                self.node(role.port).client().flushall()

    def node(self, port: int) -> RedisProcess:
        """The node listening on ``port``."""
        return next(node for node in self.nodes if node.port == port)

    def client(self) -> RedisCluster:
        """A cluster client, as the jobs make it in cluster mode, that knows every running
        node to start from (the URL's may be the one a test stopped)."""
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port)
                                           for node in self.nodes if node.server.pid()],
                            socket_timeout=5)

    def roles(self) -> list[NodeRole]:
        """Every node's id, port and master, as a running node sees them (``CLUSTER NODES``)."""
        for node in self.nodes:  # any node that answers; one may be stopped
            try:
                nodes = node.client().cluster("nodes")  # redis-py parses it: {address: {...}}
            except redis.RedisError:
                continue
            break
        else:
            raise RuntimeError("no node of the cluster answers")
        return [NodeRole(node["node_id"], int(address.rsplit(":", 1)[1]),
                         "" if node["master_id"] == "-" else node["master_id"])
                for address, node in nodes.items()
                if not {"fail", "fail?", "noaddr"} & set(node["flags"].split(","))]

    def master_and_replica(self) -> tuple[RedisProcess, RedisProcess]:
        """A master and one of its replicas (the first master by port that has one)."""
        roles = self.roles()
        by_id = {role.node_id: role for role in roles}
        for replica in sorted(roles, key=lambda r: by_id[r.master_id].port
                              if r.master_id in by_id else 1 << 20):
            if replica.master_id in by_id:
                return self.node(by_id[replica.master_id].port), self.node(replica.port)
        raise RuntimeError("no master of the cluster has a replica")

    def failover(self, replica: RedisProcess | None = None) -> tuple[RedisProcess, RedisProcess]:
        """Manual failover: ``CLUSTER FAILOVER`` on ``replica`` (default: the replica of
        :meth:`master_and_replica`), then wait until the two swapped roles and every node is
        ok again. Returns (the new master, the old master, now its replica)."""
        if replica is None:
            _, replica = self.master_and_replica()
        master_id = next(r.master_id for r in self.roles() if r.port == replica.port)
        old_master = self.node(next(r.port for r in self.roles() if r.node_id == master_id))
        replica.client().execute_command("CLUSTER FAILOVER")

        def swapped() -> bool:
            try:
                return (_role(replica) == "master" and _role(old_master) == "slave")
            except redis.RedisError:
                return False

        wait_until(swapped, READY_TIMEOUT_S, f"port {replica.port} to take over from "
                   f"port {old_master.port}")
        self.wait_healthy()
        return replica, old_master

    def lose(self, master: RedisProcess, freeze: bool = False) -> RedisProcess:
        """Stop ``master`` (the process gone, its data with it; ``freeze``: SIGSTOP, its
        connections open and silent) and wait until its replica was elected in its place and
        the cluster (but for a frozen node) is ok again; returns the new master. The lost node
        stays down until :meth:`restart`."""
        master_id = next(r.node_id for r in self.roles() if r.port == master.port)
        replica = self.node(next(r.port for r in self.roles() if r.master_id == master_id))
        master.freeze() if freeze else master.stop()

        def promoted() -> bool:
            try:
                return _role(replica) == "master"
            except redis.RedisError:
                return False

        wait_until(promoted, READY_TIMEOUT_S, f"port {replica.port} to be elected in place of "
                   f"the lost port {master.port}")
        if not freeze:  # a frozen node answers nothing, so no health check can pass
            self.wait_healthy()
        return replica

    def restart(self, node: RedisProcess) -> None:
        """Start a stopped node again, or thaw a frozen one: it rejoins (its ``nodes.conf`` is
        kept), as a replica when its slots moved meanwhile; wait until the cluster is whole."""
        if node.server.pid() is None:
            node.start()
        else:
            node.thaw()
        self.wait_healthy()

    def wait_healthy(self) -> None:
        """Wait until every running node says ``cluster_state:ok`` with every slot served,
        ``masters`` of them are masters, each replica's link to its master is up, and every
        node's ``CLUSTER NODES`` agrees (a fresh cluster gossips its replicas for a moment)."""
        def healthy() -> bool:
            running = [node for node in self.nodes if node.server.pid() is not None]
            try:
                replicas = sum(_replica_in_sync(node) for node in running)
                return (all(_serves_every_slot(node) for node in running)
                        and len(running) - replicas == self.masters
                        and all(_replicas_seen(node) == replicas for node in running))
            except redis.RedisError:
                return False

        wait_until(healthy, READY_TIMEOUT_S, "a healthy cluster (cluster_state:ok, replicas "
                   "in sync) on every node")


def _serves_every_slot(node: RedisProcess) -> bool:
    """``CLUSTER INFO`` says ok with all 16384 slots served."""
    info = node.client().cluster("info")  # redis-py parses it: {name: text}
    return bool(info["cluster_state"] == "ok" and info["cluster_slots_ok"] == "16384")


def _replica_in_sync(node: RedisProcess) -> bool:
    """True for a replica whose link to its master is up, False for a master (RedisError for
    a replica not yet in sync: the caller's wait takes it as not healthy yet)."""
    info = node.client().info("replication")
    if info["role"] == "master":
        return False
    if info.get("master_link_status") != "up":
        raise redis.RedisError(f"port {node.port}: replica not in sync yet")
    return True


def _replicas_seen(node: RedisProcess) -> int:
    """How many live replicas ``node``'s ``CLUSTER NODES`` lists."""
    return sum(1 for entry in node.client().cluster("nodes").values()
               if entry["master_id"] != "-"
               and not {"fail", "fail?", "noaddr"} & set(entry["flags"].split(",")))


def _cluster_port(taken: set[int]) -> int:
    """A port nothing listens on, nor on its bus port, both below the kernel's ephemeral range
    (32768 up), so no outgoing connection takes them meanwhile; added to ``taken`` (ports not
    yet bound)."""
    while True:
        port = random.randrange(12_000, 22_000)
        if port not in taken and not any(port_open(p) for p in (port, port + BUS_OFFSET)):
            taken.add(port)
            return port


def _role(node: RedisProcess) -> str:
    """``master`` or ``slave``."""
    return str(node.client().info("replication")["role"])


@contextmanager
def redis_cluster(masters: int = 3, replicas: int = 1) -> Iterator[LocalRedisCluster]:
    """A started :class:`LocalRedisCluster` in a temporary folder, stopped on exit."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="redis-cluster-")))
        cluster = LocalRedisCluster(workdir, masters, replicas)
        stack.callback(cluster.stop)
        cluster.start()
        yield cluster
