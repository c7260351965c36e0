"""The TaskManagers of the local Flink cluster: one JVM each, told apart by index.

``flink-daemon.sh`` names its pid and log files after ``FLINK_IDENT_STRING``; the first
TaskManager keeps the stack's ident (its files and its Prometheus port, REST + 3, are what a
single-TaskManager stack always had), TaskManager ``i`` gets ``<ident>-tm<i>``, so each has a
pid file and a log of its own and one can be replaced while the others run. Beside the pid
file, :class:`Launch` records what ``up`` chose for that JVM: its Flink resource id (unique per
start, so REST shows whether this very JVM registered) and its Prometheus port (the extra
TaskManagers take a free ephemeral one: REST + 4 ... could belong to another stack).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import msgspec

from featurestream.devstack import process
from featurestream.devstack.endpoints import HOST, Endpoint
from featurestream.devstack.paths import FLINK_IDENT, StackPaths

DAEMON = "taskexecutor"  # flink-daemon.sh's name
CLASS = "TaskManagerRunner"


class Launch(msgspec.Struct, frozen=True):
    """What a TaskManager JVM was started with."""

    resource_id: str
    metrics_port: int


@dataclass(frozen=True)
class TaskManager:
    """TaskManager number ``index`` (0-based) of a stack."""

    index: int
    paths: StackPaths
    first_metrics: Endpoint  # the first TaskManager's fixed Prometheus port

    @property
    def ident(self) -> str:
        """Its ``FLINK_IDENT_STRING``."""
        return FLINK_IDENT if self.index == 0 else f"{FLINK_IDENT}-tm{self.index}"

    @property
    def _daemon(self) -> str:
        # StackPaths names Flink files flink-<stack ident>-<daemon>: the suffix after the
        # stack's ident makes them flink-<ident>-taskexecutor.
        return DAEMON if self.index == 0 else f"tm{self.index}-{DAEMON}"

    @property
    def pid_file(self) -> Path:
        """Written by ``flink-daemon.sh``."""
        return self.paths.flink_pid_file(self._daemon)

    @property
    def log_file(self) -> Path:
        """Its Flink log."""
        return self.paths.flink_log_file(self._daemon)

    @property
    def launch_file(self) -> Path:
        """Its :class:`Launch`, beside the pid file."""
        return self.pid_file.with_suffix(".json")

    def pid(self) -> int | None:
        """Its JVM's pid, if alive."""
        return process.owned_pid(self.pid_file, CLASS)

    def launch(self) -> Launch | None:
        """What it was last started with (None before its first start)."""
        try:
            return msgspec.json.decode(self.launch_file.read_bytes(), type=Launch)
        except (OSError, msgspec.DecodeError):
            return None

    def new_launch(self, nonce: str) -> Launch:
        """Choose and record the resource id and Prometheus port of its next start."""
        port = self.first_metrics.port if self.index == 0 else _ephemeral_port()
        launch = Launch(f"{self.ident}-{nonce}", port)
        self.launch_file.parent.mkdir(parents=True, exist_ok=True)
        self.launch_file.write_bytes(msgspec.json.encode(launch))
        return launch

    def metrics_url(self) -> str | None:
        """Its Prometheus endpoint (None before its first start)."""
        launch = self.launch()
        return None if launch is None else f"http://{HOST}:{launch.metrics_port}/metrics"

    def forget(self) -> None:
        """Remove its pid and launch files (after a stop)."""
        self.pid_file.unlink(missing_ok=True)
        self.launch_file.unlink(missing_ok=True)


def taskmanagers(paths: StackPaths, first_metrics: Endpoint, count: int) -> list[TaskManager]:
    """The first ``count`` TaskManagers, and any beyond them a larger earlier ``up`` left
    behind (found by their pid files), in index order."""
    indices = set(range(count))
    for pid_file in paths.run_dir.glob(f"flink-{FLINK_IDENT}-tm*-{DAEMON}.pid"):
        number = pid_file.name.removeprefix(f"flink-{FLINK_IDENT}-tm").split("-", 1)[0]
        if number.isdigit():
            indices.add(int(number))
    return [TaskManager(i, paths, first_metrics) for i in sorted(indices)]


def _ephemeral_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port
