"""Upgrades and rescaling with savepoints (issue 13, scenarios 2 and 3), on the faults stack.

1. Upgrade: the feature and scoring jobs run on a stream; ``featurestream stop JOB --savepoint``
   (the CLI, as a user runs it: the scoring job while events flow), more events while both are
   down, then ``featurestream submit JOB --from-savepoint PATH`` with a new build (other batch
   sizes: different code paths over the same state) and, for the feature job, changed
   definitions (a feature added on an existing window). Every row equals the oracle over all
   events, before and after: windows continue, nothing is reset or counted twice; the added
   feature counts from the change; every purchase is scored exactly once.
2. Rescale: the feature job at P=1, resumed at P=2, then at P=1 again, each savepoint taken
   while events flow: after each step every row equals the oracle of an uninterrupted run.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from testing import model_fixtures
from testing.chaos import ChaosRow
from tests.integration.conftest import (
    cancel_job,
    flink_get,
    job_diagnostics,
    job_exceptions,
    wait_for,
)
from tests.integration.test_feature_job import assert_rows_equal_oracle, encoded, produce
from tests.integration.test_scoring_job import Topics, assert_scored_from_captures
from tests.integration.test_user_definitions import wait_for_rows

pytestmark = pytest.mark.flink

Chaos = Callable[[ChaosRow], None]

# The built-in user features as a definitions module, and the upgrade's: one feature added on
# a window the job already keeps.
DEFINITIONS = '''
from featurestream.definitions import Feature, FeatureGroup, gt
from featurestream.udfs.definitions.defaults import USER, events_source, user_features

user_activity = FeatureGroup("user_activity", USER, events_source({topic!r}), [
    *user_features({windows!r}),
    {added}
])
'''
ADDED = 'Feature("big_spend_1h", "count", window="1h", where=gt("amount", 50.0)),'


def write_definitions(path: Path, settings: Settings, upgraded: bool) -> Path:
    path.write_text(DEFINITIONS.format(topic=settings.events_topic, windows=settings.windows,
                                       added=ADDED if upgraded else ""))
    return path


def stream(seed: int, count: int) -> list[Event]:
    """A generated stream (event-time order, 5% out of order) over 40 users."""
    config = StreamConfig(users=40, items=100, events_per_second=4.0, seed=seed,
                          out_of_order_fraction=0.05)
    return list(itertools.islice(generate_events(config), count))


def by_user(events: Sequence[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = {}
    for event in events:
        grouped.setdefault(event.user_id, []).append(event)
    return grouped


def cli(settings: Settings, *args: str) -> str:
    """Run ``featurestream ARGS`` as a user would, configured by the environment."""
    command = [str(Path(sys.executable).parent / "featurestream"), *args]
    result = subprocess.run(command, env={**os.environ, **settings.to_env()}, text=True,
                            capture_output=True, check=False, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def stop_with_savepoint(settings: Settings, job: str) -> str:
    """``featurestream stop JOB --savepoint``: the savepoint's path, as it prints it."""
    found = re.search(r"^savepoint: (\S+)$", cli(settings, "stop", job, "--savepoint"), re.M)
    assert found, "stop --savepoint printed no savepoint"
    return found.group(1)


def submit_from(settings: Settings, job: str, savepoint: str) -> str:
    """``featurestream submit JOB --from-savepoint PATH``: the new job's id."""
    found = re.search(r"^job id: ([0-9a-f]{32})$",
                      cli(settings, "submit", job, "--from-savepoint", savepoint), re.M)
    assert found, "submit printed no job id"
    return found.group(1)


