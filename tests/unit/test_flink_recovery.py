"""The local stack's pure logic for several TaskManagers and a lost JobManager: each
TaskManager's files, the submissions record, the newest retained checkpoint and the resume
command (no JVM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from featurestream.devstack import submissions
from featurestream.devstack.endpoints import Endpoint
from featurestream.devstack.paths import StackPaths
from featurestream.devstack.submissions import Submission
from featurestream.devstack.taskmanagers import taskmanagers
from featurestream.settings import Settings, SettingsError

pytestmark = pytest.mark.unit

FIRST = Endpoint(18084, "FEATURESTREAM_FLINK_REST_URL")


def submission(job_id: str, rest_url: str = "http://127.0.0.1:8081") -> Submission:
    return Submission("features", job_id, rest_url,
                      ("/home/flink/bin/flink", "run", "--detached", "--python", "job.py"),
                      {"FEATURESTREAM_EVENTS_TOPIC": "t.events"}, "file:///ckpt")


def test_each_taskmanager_has_its_own_files_and_the_first_keeps_the_stacks(
        tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    first, second = taskmanagers(paths, FIRST, 2)
    assert first.pid_file == paths.flink_pid_file("taskexecutor")
    assert first.log_file == paths.flink_log_file("taskexecutor")
    assert second.ident == "featurestream-tm1"
    assert second.pid_file == tmp_path / "run" / "flink-featurestream-tm1-taskexecutor.pid"
    assert second.log_file.name.startswith("flink-featurestream-tm1-taskexecutor-0-")
    assert first.new_launch("a").metrics_port == FIRST.port
    launch = second.new_launch("b")
    assert launch.metrics_port not in range(FIRST.port - 3, FIRST.port + 1)
    assert second.launch() == launch and launch.resource_id == "featurestream-tm1-b"
    assert second.metrics_url() == f"http://127.0.0.1:{launch.metrics_port}/metrics"
    second.forget()
    assert second.launch() is None


def test_taskmanagers_left_by_a_larger_up_are_found(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    paths.run_dir.mkdir()
    (paths.run_dir / "flink-featurestream-tm3-taskexecutor.pid").write_text("1\n")
    assert [tm.index for tm in taskmanagers(paths, FIRST, 2)] == [0, 1, 3]


@pytest.mark.parametrize("count", ["0", "9", "two"])
def test_taskmanagers_setting_is_validated(count: str) -> None:
    with pytest.raises(SettingsError, match="FEATURESTREAM_TASKMANAGERS"):
        Settings.from_env({"FEATURESTREAM_TASKMANAGERS": count})


def test_the_record_adds_and_forgets(tmp_path: Path) -> None:
    assert submissions.submissions(tmp_path) == []
    submissions.record(tmp_path, submission("a"))
    submissions.record(tmp_path, submission("b"))
    submissions.forget(tmp_path, {"a"})
    assert submissions.submissions(tmp_path) == [submission("b")]


class FakeRest:
    """A JobManager's job list (None: it does not answer)."""

    def __init__(self, jobs: dict[str, str] | None) -> None:
        self.jobs = jobs

    def call_if_up(self, path: str) -> dict | None:
        assert path == "/jobs/overview"
        return None if self.jobs is None else {
            "jobs": [{"jid": jid, "state": state} for jid, state in self.jobs.items()]}


def test_down_forgets_only_the_jobs_running_on_its_own_cluster(tmp_path: Path) -> None:
    settings = Settings().replace(flink_rest_url="http://127.0.0.1:8081")
    mine = [submission(job_id) for job_id in ("running", "lost", "finished")]
    elsewhere = submission("other", rest_url="http://127.0.0.1:9081")
    for entry in [*mine, elsewhere]:
        submissions.record(tmp_path, entry)
    rest: Any = FakeRest(None)  # a dead JobManager: every record kept for up to resume
    assert submissions.forget_running(tmp_path, rest, settings) == 0
    rest = FakeRest({"running": "RUNNING", "finished": "FINISHED", "other": "RUNNING"})
    assert submissions.forget_running(tmp_path, rest, settings) == 1
    assert submissions.submissions(tmp_path) == [mine[1], mine[2], elsewhere]


def test_no_secret_is_recorded(tmp_path: Path) -> None:
    settings = Settings().replace(redis_url="redis://:hunter2@127.0.0.1:6379/0",
                                  auth_token="a-token-of-sixteen-chars",
                                  kafka_properties="sasl.mechanism=PLAIN,sasl.username=u,"
                                  "sasl.password=hunter3")
    env = submissions.public_env(settings)
    assert "FEATURESTREAM_REDIS_URL" not in env and "FEATURESTREAM_AUTH_TOKEN" not in env
    assert not any("hunter" in value or "sixteen" in value for value in env.values())
    assert env["FEATURESTREAM_EVENTS_TOPIC"] == "events"


def test_the_newest_complete_checkpoint_is_chosen(tmp_path: Path) -> None:
    job = tmp_path / "job-1"
    for number, complete in ((2, True), (10, True), (11, False)):
        (job / f"chk-{number}").mkdir(parents=True)
        if complete:
            (job / f"chk-{number}" / "_metadata").write_bytes(b"x")
    (job / "shared").mkdir()
    assert submissions.latest_checkpoint(tmp_path.as_uri(), "job-1") == job / "chk-10"
    assert submissions.latest_checkpoint(tmp_path.as_uri(), "job-2") is None
    assert submissions.latest_checkpoint("s3://bucket/ckpt", "job-1") is None


def test_the_resume_command_adds_the_checkpoint_after_run() -> None:
    assert submissions.resume_command(submission("a"), Path("/ckpt/a/chk-3")) == [
        "/home/flink/bin/flink", "run", "--fromSavepoint", "/ckpt/a/chk-3", "--detached",
        "--python", "job.py"]


def test_a_lost_job_without_a_local_checkpoint_names_the_command() -> None:
    local = submissions.unresumable(submission("a"))
    assert "no complete checkpoint in file:///ckpt/a" in local
    assert "`featurestream submit features`" in local
    remote = submissions.unresumable(msgspec.structs.replace(submission("a"),
                                                             checkpoint_dir="s3://b/ckpt/"))
    assert "`featurestream submit features --from-savepoint s3://b/ckpt/a/chk-N`" in remote
