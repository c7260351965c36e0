"""The fault scenarios' stack and report. The scenarios break things (kill a TaskManager, stop
Redis, restart the broker), so they share a private stack of their own, brought back up
before each test, never the integration tests' one; each records a :class:`ChaosRow`, and the
suite ends with the chaos table (also in ``build/test-artefacts/chaos.md``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from featurestream.devstack import LocalStack
from featurestream.devstack.private import private_stack
from testing.chaos import ChaosRow, markdown_table

ARTEFACT = Path(__file__).resolve().parents[2] / "build" / "test-artefacts" / "chaos.md"
_ROWS: list[ChaosRow] = []


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # Two TaskManagers: a scenario kills one while jobs at parallelism 2 span both.
    with private_stack(Path(tmp_path_factory.mktemp("featurestream-faults")),
                       checkpoint_interval_ms=2_000, taskmanagers=2) as local:
        yield local


@pytest.fixture()
def stack(fault_stack: LocalStack) -> LocalStack:
    """The faults stack, every component up (an earlier scenario may have killed one)."""
    fault_stack.up()
    return fault_stack


@pytest.fixture()
def chaos() -> Callable[[ChaosRow], None]:
    """Record a scenario's row in the chaos report (and print it: each scenario says what it
    did and what it checked)."""
    def record(row: ChaosRow) -> None:
        print(" | ".join(row.cells()))
        _ROWS.append(row)
    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ROWS:
        return
    table = markdown_table(_ROWS)
    ARTEFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTEFACT.write_text(table)
    terminalreporter.write_sep("=", "chaos report")
    terminalreporter.write(table)
