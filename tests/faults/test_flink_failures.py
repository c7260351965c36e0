"""Flink losing a TaskManager or its JobManager (issue 13, scenarios 1 and 6).

1. A TaskManager's whole JVM SIGKILLed mid-stream while the feature and the scoring job run at
   parallelism 2 over the faults stack's two TaskManagers (slots spread over both): both jobs
   restart from their checkpoints; every row equals the oracle; every purchase is in ``scores``
   or ``scores.dlq``, none missing, and the duplicates (tansu shows the aborted transactions
   Apache Kafka hides) are counted and all of records scored before the kill: the replayed span.
   ``stack.up()`` replaces the dead TaskManager and both register again.
2. The JobManager SIGKILLed (no HA on the local stack: it forgets its jobs): ``stack.up()``
   restarts it and resumes the feature job from its newest retained checkpoint; after more
   events, every row equals the oracle.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack, submissions
from featurestream.devstack.private import isolated
from featurestream.flink_rest import FINAL_STATES, FlinkRest
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.model_registry import ModelRegistry
from testing import model_fixtures
from testing.chaos import ChaosRow
from testing.processes import kill
from tests.integration.conftest import cancel_job, job_diagnostics, job_exceptions, wait_for
from tests.integration.test_feature_job import (
    encoded,
    good_events,
    produce,
    wait_until_stable,
)
from tests.integration.test_scoring_job import Topics
from tests.oracle import assert_row_matches, expected_row

pytestmark = pytest.mark.flink

EVENTS = 1_500


@dataclass(frozen=True)
class RowCheck:
    """The rows against the oracle: the users whose row differs (or is behind their events),
    and the events their 24 h counts miss or hold twice."""

    wrong: list[str]
    lost: int
    duplicated: int

    @classmethod
    def of(cls, rows: dict[str, dict], by_user: dict[str, list[Event]]) -> RowCheck:
        wrong, lost, duplicated = [], 0, 0
        for user_id, events in by_user.items():
            row = rows[user_id]
            expected = expected_row(events, row["as_of"])
            lost += max(expected["events_24h"] - row["events_24h"], 0)
            duplicated += max(row["events_24h"] - expected["events_24h"], 0)
            try:
                assert row["as_of"] >= max(e.ts for e in events)
                assert_row_matches(row, expected, user_id)
            except AssertionError:
                wrong.append(user_id)
        return cls(wrong, lost, duplicated)


def running_everywhere(rest: FlinkRest, job_id: str) -> bool:
    """Every subtask of the job runs."""
    job = rest.job(job_id)
    return job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"])


def attempts(rest: FlinkRest, job_id: str, resource_id: str | None = None
             ) -> dict[tuple[str, int], int]:
    """Each subtask's current execution attempt (only those on TaskManager ``resource_id``)."""
    return {(vertex["id"], subtask["subtask"]): subtask["attempt"]
            for vertex in rest.job(job_id)["vertices"]
            for subtask in rest.call(f"/jobs/{job_id}/vertices/{vertex['id']}")["subtasks"]
            if resource_id in (None, subtask.get("taskmanager-id"))}


def superseded(rest: FlinkRest, job_id: str, old: dict[tuple[str, int], int]) -> bool:
    """Each subtask of ``old`` has moved past that attempt: Flink creates the next attempt
    once the previous one has ended, so those attempts have stopped writing. (Region failover
    restarts only the failed subtasks' pipelines; the others run on and replay nothing.)"""
    now = attempts(rest, job_id)
    return all(now[key] > attempt for key, attempt in old.items())


