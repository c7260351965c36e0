"""What was submitted to the local Flink cluster, so that ``featurestream up`` can resume the
jobs a lost JobManager took with it.

The local JobManager runs without high availability: killed (or stopped by ``down``), it
forgets its jobs. ``featurestream submit`` records each job here (its ``flink run`` command and
its non-secret ``FEATURESTREAM_*`` settings, in ``<home>/submitted-jobs.json``); the JobManager
archives every job that reaches a final state (cancelled, failed, finished) in
:func:`archive_dir`. A recorded job the running JobManager does not know and that was never
archived was lost while running: it is resubmitted from its newest retained checkpoint
(``<checkpoint dir>/<job id>/chk-N`` with a ``_metadata`` file; the jobs retain checkpoints
on cancellation, see ``jobs/environment.py``).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import msgspec

from featurestream.devstack.component import Echo
from featurestream.errors import UserFacingError
from featurestream.flink_rest import FINAL_STATES, FlinkRest
from featurestream.jobs import JOB_NAMES
from featurestream.settings import Settings
from featurestream.settings.handover import job_environment

RECORD_FILE = "submitted-jobs.json"
ARCHIVE_DIR = "completed-jobs"  # jobmanager.archive.fs.dir, under the stack's home
RUN_TIMEOUT_S = 300
TASKS_RUNNING_TIMEOUT_S = 120  # a job resumed moments ago deploys its tasks first
_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
_CHECKPOINT = re.compile(r"chk-(\d+)")


class Submission(msgspec.Struct, frozen=True):
    """A job submitted with ``flink run``: enough to submit it again from a checkpoint."""

    job: str  # features | scoring
    job_id: str
    rest_url: str  # the cluster it runs on
    command: tuple[str, ...]  # ``flink run ...`` without --fromSavepoint
    env: dict[str, str]  # the job's FEATURESTREAM_* settings, secrets left out
    checkpoint_dir: str  # a URL; its checkpoints are in <checkpoint_dir>/<job_id>/chk-N


def record_file(home: Path) -> Path:
    """Where the submissions of the stack in ``home`` are recorded."""
    return home / RECORD_FILE


def archive_dir(home: Path) -> Path:
    """Where the stack's JobManager archives each job that reached a final state."""
    return home / "flink" / ARCHIVE_DIR


def public_env(settings: Settings) -> dict[str, str]:
    """The settings as ``FEATURESTREAM_*`` variables without secrets (nor URLs holding a
    password): those come from the environment of whoever resumes the job."""
    secret = settings.secret_env()
    return {name: value for name, value in settings.to_env().items() if name not in secret}


def submissions(home: Path) -> list[Submission]:
    """Every recorded submission ([] if none or unreadable: nothing to resume)."""
    try:
        return msgspec.json.decode(record_file(home).read_bytes(), type=list[Submission])
    except (OSError, msgspec.DecodeError):
        return []


def record(home: Path, submission: Submission) -> None:
    """Add ``submission`` to the record."""
    _write(home, [*submissions(home), submission])


def forget(home: Path, job_ids: set[str]) -> None:
    """Drop these jobs from the record."""
    _write(home, [s for s in submissions(home) if s.job_id not in job_ids])


def _write(home: Path, entries: list[Submission]) -> None:
    path = record_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(msgspec.json.encode(entries))
    temporary.replace(path)  # atomic: a concurrent reader sees the old or the new record


def latest_checkpoint(checkpoint_dir: str, job_id: str) -> Path | None:
    """The job's newest complete retained checkpoint (``chk-N`` holding ``_metadata``), if its
    checkpoints are on a local file system."""
    url = urlparse(checkpoint_dir)
    if url.scheme != "file":
        return None
    directory = Path(unquote(url.path)) / job_id
    complete = [(int(m.group(1)), path) for path in directory.glob("chk-*")
                if (m := _CHECKPOINT.fullmatch(path.name)) and (path / "_metadata").is_file()]
    return max(complete)[1] if complete else None


