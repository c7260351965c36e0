"""Killing a stack's process in a test the way a crash does, and waiting until it is really
gone: a SIGKILLed JVM's threads take a moment to exit and hold its ports meanwhile, and
``featurestream up`` (rightly) does not replace a process that is still alive."""

from __future__ import annotations

import os
import signal
import time

from featurestream.devstack import process

GONE_TIMEOUT_S = 30.0


def kill(pid: int, port: int | None = None) -> None:
    """SIGKILL ``pid`` and wait until every thread of it is gone (and ``port`` is closed)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while process.alive(pid) or (port is not None and process.port_open(port)):
        assert time.monotonic() < deadline, f"pid {pid} still alive after SIGKILL"
        time.sleep(0.1)
