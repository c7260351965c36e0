"""Base class of the single-process servers the stack spawns itself (Kafka, Redis)."""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping

from featurestream.devstack import process
from featurestream.devstack.component import ComponentStatus, Echo
from featurestream.devstack.endpoints import Endpoint
from featurestream.devstack.paths import StackPaths


class SpawnedServer(ABC):
    """A server process tracked by ``<home>/run/<name>.pid``, logging to ``<home>/logs/<name>.log``.

    Subclasses give the executable, its arguments, a readiness probe and a status detail.
    """

    name: str
    marker: str  # a substring of the server's command line, to tell it from a reused pid
    timeout: float  # seconds to become ready

    def __init__(self, paths: StackPaths, endpoint: Endpoint) -> None:
        self.paths = paths
        self.endpoint = endpoint
        self.address = endpoint.address
        self.pid_file = paths.pid_file(self.name)
        self.log_file = paths.log_file(self.name)

    @abstractmethod
    def executable(self, echo: Echo) -> str:
        """Path of the server binary (raise a UserFacingError naming the fix if missing)."""

    @abstractmethod
    def command(self, executable: str) -> list[str]:
        """The server's command line."""

    @abstractmethod
    def ready(self) -> bool:
        """True once the server answers its protocol."""

    def detail(self) -> str:
        """A short status detail while up."""
        return ""

    def environment(self) -> Mapping[str, str]:
        """The server's environment."""
        return os.environ

    def pid(self) -> int | None:
        """Pid of this stack's server process, if alive."""
        return process.owned_pid(self.pid_file, self.marker)

    def running(self) -> bool:
        """True if our process is alive and its port accepts connections."""
        return self.pid() is not None and process.port_open(self.endpoint.port)

    def check_startable(self, echo: Echo) -> None:
        """Fail early if the port is taken by a foreign process or the binary is missing."""
        if self.running():
            return
        if self.pid() is None:
            process.ensure_port_free(self.endpoint.port, self.endpoint.variable, self.name)
        self.executable(echo)

    def start(self, echo: Echo) -> None:
        """Start the server (replacing a half-started one of ours) and wait until it is ready."""
        stale = self.pid()
        if stale is not None:
            process.terminate([stale])
        argv = self.command(self.executable(echo))
        echo(f"starting {self.name} on {self.address}")
        started = time.monotonic()
        pid = process.spawn(argv, self.log_file, self.pid_file, self.environment())
        process.wait_ready(self.name, self.ready, self.timeout, lambda: process.alive(pid),
                           self.log_file)
        echo(f"{self.name} ready in {time.monotonic() - started:.1f} s")

    def stop(self, echo: Echo) -> None:
        """Stop our server process if it runs; remove the pid file."""
        pid = self.pid()
        if pid is None:
            echo(f"{self.name} already down")
        else:
            echo(f"stopping {self.name} (pid {pid})")
            process.terminate([pid])
            echo(f"{self.name} stopped")
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> ComponentStatus:
        """Up/down, address, pid and detail."""
        up = self.running()
        return ComponentStatus(self.name, up, self.address, self.pid() if up else None,
                               self.detail() if up else "")