def run_flink(command: Sequence[str], env: Mapping[str, str], rest_url: str) -> str:
    """Run ``flink run --detached ...`` and return the submitted job's id."""
    result = subprocess.run(list(command), capture_output=True, text=True, env=dict(env),
                            check=False, timeout=RUN_TIMEOUT_S)
    match = _JOB_ID.search(result.stdout + result.stderr)
    if result.returncode != 0 or not match:
        # The messages and causes, not the Java stack frames.
        output = [line for line in (result.stdout + result.stderr).strip().splitlines()
                  if line.strip() and not line.lstrip().startswith(("at ", "..."))]
        raise UserFacingError(
            f"flink run failed (exit {result.returncode}); is the cluster at "
            f"{rest_url} up (featurestream status)?\n" + "\n".join(output[-12:])
        )
    return match.group(1)


def resume_command(submission: Submission, checkpoint: Path) -> list[str]:
    """The submission's ``flink run`` command resuming from ``checkpoint``."""
    command = list(submission.command)
    at = command.index("run") + 1
    return [*command[:at], "--fromSavepoint", str(checkpoint), *command[at:]]


def unresumable(lost: Submission) -> str:
    """What to run for a lost job whose checkpoint :func:`latest_checkpoint` cannot find."""
    where = f"{lost.checkpoint_dir.rstrip('/')}/{lost.job_id}"
    if urlparse(lost.checkpoint_dir).scheme == "file":
        return (f"it has no complete checkpoint in {where}: start it afresh with "
                f"`featurestream submit {lost.job}` (with its settings)")
    return (f"resume it with `featurestream submit {lost.job} --from-savepoint "
            f"{where}/chk-N` (with its settings), chk-N the newest holding a _metadata file")


def resume_lost_jobs(home: Path, rest: FlinkRest, settings: Settings, echo: Echo) -> list[str]:
    """Resubmit every recorded job of this cluster that its JobManager lost, each from its
    newest retained checkpoint; return the new job ids. A lost job without a checkpoint is
    named with the command to run. Jobs that ended (archived) are dropped from the record."""
    try:  # not call_if_up: a JobManager that does not answer is no proof its jobs are gone
        known = {j["jid"] for j in rest.call("/jobs/overview").get("jobs", [])}
    except (OSError, ValueError) as exc:
        echo(f"could not list the JobManager's jobs ({exc}); none resumed: run featurestream "
             "up again")
        return []
    archived = {p.name for p in archive_dir(home).glob("*")}
    mine = [s for s in submissions(home) if s.rest_url == settings.flink_rest_url]
    forget(home, {s.job_id for s in mine if s.job_id in archived})
    resumed = []
    for lost in (s for s in mine if s.job_id not in known | archived):
        checkpoint = latest_checkpoint(lost.checkpoint_dir, lost.job_id)
        if checkpoint is None:
            echo(f"the {lost.job} job {lost.job_id} was lost with the JobManager; "
                 + unresumable(lost))
            forget(home, {lost.job_id})
            continue
        echo(f"resuming the {lost.job} job {lost.job_id} (lost with the JobManager) from "
             f"{checkpoint}")
        # Its own settings over these (the secret ones handed over in a file, as on submit)
        with job_environment(Settings.from_env({**settings.to_env(), **lost.env})) as env:
            job_id = run_flink(resume_command(lost, checkpoint), env, settings.flink_rest_url)
        forget(home, {lost.job_id})
        record(home, msgspec.structs.replace(lost, job_id=job_id))
        echo(f"{lost.job} job resumed as {job_id}")
        resumed.append(job_id)
    return resumed


def forget_running(home: Path, rest: FlinkRest, settings: Settings) -> int:
    """Forget the recorded jobs running on this cluster now (the stack is going down and they
    with it, on purpose: the next ``up`` must not resume them beside a fresh submission);
    return how many. Records of other clusters, and of jobs a dead JobManager lost (it does
    not answer), are kept: ``up`` resumes those."""
    jobs = (rest.call_if_up("/jobs/overview") or {}).get("jobs", [])
    running = {j["jid"] for j in jobs if j["state"] not in FINAL_STATES}
    stopping = {s.job_id for s in submissions(home)
                if s.rest_url == settings.flink_rest_url and s.job_id in running}
    if stopping:
        forget(home, stopping)
    return len(stopping)


