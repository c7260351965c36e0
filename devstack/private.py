"""Settings for a private stack on free ports (tests and benchmarks run beside a demo stack)."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from featurestream.devstack.component import Echo
from featurestream.devstack.local import LocalStack
from featurestream.settings import Settings


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


SUCCESSORS = 3  # Flink's RPC and metrics ports are REST + 1, + 2 and + 3


def free_ports(count: int) -> list[int]:
    """``count`` free ports, each with :data:`SUCCESSORS` free successors (for Flink's)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        block = set(range(port, port + SUCCESSORS + 1))
        taken = {p for q in ports for p in range(q, q + SUCCESSORS + 1)}
        if (port <= 65535 - SUCCESSORS and not block & taken
                and all(_bindable(p) for p in block - {port})):
            ports.append(port)
    return ports


def private_settings(home: Path, **changes: Any) -> Settings:
    """Settings for a stack in ``home`` whose servers listen on free loopback ports."""
    kafka, redis, flink = free_ports(3)
    return Settings().replace(
        home=home,
        kafka_bootstrap=f"127.0.0.1:{kafka}",
        redis_url=f"redis://127.0.0.1:{redis}/0",
        flink_rest_url=f"http://127.0.0.1:{flink}",
        **changes,
    )


@contextmanager
def private_stack(home: Path | None = None, echo: Echo = print,
                  **changes: Any) -> Iterator[LocalStack]:
    """A whole local stack on free ports in ``home`` (default: a temporary directory), up
    for the ``with`` block and down after it."""
    with ExitStack() as cleanup:
        if home is None:
            home = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="featurestream-")))
        stack = LocalStack(private_settings(home, **changes), echo=echo)
        stack.up()
        try:
            yield stack
        finally:
            stack.down()


def isolated(stack: LocalStack, name: str, **changes: Any) -> Settings:
    """The stack's settings with their own topics (created), Redis prefix and consumer groups.

    Tests and benchmarks share one stack; each names its own slice of it.
    """
    settings = stack.settings.replace(
        events_topic=f"{name}.events", events_dlq_topic=f"{name}.events.dlq",
        scores_topic=f"{name}.scores", scores_dlq_topic=f"{name}.scores.dlq",
        redis_key_prefix=f"{name}:", consumer_group=f"{name}-group",
        scoring_group=f"{name}-scoring", **changes,
    )
    LocalStack(settings, echo=lambda line: None).kafka.ensure_topics(lambda line: None)
    return settings
