"""CLI handlers ``featurestream up|down|status``: thin wrappers over :class:`LocalStack`."""

from __future__ import annotations

import argparse

from featurestream.devstack.component import ComponentStatus
from featurestream.devstack.local import LocalStack
from featurestream.settings import Settings


def up(settings: Settings, args: argparse.Namespace) -> int:
    """Start the local stack."""
    LocalStack(settings).up()
    return 0


def down(settings: Settings, args: argparse.Namespace) -> int:
    """Stop the local stack."""
    LocalStack(settings).down()
    return 0


def status(settings: Settings, args: argparse.Namespace) -> int:
    """Print one line per component (and per Flink job); exit 0 even if down."""
    for line in status_lines(LocalStack(settings).status()):
        print(line)
    return 0


def status_lines(statuses: list[ComponentStatus]) -> list[str]:
    """``name  up|down  address  [pid N]  [detail]``, then an indented line per job."""
    lines = []
    for s in statuses:
        parts = [f"{s.name:<6}", "up  " if s.up else "down", s.address]
        if s.pid is not None:
            parts.append(f"pid {s.pid}")
        if s.detail:
            parts.append(s.detail)
        lines.append("  ".join(parts))
        lines.extend(f"         job {job.name}  {job.id}  {job.state}" for job in s.jobs)
    return lines
