"""The chaos report: one row per fault scenario of ``tests/faults`` (what it injected, what it
checked, what it found), printed as a table when the suite ends and written to
``build/test-artefacts/chaos.md`` for the docs (``scripts/chaos.sh`` runs just that suite)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass

COLUMNS = ("scenario", "events in", "rows checked", "mismatches", "lost", "duplicated",
           "recovery s", "what was checked")


@dataclass(frozen=True)
class ChaosRow:
    """What one fault scenario did and found. ``recovery_s`` is from the fault's end (or its
    injection, for a kill) until the outputs matched the oracle again; None when the scenario
    has no outage (hostile input)."""

    scenario: str
    events_in: int
    rows_checked: int
    mismatches: int
    lost: int
    duplicated: int
    recovery_s: float | None
    checked: str

    def cells(self) -> tuple[str, ...]:
        recovery = "-" if self.recovery_s is None else f"{self.recovery_s:.1f}"
        return (self.scenario, f"{self.events_in:,}", f"{self.rows_checked:,}",
                str(self.mismatches), str(self.lost), str(self.duplicated), recovery,
                self.checked)


def machine() -> str:
    """The date and the machine a report was measured on."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{time.strftime('%Y-%m-%d')}, {platform.system()} {platform.machine()}, "
            f"{os.cpu_count()} cores, {memory_gib:.0f} GiB")


def markdown_table(rows: Iterable[ChaosRow]) -> str:
    """The rows as a Markdown table, headed by the date and the machine."""
    lines = [f"Measured {machine()}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"
