"""The feature job's real ceilings (``bench/ceiling_job.py``), measured like the job itself: the
same preloaded backlog, parallelism and rate window (:func:`bench.feature_job.steady_rate`).

- ``discard``: Flink's Kafka source into a discarding sink (Java only): counted by the source's
  own ``numRecordsOut``;
- ``python``: the same source batched into a Python operator that only counts: its
  ``source_events`` counter, as the feature job's sharding stage counts.

Both sampled every 50 ms from the TaskManagers' Prometheus reporters.

The feature job's figures are printed as a share of these: how much of what Flink can read,
and of what reaches Python at all, the job's own work leaves.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.feature_job import end_run, preload, steady_rate
from featurestream.cli.submit import flink_client, flink_run_program, stage_python_files
from featurestream.devstack import LocalStack, submissions
from featurestream.devstack.component import Echo
from featurestream.devstack.private import isolated
from featurestream.settings.handover import job_environment
from featurestream.udfs.telemetry.catalog import SOURCE_EVENTS

JOB = Path(__file__).resolve().parent / "ceiling_job.py"


@dataclass
class Ceiling:
    mode: str  # discard | python
    parallelism: int
    events: int
    events_per_s: float


SOURCE_RECORDS = "flink_taskmanager_job_task_operator_numRecordsOut"
SAMPLE_S = 0.05  # a ceiling job reads the backlog in a few seconds, the discarding one in one


def live_count(stack: LocalStack, job_id: str, series: str, operator: str = "") -> int:
    """``series`` of job ``job_id`` (of ``operator``, if given) summed over its subtasks, read
    live from every TaskManager's Prometheus reporter: Flink's REST metrics lag by up to a
    second, too coarse for a job that reads the whole backlog in a few."""
    wanted = [f'job_id="{job_id}"'] + ([f'operator_name="{operator}"'] if operator else [])
    total = 0.0
    for taskmanager in stack.flink.taskmanagers():
        url = taskmanager.metrics_url()
        if url is None:
            continue
        with urllib.request.urlopen(url, timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(series + "{") and all(w in line for w in wanted):
                    total += float(line.rsplit(" ", 1)[1])
    return int(total)


def measure_ceiling(stack: LocalStack, mode: str, parallelism: int, events: int, users: int,
                    echo: Echo = print) -> Ceiling:
    """Steady-state records/s of a ceiling job on a preloaded backlog of ``events``."""
    settings = isolated(stack, f"bench-ceiling-{mode}-p{parallelism}", parallelism=parallelism)
    echo(f"ceiling {mode} P={parallelism}: preloading {events:,} events ...")
    preload(settings, events, users, start_ts=int(time.time() * 1000) - 3_600_000)
    command = flink_run_program(settings, JOB, flink_client(settings),
                                stage_python_files(settings), args=[mode])
    with job_environment(settings) as env:  # as `featurestream submit` hands settings over
        job_id = submissions.run_flink(command, env, settings.flink_rest_url)
    try:
        series, operator = ((SOURCE_RECORDS, "Source: events") if mode == "discard"
                            else (SOURCE_EVENTS.name, ""))
        rate = steady_rate(lambda: live_count(stack, job_id, series, operator), events,
                           interval_s=SAMPLE_S)
        echo(f"ceiling {mode} P={parallelism}: {rate:,.0f} events/s")
        return Ceiling(mode, parallelism, events, rate)
    finally:
        end_run(settings, job_id)
