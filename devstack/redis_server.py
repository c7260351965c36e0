"""Redis for the local stack: redis-server without persistence (apt-installed if missing)."""

from __future__ import annotations

import os
import shutil
import subprocess

import redis
from featurestream.devstack.component import Echo
from featurestream.devstack.endpoints import HOST, Endpoints
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
    """redis-server on 127.0.0.1:<port of FEATURESTREAM_REDIS_URL>, no RDB/AOF files."""

    name = "redis"
    marker = "redis-server"
    timeout = 15.0

    def __init__(self, paths: StackPaths, endpoints: Endpoints) -> None:
        super().__init__(paths, endpoints.redis)

    def executable(self, echo: Echo) -> str:
        """redis-server from PATH, installing it first if needed."""
        if not shutil.which("redis-server"):
            install_redis(echo)
        return str(shutil.which("redis-server"))

    def command(self, executable: str) -> list[str]:
        """Foreground redis-server bound to 127.0.0.1 without persistence."""
        return [executable, "--port", str(self.endpoint.port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--daemonize", "no"]

    def ready(self) -> bool:
        """True once PING answers."""
        try:
            return bool(self._client().ping())
        except redis.RedisError:
            return False

    def detail(self) -> str:
        """Keys (all databases) and memory in use."""
        try:
            client = self._client()
            keys = sum(db["keys"] for db in client.info("keyspace").values())
            return f"{keys} keys, {client.info('memory')['used_memory_human']} used"
        except redis.RedisError as exc:
            return f"not answering: {exc}"

    def _client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.endpoint.port, socket_timeout=2.0)
