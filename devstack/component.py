"""What every local server (Kafka, Redis, Flink) offers the stack, and its status as plain data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Echo = Callable[[str], None]
"""Receives one line per lifecycle event (the CLI prints them)."""


@dataclass(frozen=True)
class Job:
    """A Flink job as listed by REST ``/jobs/overview``."""

    id: str
    name: str
    state: str


@dataclass(frozen=True)
class ComponentStatus:
    """One component of the stack: up or down, where, and a short detail line."""

    name: str
    up: bool
    address: str
    pid: int | None = None
    detail: str = ""
    jobs: tuple[Job, ...] = ()


class Component(Protocol):
    """A server the stack starts and stops."""

    name: str
    address: str

    def running(self) -> bool:
        """True if this stack's server is up (pid file + port)."""
        ...

    def check_startable(self, echo: Echo) -> None:
        """If not running: raise a UserFacingError unless ``start`` can work (ports, binaries)."""
        ...

    def start(self, echo: Echo) -> None:
        """Start the server and wait until it is ready."""
        ...

    def stop(self, echo: Echo) -> None:
        """Stop the server if it runs (idempotent)."""
        ...

    def status(self) -> ComponentStatus:
        """The current status."""
        ...