def stopped_while_flowing(settings: Settings, job: str, records: list[tuple[str, bytes, int]]
                          ) -> dict[str, str]:
    """Stop ``job`` with a savepoint while ``records`` are produced at a steady rate (over
    ~3 s: the stop lands mid-stream); its savepoint, by job."""
    def flow() -> None:
        size = -(-len(records) // 15)
        for start in range(0, len(records), size):
            produce(settings, records[start:start + size])
            time.sleep(0.2)

    with ThreadPoolExecutor(1) as pool:
        flowing = pool.submit(flow)
        savepoint = stop_with_savepoint(settings, job)
        flowing.result()
    return {job: savepoint}


def settled_rows(settings: Settings, events: Sequence[Event], job_id: str) -> dict[str, dict]:
    """Each user's row once it is as of the user's newest event and rows stopped changing."""
    newest = {user: max(e.ts for e in mine) for user, mine in by_user(events).items()}
    rows = wait_for_rows(settings, [f"user:{u}" for u in newest],
                         lambda rows: all(rows[f"user:{u}"]["as_of"] >= ts
                                          for u, ts in newest.items()),
                         lambda: job_diagnostics(settings, job_id), timeout_s=120)
    return {key.removeprefix("user:"): row for key, row in rows.items()}


def mismatches(rows: dict[str, dict], events: Sequence[Event]) -> list[str]:
    """The users whose row differs from the oracle over ``events``, each with the difference."""
    found = []
    for user, mine in by_user(events).items():
        try:
            assert_rows_equal_oracle({user: rows[user]}, {user: mine})
        except AssertionError as exc:
            found.append(f"{user}: {exc}")
    return found


def big_spend_mismatches(rows: dict[str, dict], since_change: Sequence[Event]) -> list[str]:
    """The added feature counts the events read since the change (it starts empty, and says
    it is warming up): every user's count of those in its 1 h window, amount > 50."""
    found = []
    for user, row in rows.items():
        low = (row["as_of"] // 60_000 + 1) * 60_000 - 3_600_000
        want = sum(1 for e in since_change if e.user_id == user and low <= e.ts <= row["as_of"]
                   and e.amount is not None and e.amount > 50.0)
        warming = row.get("warming_up") or {}
        if row.get("big_spend_1h") != want or "big_spend_1h" not in warming:
            found.append(f"{user}: big_spend_1h {row.get('big_spend_1h')} != {want}, "
                         f"warming_up {warming}")
    return found


def test_upgrade_with_savepoints_continues_both_jobs(stack: LocalStack, tmp_path: Path,
                                                     chaos: Chaos) -> None:
    models = tmp_path / "models"
    model_fixtures.publish(models, 1)
    base = isolated(stack, "upgrade")
    definitions = write_definitions(tmp_path / "user_definitions.py", base, upgraded=False)
    before = base.replace(models_dir=str(models), definitions=str(definitions))
    # The upgrade's build: other batch sizes (how records cross into Python, how often a bundle
    # ends and rows are written): other code paths over the same state, as a new release is.
    after = before.replace(source_batch_size=200, bundle_size=500, score_batch_size=100)
    encoder = EventEncoder(registry_for(before.schema_registry))
    events = stream(seed=61, count=1800)
    first, during, later = events[:900], events[900:1300], events[1300:]
    purchases = [e.event_id for e in events if e.event_type == "purchase"]

    jobs = {"features": submit_job(before, "features"), "scoring": ""}
    try:
        jobs["scoring"] = submit_job(before, "scoring")
        wait_for(lambda: all(v["status"] == "RUNNING" for v in flink_get(
            before, f"/jobs/{jobs['scoring']}")["vertices"]), 60, "the scoring job's tasks",
            lambda: job_diagnostics(before, jobs["scoring"]))
        scoring_stopped = time.monotonic()
        savepoints = stopped_while_flowing(before, "scoring", encoded(encoder, first))
        wrong = mismatches(settled_rows(before, first, jobs["features"]), first)
        assert not wrong, "before the upgrade:\n" + "\n".join(wrong[:5])
        # The feature job stops between records: the added feature counts what the new job
        # reads, so the oracle needs to know which job read each event.
        features_stopped = time.monotonic()
        savepoints["features"] = stop_with_savepoint(before, "features")
        produce(before, encoded(encoder, during))  # while both are down
        write_definitions(definitions, before, upgraded=True)
        jobs = {job: submit_from(after, job, savepoints[job]) for job in ("features", "scoring")}
        produce(after, encoded(encoder, later))
        rows = settled_rows(after, events, jobs["features"])
        features_recovery_s = time.monotonic() - features_stopped
        wrong = mismatches(rows, events) + big_spend_mismatches(rows, [*during, *later])
        topics = Topics(after)
        # The rows are in, so the scores are on their way: read until each purchase has one
        # (a score repeated later would need a restart: none, checked below).
        wait_for(lambda: topics.read()[0] >= len(purchases), 60, "every purchase scored",
                 lambda: job_diagnostics(after, jobs["scoring"]))
        scoring_recovery_s = time.monotonic() - scoring_stopped
        restarts = {job: len(job_exceptions(after, job_id)) for job, job_id in jobs.items()}
        assert_scored_from_captures(after, redis.Redis.from_url(after.redis_url), topics.scores,
                                    {e.event_id: e for e in events})
    finally:
        for job_id in jobs.values():
            if job_id:
                cancel_job(before, job_id)

    scored = Counter(s["event_id"] for s in topics.scores)
    lost = sorted(set(purchases) - set(scored))
    duplicated = sum(n - 1 for n in scored.values())
    chaos(ChaosRow("upgrade: feature job (savepoint, new build and definitions)", len(events),
                   len(rows), len(wrong), 0, 0, features_recovery_s,
                   "rows = oracle over all events before and after; added feature counts from "
                   "the change"))
    chaos(ChaosRow("upgrade: scoring job (savepoint, new build)", len(purchases), len(scored),
                   0, len(lost), duplicated, scoring_recovery_s,
                   "stopped mid-stream: every purchase scored exactly once across the upgrade"))
    assert not wrong, "\n".join(wrong[:5])
    assert not lost and not duplicated, (lost[:5], duplicated)
    assert set(scored) == set(purchases) and not topics.dead
    assert restarts == {"features": 0, "scoring": 0}, restarts


@dataclass
class Rescaled:
    """What :func:`rescale_through` saw: the events in, the last rows read, the mismatches and
    Flink exceptions of the step that stopped it (none when every step passed), the slowest
    stop -> correct rows."""

    seen: list[Event] = field(default_factory=list)
    rows: dict[str, dict] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)
    recovery_s: float = 0.0


def rescale_through(settings: Settings, steps: Sequence[tuple[int, Sequence[Event]]],
                    after_step: Callable[[Settings, str], None] | None = None) -> Rescaled:
    """The feature job through ``steps`` of (parallelism, events): the first submitted fresh,
    each next one resumed from a savepoint taken while that step's first 200 events flow; after
    each step the rows are checked against the oracle of all events so far (``after_step`` gets
    the step's settings and job id). Stops at the first step with a mismatch or a restart; the
    job is cancelled at the end."""
    encoder = EventEncoder(registry_for(settings.schema_registry))
    out, job_id, stopped_at = Rescaled(), "", 0.0
    try:
        for parallelism, batch in steps:
            at = settings.replace(parallelism=parallelism)
            if job_id:  # stopped mid-stream: the batch's first events flow meanwhile
                stopped_at = time.monotonic()
                savepoint = stopped_while_flowing(at, "features", encoded(encoder, batch[:200]))
                job_id = submit_from(at, "features", savepoint["features"])
                produce(at, encoded(encoder, batch[200:]))
            else:
                job_id = submit_job(at, "features")
                produce(at, encoded(encoder, batch))
            assert {v["parallelism"] for v in flink_get(at, f"/jobs/{job_id}")["vertices"]} == {
                parallelism}, "the job did not run at the parallelism asked for"
            out.seen += batch
            out.rows = settled_rows(at, out.seen, job_id)
            if stopped_at:
                out.recovery_s = max(out.recovery_s, time.monotonic() - stopped_at)
            out.wrong = [f"at P={parallelism}: {w}" for w in mismatches(out.rows, out.seen)]
            out.restarts = job_exceptions(at, job_id)
            if out.wrong or out.restarts:
                break
            if after_step is not None:
                after_step(at, job_id)
    finally:
        if job_id:
            cancel_job(settings, job_id)
    return out


def test_rescale_one_two_one_equals_an_uninterrupted_run(stack: LocalStack,
                                                         chaos: Chaos) -> None:
    events = stream(seed=67, count=1800)
    run = rescale_through(isolated(stack, "rescale"),
                          [(1, events[:600]), (2, events[600:1200]), (1, events[1200:])])
    chaos(ChaosRow("rescale: feature job P=1 -> 2 -> 1, savepoints taken mid-stream",
                   len(run.seen), len(run.rows), len(run.wrong), 0, 0, run.recovery_s,
                   "after each step, rows = oracle of an uninterrupted run"))
    assert not run.wrong, "\n".join(run.wrong[:5])
    assert len(run.seen) == len(events) and not run.restarts, run.restarts[:1]
