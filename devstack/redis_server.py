"""redis-server without persistence (apt-installed if missing): the local stack's Redis, and the
private one of each Redis test and benchmark (``testing.reader_fixtures.RedisProcess``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import redis

from featurestream.devstack.component import Echo
from featurestream.devstack.endpoints import HOST, Endpoint
from featurestream.devstack.paths import StackPaths
from featurestream.devstack.server import SpawnedServer
from featurestream.errors import UserFacingError

APT_INSTALL = "apt-get update && apt-get install -y redis-server"


def install_redis(echo: Echo) -> None:
    """Install Debian's redis-server with apt-get (needs root)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise UserFacingError(f"redis-server not found on PATH: install it ({APT_INSTALL})")
    echo(f"redis-server not found: installing it ({APT_INSTALL})")
    result = subprocess.run(["sh", "-c", APT_INSTALL], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0 or not shutil.which("redis-server"):
        raise UserFacingError(f"installing redis-server failed ({APT_INSTALL}):\n"
                              f"{result.stderr.strip()[-2000:]}")


class RedisServer(SpawnedServer):
    """redis-server on 127.0.0.1:<endpoint's port> (the stack's: FEATURESTREAM_REDIS_URL's), no
    RDB/AOF files."""

    name = "redis"
    marker = "redis-server"
    timeout = 15.0

    def __init__(self, paths: StackPaths, endpoint: Endpoint, extra_args: Sequence[str] = (),
                 url: str = "") -> None:
        super().__init__(paths, endpoint)
        self.extra_args = tuple(extra_args)  # later options win, e.g. --port 0 --tls-port N
        self.url = url or f"redis://{endpoint.address}/0"  # how clients reach it

    def executable(self, echo: Echo) -> str:
        """redis-server from PATH, installing it first if needed."""
        if not shutil.which("redis-server"):
            install_redis(echo)
        return str(shutil.which("redis-server"))

    def command(self, executable: str) -> list[str]:
        """Foreground redis-server bound to 127.0.0.1 without persistence."""
        return [executable, "--port", str(self.endpoint.port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--daemonize", "no", *self.extra_args]

    def ready(self) -> bool:
        """True once PING answers."""
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def detail(self) -> str:
        """Keys (all databases) and memory in use."""
        try:
            client = self.client()
            keyspace: dict[str, dict[str, int]] = client.info("keyspace")
            memory: dict[str, str] = client.info("memory")
        except redis.RedisError as exc:
            return f"not answering: {exc}"
        keys = sum(db["keys"] for db in keyspace.values())
        return f"{keys} keys, {memory['used_memory_human']} used"

    def client(self, timeout_s: float = 2.0) -> redis.Redis:
        """A redis-py client of this server."""
        return redis.Redis.from_url(self.url, socket_timeout=timeout_s)