def poll(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` every 0.2 s (for short windows) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def taskmanagers_of(rest: FlinkRest, job_id: str) -> set[str]:
    """The TaskManagers (their endpoints) running the job's subtasks."""
    return {tm["endpoint"] for vertex in rest.job(job_id)["vertices"]
            for tm in rest.call(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")[
                "taskmanagers"]}


def completed_checkpoints(rest: FlinkRest, job_id: str) -> int:
    return rest.checkpoints(job_id).completed


def with_model(settings: Settings, tmp_path: Path) -> Settings:
    """The settings with a registry of their own holding a small real model."""
    settings = settings.replace(models_dir=str(tmp_path / "models"))
    ModelRegistry(settings.effective_models_dir, settings.model_name).publish(
        model_fixtures.train_text(), model_fixtures.metadata(1))
    return settings


def test_a_killed_taskmanager_is_replaced_and_nothing_is_lost(
        stack: LocalStack, chaos: Callable[[ChaosRow], None], tmp_path: Path) -> None:
    assert len(stack.flink.taskmanager_pids()) == 2, "the faults stack runs two TaskManagers"
    settings = with_model(isolated(stack, "tmkill", parallelism=2), tmp_path)
    rest = FlinkRest(settings.flink_rest_url)
    events, by_user = good_events(seed=41, count=EVENTS)
    records = encoded(EventEncoder(registry_for(settings.schema_registry)), events)
    purchases = {e.event_id for e in events if e.event_type in settings.scored_event_types}
    event_of_value = {value: e.event_id for (_, value, _), e in zip(records, events, strict=True)}
    features = submit_job(settings, "features")
    scoring = submit_job(settings, "scoring")
    topics = Topics(settings)

    def diagnostics() -> str:
        return job_diagnostics(settings, features) + "\n" + job_diagnostics(settings, scoring)

    try:
        half = len(records) // 2
        produce(settings, records[:half])
        wait_for(lambda: all(running_everywhere(rest, j) for j in (features, scoring)), 120,
                 "both jobs running", diagnostics)
        for job in (features, scoring):
            hosts = taskmanagers_of(rest, job)
            assert len(hosts) == 2, f"job {job} runs on {hosts}, not on both TaskManagers"
        wait_for(lambda: completed_checkpoints(rest, features) >= 1
                 and topics.read()[0] > 0, 120, "a checkpoint and the first scores",
                 diagnostics)

        victim = stack.flink.taskmanagers()[1]
        survivor, doomed = stack.flink.taskmanagers()[0].launch(), victim.launch()
        pid = victim.pid()
        assert pid is not None and survivor is not None and doomed is not None
        before = attempts(rest, scoring, doomed.resource_id)
        assert before, "no subtask of the scoring job on the TaskManager to kill"
        killed_at = time.monotonic()
        kill(pid)
        # What the scoring job wrote before it stopped: a replay may repeat these, nothing else.
        poll(lambda: superseded(rest, scoring, before), 120,
             "the scoring job's subtasks to stop after losing a TaskManager")
        topics.read()
        before_kill = {s["event_id"] for s in topics.scores}
        produce(settings, records[half:])
        stack.up()  # replaces the dead TaskManager
        replacement = victim.launch()
        assert replacement is not None
        assert {survivor.resource_id, replacement.resource_id} <= (
            stack.flink.registered_taskmanagers()), "both TaskManagers registered again"

        rows = wait_until_stable(settings, sorted(by_user),
                                 lambda: running_everywhere(rest, features),
                                 diagnostics, decayed=by_user)
        recovered_s = time.monotonic() - killed_at
        settled = topics.settled(0, 0)  # reads both topics; true once they stop growing
        wait_for(lambda: settled() and {s["event_id"] for s in topics.scores} | {
            event_of_value.get(m.value()) for m in topics.dead} >= purchases, 240,
                 "every purchase scored or dead-lettered", diagnostics)
        scored = Counter(s["event_id"] for s in topics.scores)
        dead = Counter(event_of_value.get(m.value()) for m in topics.dead)
        lost = purchases - set(scored) - set(dead)
        repeated = {event_id for event_id, n in (scored + dead).items() if n > 1}
        duplicated = sum((scored + dead).values()) - len(scored | dead)
        check = RowCheck.of(rows, by_user)
        chaos(ChaosRow("TaskManager killed (SIGKILL JVM), 2 jobs at P=2 on 2 TMs", len(events),
                       len(rows) + len(purchases), len(check.wrong), check.lost + len(lost),
                       check.duplicated + duplicated, recovered_s,
                       f"rows = oracle; {len(purchases)} purchases in scores or scores.dlq, "
                       f"{duplicated} duplicate(s), each of one of the {len(before_kill)} "
                       "scored before the kill (tansu shows aborted transactions); TM replaced"))
        assert not check.wrong, f"rows differ from the oracle: {check.wrong}"
        assert check.lost == check.duplicated == 0
        assert not lost, f"purchases neither scored nor dead-lettered: {sorted(lost)}"
        assert set(scored) | set(dead) <= purchases, "something else was scored"
        assert repeated <= before_kill, "a duplicate outside the replayed span"
        assert job_exceptions(settings, scoring) and job_exceptions(settings, features), (
            "the kill did not hit both jobs")
    finally:
        for job in (scoring, features):
            cancel_job(settings, job)


def test_a_killed_jobmanager_comes_back_and_resumes_the_job_from_its_checkpoint(
        stack: LocalStack, chaos: Callable[[ChaosRow], None]) -> None:
    settings = isolated(stack, "jmkill")
    rest = FlinkRest(settings.flink_rest_url)
    events, by_user = good_events(seed=43, count=EVENTS)
    records = encoded(EventEncoder(registry_for(settings.schema_registry)), events)
    lost = submit_job(settings, "features")
    resumed = None
    try:
        third = len(records) // 3
        produce(settings, records[:third])
        wait_for(lambda: completed_checkpoints(rest, lost) >= 2, 120, "two checkpoints",
                 lambda: job_diagnostics(settings, lost))
        jobmanager = stack.flink.jobmanager_pid()
        assert jobmanager is not None
        killed_at = time.monotonic()
        kill(jobmanager, stack.flink.endpoints.flink_rest.port)
        produce(settings, records[third:2 * third])  # the broker keeps them for the resumed job
        stack.up()  # restarts the JobManager and resumes the job it lost
        recorded = [s.job_id for s in submissions.submissions(settings.home)
                    if s.env["FEATURESTREAM_EVENTS_TOPIC"] == settings.events_topic]
        assert len(recorded) == 1 and recorded[0] != lost, recorded
        resumed = recorded[0]
        assert rest.job(resumed)["state"] not in FINAL_STATES
        restored = rest.call(f"/jobs/{resumed}/checkpoints")["latest"]["restored"]
        assert f"/{lost}/chk-" in restored["external_path"], restored
        produce(settings, records[2 * third:])  # more events, after the resume
        rows = wait_until_stable(settings, sorted(by_user),
                                 lambda: completed_checkpoints(rest, resumed) >= 1,
                                 lambda: job_diagnostics(settings, resumed), decayed=by_user)
        check = RowCheck.of(rows, by_user)
        chaos(ChaosRow("JobManager killed (SIGKILL), feature job resumed by up", len(events),
                       len(rows), len(check.wrong), check.lost, check.duplicated,
                       time.monotonic() - killed_at,
                       f"up resumed the job from {restored['external_path'].rsplit('/', 1)[-1]} "
                       "of the lost one; rows = oracle after more events"))
        assert not check.wrong, f"rows differ from the oracle: {check.wrong}"
        assert check.lost == check.duplicated == 0
        assert job_exceptions(settings, resumed) == [], "the resumed job failed"
    finally:
        for job in (resumed, lost):
            if job is not None and rest.call_if_up(f"/jobs/{job}") is not None and (
                    rest.job(job)["state"] not in FINAL_STATES):
                cancel_job(settings, job)
