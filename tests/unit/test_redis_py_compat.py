"""The redis-py internals :mod:`jobs.node_pipelines` relies on (its cluster pipeline's
``NodeCommands`` and ``PipelineCommand``, a plain pipeline's queue, the cluster client's slot
map) still exist with the shapes it uses: redis-py is pinned in ``pyproject.toml``, and an
upgrade that moves any of them fails here in seconds rather than in a job on Redis Cluster."""

from __future__ import annotations

import inspect

import pytest
import redis
from redis.client import Pipeline
from redis.cluster import NodeCommands, NodesManager, PipelineCommand, RedisCluster
from redis.crc import key_slot

pytestmark = pytest.mark.unit


def parameters(function: object) -> list[str]:
    return [name for name in inspect.signature(function).parameters  # type: ignore[arg-type]
            if name != "self"]


def test_node_commands_are_made_filled_written_and_read_as_node_pipelines_does() -> None:
    assert parameters(NodeCommands.__init__) == ["parse_response", "connection_pool",
                                                 "connection"]
    assert parameters(NodeCommands.append) == ["c"]
    assert parameters(NodeCommands.write) == parameters(NodeCommands.read) == []
    node = NodeCommands(print, "pool", "connection")
    assert (node.parse_response, node.connection_pool, node.connection, node.commands) == (
        print, "pool", "connection", [])
    command = PipelineCommand(("SET", "k", "v"), {"nx": True}, 0)
    node.append(command)
    assert node.commands == [command]
    assert (command.args, command.options, command.position, command.result) == (
        ("SET", "k", "v"), {"nx": True}, 0, None)


def test_a_plain_pipeline_queues_args_and_options_and_keeps_its_scripts() -> None:
    client = redis.Redis(host="127.0.0.1", port=1)  # never connects: nothing is sent
    pipe = client.pipeline(transaction=False)
    assert isinstance(pipe, Pipeline)
    pipe.set("k", "v", nx=True)
    script = client.register_script("return 1")
    script(keys=["k"], client=pipe)
    (args, options), _ = pipe.command_stack
    assert args == ("SET", "k", "v", "NX") and isinstance(options, dict)
    assert [s.script for s in pipe.scripts] == ["return 1"]
    assert parameters(pipe.parse_response) == ["connection", "command_name", "options"]
    assert pipe.connection_pool is client.connection_pool


def test_the_cluster_client_keeps_its_slot_map_and_node_clients() -> None:
    assert "self.slots_cache" in inspect.getsource(NodesManager)
    assert parameters(NodesManager.initialize) == []
    assert parameters(RedisCluster.get_redis_connection) == ["node"]
    assert key_slot(b"{u-1}:a") == key_slot(b"u-1") < 16384
