"""``featurestream rematerialize``: rewrite every entity's row in Redis from the feature job's
own state (after Redis lost its data, e.g. restarted empty), so no entity stays missing until
its next event.

The job is stopped with a savepoint and resubmitted from it with
``FEATURESTREAM_REWRITE_ROWS_ON_RESTORE=true``: every shard writes the row of every entity it
restores. The marker ahead of each checkpoint barrier touches every shard, and a checkpoint
completes only after the bundle's rows are in Redis, so the new job's first completed
checkpoint means every row is back: the same code and state that wrote them, so the same rows.
"""

from __future__ import annotations

import argparse
import time

import redis

from featurestream.cli.submit import running_job_id, submit_job
from featurestream.errors import UserFacingError
from featurestream.flink_rest import FINAL_STATES, FlinkRest
from featurestream.jobs import JOB_NAMES
from featurestream.jobs.redis_target import sync_client
from featurestream.settings import Settings, masked_url

FEATURES = "features"
KEYED_VERTEX = "entity features"  # MaterializeFeatures' name (jobs/features/job.py)
ROWS_WRITTEN = "rows_written"  # its counter (udfs/telemetry/catalog.py, ROWS_WRITTEN)
PROGRESS_EVERY_S = 2.0


def rematerialize_command(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: stop the feature job with a savepoint, resubmit it rewriting every
    restored row, and wait (with progress) until its first checkpoint says they are written."""
    name = JOB_NAMES[FEATURES]
    rest, job_id = running_job_id(settings, FEATURES)
    if job_id is None:
        raise UserFacingError(
            f"no {name} job is running at {settings.flink_rest_url}: rematerialize rewrites the "
            "rows from the running job's state. Start it (`featurestream submit features`, "
            "with --from-savepoint PATH if you stopped it with one), or rebuild the rows from "
            "history: `featurestream backfill kafka:TOPIC --online-store`")
    check_redis(settings)
    directory = settings.effective_savepoint_dir
    print(f"stopping {name} ({job_id}) with a savepoint in {directory} ...", flush=True)
    try:
        savepoint = rest.stop_with_savepoint(job_id, directory)
    except (OSError, RuntimeError) as exc:
        raise UserFacingError(
            f"the {name} job could not take a savepoint ({exc}); it keeps running: see "
            f"`featurestream status` and the job's exceptions at {settings.flink_rest_url}"
        ) from None
    print(f"savepoint: {savepoint}")
    print("resubmitting it from the savepoint, rewriting every restored row ...", flush=True)
    try:
        new_id = submit_job(settings.replace(rewrite_rows_on_restore=True), FEATURES, savepoint)
    except UserFacingError as exc:
        raise UserFacingError(f"{exc}\nThe {name} job is stopped: once the cause is fixed, "
                              f"resume it with `FEATURESTREAM_REWRITE_ROWS_ON_RESTORE=true "
                              f"featurestream submit features --from-savepoint {savepoint}`"
                              ) from None
    print(f"job id: {new_id}", flush=True)
    started = time.monotonic()
    rows = wait_for_first_checkpoint(rest, new_id, args.timeout)
    print(f"done in {time.monotonic() - started:.0f} s: every entity's row rewritten "
          f"({rows:,} rows written by job {new_id} so far)")
    return 0


def check_redis(settings: Settings) -> None:
    """Fail before stopping anything if Redis does not answer (the rows could not be
    written)."""
    try:
        client = sync_client(settings.redis_url, settings.redis_cluster, 5)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        raise UserFacingError(
            f"Redis at {masked_url(settings.redis_url)} does not answer ({exc}): start it (or "
            "fix FEATURESTREAM_REDIS_URL) before rematerializing; the job was left running"
        ) from None


def wait_for_first_checkpoint(rest: FlinkRest, job_id: str, timeout_s: float) -> int:
    """Wait until the job completes a checkpoint, printing the rows written meanwhile; returns
    that count."""
    deadline = time.monotonic() + timeout_s
    rows = 0
    while True:
        try:
            state = rest.job(job_id)["state"]
            completed = rest.checkpoints(job_id).completed
            rows = int(rest.operator_metric(job_id, KEYED_VERTEX, ROWS_WRITTEN))
        except (OSError, StopIteration):  # the job's vertices and metrics appear as it starts
            state, completed = "starting", 0
        if completed > 0:
            return rows
        if state in FINAL_STATES:
            raise UserFacingError(f"job {job_id} ended ({state}) before its first checkpoint: "
                                  "see its exceptions in the Flink web UI, then run "
                                  "`featurestream rematerialize` again")
        if time.monotonic() > deadline:
            raise UserFacingError(
                f"job {job_id} has not completed a checkpoint within {timeout_s:.0f} s "
                f"({state}); the rows may be partly rewritten. Check the job at "
                f"{rest.url}, then run `featurestream rematerialize` again (or pass a longer "
                "--timeout)")
        print(f"  {state.lower()}: {rows:,} rows written, waiting for the first checkpoint",
              flush=True)
        time.sleep(PROGRESS_EVERY_S)