def next_source_epoch(settings: Settings) -> Settings:
    """``settings`` in a source epoch no earlier submission used (the clock's seconds): its
    jobs' Kafka sources get new uids, so they restore no positions."""
    return settings.replace(source_epoch=max(int(time.time()), settings.source_epoch + 1))


def dropping_old_sources(command: Sequence[str]) -> list[str]:
    """``command`` (``flink run ...``) allowed to resume a savepoint holding state no operator
    claims: the sources of an older epoch (every other operator keeps its uid and its state)."""
    at = list(command).index("run") + 1
    return [*command[:at], "--allowNonRestoredState", *command[at:]]


def reset_source_positions(home: Path, rest: FlinkRest, settings: Settings,
                           echo: Echo) -> list[str]:
    """After the local broker restarted empty, stop each featurestream job still running with
    a savepoint and resume it in a new source epoch (windows kept, every partition read from
    its earliest offset); return the new job ids. The jobs' positions are past the ends of the
    new, empty logs, and tansu answers a fetch there with no records, not out-of-range: they
    would skip each partition's first events silently. A job that cannot be stopped or
    resumed is named with the commands to run."""
    jobs = (rest.call_if_up("/jobs/overview") or {}).get("jobs", [])
    running = {j["jid"]: j["name"] for j in jobs if j["state"] not in FINAL_STATES}
    if not running:
        return []
    recorded = {s.job_id: s for s in submissions(home) if s.rest_url == settings.flink_rest_url}
    resumed = []
    for job_id, name in running.items():
        job = next((key for key, value in JOB_NAMES.items() if value == name), None)
        if job is None:
            continue
        echo(f"the {job} job {job_id} runs from a broker that is gone (its Kafka positions are "
             "past the new, empty logs): resuming it with its source positions reset")
        submission = recorded.get(job_id)
        try:
            if submission is None:
                raise UserFacingError("it was not submitted with `featurestream submit` here")
            resumed.append(_resume_in_new_epoch(home, rest, settings, submission, echo))
        except (OSError, RuntimeError, UserFacingError) as exc:
            echo(f"could not resume the {job} job {job_id} ({exc}); run `featurestream stop "
                 f"{job} --savepoint`, then `featurestream submit {job} --from-savepoint PATH "
                 "--reset-source-positions` (with its settings)")
    return resumed


def _resume_in_new_epoch(home: Path, rest: FlinkRest, settings: Settings,
                         submission: Submission, echo: Echo) -> str:
    """Stop ``submission``'s job with a savepoint, resume it in a new source epoch, record
    it; return its new id."""
    job_settings = Settings.from_env({**settings.to_env(), **submission.env})
    _wait_for_tasks(rest, submission.job_id)
    savepoint = rest.stop_with_savepoint(submission.job_id, job_settings.effective_savepoint_dir)
    echo(f"{submission.job} job {submission.job_id} stopped with a savepoint: {savepoint}")
    job_settings = next_source_epoch(job_settings)
    command = dropping_old_sources(resume_command(submission, Path(savepoint)))
    with job_environment(job_settings) as env:
        job_id = run_flink(command, env, settings.flink_rest_url)
    forget(home, {submission.job_id})
    record(home, msgspec.structs.replace(submission, job_id=job_id,
                                         env=public_env(job_settings)))
    echo(f"{submission.job} job resumed as {job_id} (source epoch {job_settings.source_epoch}, "
         "every partition from its earliest offset)")
    return job_id


def _wait_for_tasks(rest: FlinkRest, job_id: str) -> None:
    """Wait until every task of the job runs (Flink takes a savepoint only then)."""
    deadline = time.monotonic() + TASKS_RUNNING_TIMEOUT_S
    while time.monotonic() < deadline:
        job = rest.job(job_id)
        if job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"]):
            return
        time.sleep(0.5)
    raise RuntimeError(f"its tasks did not all run within {TASKS_RUNNING_TIMEOUT_S} s")
