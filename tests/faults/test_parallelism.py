"""Both jobs at parallelism 4 over 4-partition topics, spread over the faults stack's two
TaskManagers (issue 14, item 2).

The feature job (P=4) reads a generated stream; every row equals the oracle, and its keyed
operator's per-subtask ``events_in`` counters show the state shards' keys spread evenly: every
subtask got work, none more than twice the mean. The scoring job (P=4; after the feature job:
the stack has four slots) then scores every purchase exactly once, each score the model applied
to the vector captured for its event: what the P=1 path gives, the model being deterministic.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from testing import model_fixtures
from testing.chaos import ChaosRow
from tests.faults.test_upgrades import mismatches, settled_rows, stream
from tests.integration.conftest import (
    cancel_job,
    flink_get,
    job_diagnostics,
    job_exceptions,
    wait_for,
)
from tests.integration.test_feature_job import encoded, produce
from tests.integration.test_scoring_job import Topics, assert_scored_from_captures, predict

pytestmark = pytest.mark.flink

PARALLELISM = 4
KEYED = "entity features"  # the keyed operator's name starts so (jobs/features/job.py)
EVENTS_IN = ".featurestream.events_in"


def keyed_vertex(settings: Settings, job_id: str) -> dict:
    return next(v for v in flink_get(settings, f"/jobs/{job_id}")["vertices"]
                if KEYED in v["name"])


def events_per_subtask(settings: Settings, job_id: str) -> dict[int, float]:
    """The keyed operator's ``events_in`` counter of each subtask (the vertex's metrics are
    listed per subtask as ``<index>.<metric>``)."""
    path = f"/jobs/{job_id}/vertices/{keyed_vertex(settings, job_id)['id']}/metrics"
    ids = [m["id"] for m in flink_get(settings, path) if m["id"].endswith(EVENTS_IN)]
    values = flink_get(settings, f"{path}?get={','.join(ids)}") if ids else []
    return {int(m["id"].split(".", 1)[0]): float(m["value"]) for m in values}


def taskmanagers_of(settings: Settings, job_id: str) -> set[str]:
    """The TaskManagers running the keyed operator's subtasks."""
    vertex = keyed_vertex(settings, job_id)
    details = flink_get(settings, f"/jobs/{job_id}/vertices/{vertex['id']}")
    return {s.get("taskmanager-id") or s["host"] for s in details["subtasks"]}


def test_both_jobs_at_p4_equal_p1_and_spread_keys_evenly(
        stack: LocalStack, tmp_path: Path, chaos: Callable[[ChaosRow], None]) -> None:
    started = time.monotonic()
    models = tmp_path / "models"
    model_fixtures.publish(models, 1)
    settings = isolated(stack, "parallel", topic_partitions=PARALLELISM,
                        parallelism=PARALLELISM, models_dir=str(models))
    encoder = EventEncoder(registry_for(settings.schema_registry))
    events = stream(seed=71, count=1600)
    purchases = {e.event_id: e for e in events if e.event_type == "purchase"}

    job_id = submit_job(settings, "features")
    try:
        produce(settings, encoded(encoder, events))
        rows = settled_rows(settings, events, job_id)
        wrong = mismatches(rows, events)
        # The counters are reported every few seconds: wait until they add up to the stream.
        spread: dict[int, float] = {}

        def counted() -> bool:
            spread.update(events_per_subtask(settings, job_id))
            return sum(spread.values()) >= len(events)

        wait_for(counted, 30, "the keyed operator's events_in to count every event",
                 lambda: f"{spread}\n{job_diagnostics(settings, job_id)}")
        parallelism = {v["parallelism"] for v in flink_get(settings, f"/jobs/{job_id}")[
            "vertices"]}
        taskmanagers = taskmanagers_of(settings, job_id)
        restarts = job_exceptions(settings, job_id)
    finally:
        cancel_job(settings, job_id)

    mean = sum(spread.values()) / PARALLELISM
    print(f"events_in per subtask at P={PARALLELISM}: "
          f"{[int(spread[i]) for i in sorted(spread)]} (mean {mean:.0f}, "
          f"max/mean {max(spread.values()) / mean:.2f}) on {len(taskmanagers)} TaskManagers")
    assert parallelism == {PARALLELISM}, parallelism
    assert not wrong, "\n".join(wrong[:5])
    assert not restarts, restarts[:1]
    assert sorted(spread) == list(range(PARALLELISM)), spread
    assert all(0 < n <= 2 * mean for n in spread.values()), spread
    assert len(taskmanagers) == 2, taskmanagers

    # The scoring job takes the four slots the feature job left; every purchase was captured.
    scoring_id = submit_job(settings, "scoring")
    topics = Topics(settings)
    try:
        wait_for(lambda: topics.read()[0] >= len(purchases), 90, "every purchase scored",
                 lambda: job_diagnostics(settings, scoring_id))
        scoring_parallelism = {v["parallelism"] for v in flink_get(
            settings, f"/jobs/{scoring_id}")["vertices"]}
        restarts = job_exceptions(settings, scoring_id)
    finally:
        cancel_job(settings, scoring_id)

    scored = Counter(s["event_id"] for s in topics.scores)
    lost = sorted(set(purchases) - set(scored))
    duplicated = sum(n - 1 for n in scored.values())
    chaos(ChaosRow(f"parallelism: both jobs at P={PARALLELISM}, 4 partitions, 2 TaskManagers",
                   len(events), len(rows), len(wrong), len(lost), duplicated, None,
                   f"rows = oracle; {len(purchases)} purchases scored once, each = model on "
                   f"its captured vector (the P=1 score); "
                   f"events_in per subtask {[int(spread[i]) for i in sorted(spread)]} "
                   f"(max/mean {max(spread.values()) / mean:.2f})"))
    assert scoring_parallelism == {PARALLELISM}, scoring_parallelism
    assert not lost and not duplicated, (lost[:5], duplicated)
    assert set(scored) == set(purchases) and not topics.dead and not restarts
    assert_scored_from_captures(settings, redis.Redis.from_url(settings.redis_url),
                                topics.scores, purchases)
    for score in topics.scores:
        assert score["score"] == pytest.approx(predict(settings, 1, score["features"]),
                                               abs=1e-9), score
    print(f"wall time {time.monotonic() - started:.0f} s")
