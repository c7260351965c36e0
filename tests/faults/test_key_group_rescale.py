"""The feature job past 16 subtasks (issue 14, item 3): state sharded by key group rescales from
savepoints P=2 -> P=WIDE -> P=1 without another layout, each step's rows equal to the oracle of
an uninterrupted run, and at P=WIDE every keyed subtask does work.

WIDE = 17, the smallest parallelism past the 16 shards of earlier releases: each subtask runs two
Python workers (the sharding stage and the keyed operator), and 34 of them are what this 2-core
box starts in reasonable time. The faults stack's two TaskManagers have 2 slots each; this
scenario restarts them with WIDE slots between them, and back with 2 after (the slot count is
only in the rendered Flink configuration, which the running JobManager does not rewrite).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import pytest

from featurestream.devstack import LocalStack, process
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.events import Event
from testing.chaos import ChaosRow
from tests.faults.test_parallelism import events_per_subtask
from tests.faults.test_upgrades import rescale_through
from tests.integration.conftest import job_diagnostics, wait_for

pytestmark = pytest.mark.flink

WIDE = 17
SLOTS = "taskmanager.numberOfTaskSlots: "


def restart_taskmanagers(stack: LocalStack, slots: int) -> None:
    """The stack's TaskManagers restarted with ``slots`` slots each, all registered."""
    config = stack.flink.paths.flink_conf / "config.yaml"
    lines = config.read_text().splitlines(keepends=True)
    config.write_text("".join(f"{SLOTS}{slots}\n" if line.startswith(SLOTS) else line
                              for line in lines))
    process.terminate(stack.flink.taskmanager_pids())
    stack.up()
    want = slots * stack.settings.taskmanagers
    wait_for(lambda: (stack.flink.rest.call_if_up("/overview") or {}).get("slots-total") == want,
             60, f"{want} slots registered", lambda: str(stack.flink.rest.call_if_up("/overview")))


@pytest.fixture()
def wide_stack(stack: LocalStack) -> Iterator[LocalStack]:
    """The faults stack with WIDE slots over its TaskManagers, then back to 2 each."""
    restart_taskmanagers(stack, -(-WIDE // stack.settings.taskmanagers))
    try:
        yield stack
    finally:
        restart_taskmanagers(stack, 2)


def every_subtask_counted(settings: Settings, job_id: str) -> dict[int, float]:
    """The keyed operator's ``events_in`` per subtask, once every subtask has counted some."""
    spread: dict[int, float] = {}

    def counted() -> bool:
        spread.update(events_per_subtask(settings, job_id))
        return len(spread) == WIDE and all(spread.values())

    wait_for(counted, 30, f"events_in of all {WIDE} keyed subtasks",
             lambda: f"{spread}\n{job_diagnostics(settings, job_id)}")
    return spread


def many_users(seed: int, count: int) -> list[Event]:
    """A generated stream over 300 users, so every one of WIDE subtasks gets some."""
    config = StreamConfig(users=300, items=100, events_per_second=4.0, seed=seed,
                          out_of_order_fraction=0.05)
    return list(itertools.islice(generate_events(config), count))


def test_rescale_past_sixteen_subtasks_keeps_the_state_layout(
        wide_stack: LocalStack, chaos: Callable[[ChaosRow], None]) -> None:
    started = time.monotonic()
    events = many_users(seed=83, count=1800)
    spread: dict[int, float] = {}

    def at_wide(settings: Settings, job_id: str) -> None:
        if settings.parallelism == WIDE:
            spread.update(every_subtask_counted(settings, job_id))

    run = rescale_through(isolated(wide_stack, "wide", topic_partitions=4),
                          [(2, events[:600]), (WIDE, events[600:1200]), (1, events[1200:])],
                          after_step=at_wide)
    counts = [int(spread[i]) for i in sorted(spread)]
    chaos(ChaosRow(f"rescale: feature job P=2 -> {WIDE} -> 1 (state by key group)",
                   len(run.seen), len(run.rows), len(run.wrong), 0, 0, run.recovery_s,
                   f"after each step, rows = oracle; events_in per subtask at P={WIDE}: "
                   f"{counts}"))
    print(f"events_in per subtask at P={WIDE}: {counts}; "
          f"wall time {time.monotonic() - started:.0f} s")
    assert not run.wrong, "\n".join(run.wrong[:5])
    assert len(run.seen) == len(events) and not run.restarts, run.restarts[:1]
    assert len(counts) == WIDE and all(counts), counts
