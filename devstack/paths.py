"""The runtime file layout of the local stack under ``settings.home``."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

# Flink's daemon scripts name pid and log files flink-<ident>-<daemon>...
FLINK_IDENT = "featurestream"


@dataclass(frozen=True)
class StackPaths:
    """``<home>/run`` holds pid files, ``<home>/logs`` the logs, ``<home>/flink`` FLINK_HOME."""

    home: Path

    @property
    def run_dir(self) -> Path:
        """Pid files of every server."""
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        """Log files of every server (Flink's under ``flink/``)."""
        return self.home / "logs"

    @property
    def flink_home(self) -> Path:
        """The clean FLINK_HOME built by ``up``."""
        return self.home / "flink"

    @property
    def flink_conf(self) -> Path:
        """FLINK_CONF_DIR."""
        return self.flink_home / "conf"

    @property
    def flink_log_dir(self) -> Path:
        """Flink's ``env.log.dir``."""
        return self.log_dir / "flink"

    @property
    def flink_tmp(self) -> Path:
        """Flink's ``io.tmp.dirs`` (job artifacts and the Python workers' files)."""
        return self.flink_home / "tmp"

    def pid_file(self, name: str) -> Path:
        """Pid file of a server we spawn ourselves (kafka, redis)."""
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        """Log file of a server we spawn ourselves (kafka, redis)."""
        return self.log_dir / f"{name}.log"

    def flink_pid_file(self, daemon: str) -> Path:
        """Pid file written by Flink's ``flink-daemon.sh`` (standalonesession, taskexecutor)."""
        return self.run_dir / f"flink-{FLINK_IDENT}-{daemon}.pid"

    def flink_log_file(self, daemon: str) -> Path:
        """The log of the one instance of a Flink daemon (``flink-daemon.sh`` names it
        ``flink-<ident>-<daemon>-<index>-<host>.log``; rotated on each start)."""
        host = os.environ.get("HOSTNAME") or socket.gethostname()
        return self.flink_log_dir / f"flink-{FLINK_IDENT}-{daemon}-0-{host}.log"
