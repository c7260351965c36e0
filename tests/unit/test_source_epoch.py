"""Resuming a job without its Kafka source positions (after the local broker restarted empty):
the source epoch renames only the sources' uids, the resume command may drop their old state,
and a job ``featurestream up`` cannot resume is named with the commands to run (no JVM)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from featurestream.cli.submit import submit
from featurestream.devstack import submissions
from featurestream.errors import UserFacingError
from featurestream.flink_rest import FlinkRest
from featurestream.jobs.kafka_io import source_uid
from featurestream.settings import Settings, SettingsError

pytestmark = pytest.mark.unit


def test_epoch_zero_keeps_the_uids_older_savepoints_hold() -> None:
    assert source_uid("events-source", 0) == "events-source"
    assert source_uid("events-source", 7) == "events-source-epoch-7"
    assert source_uid("events-source", 7) != source_uid("events-source", 8)


def test_a_new_epoch_is_later_than_the_current_one() -> None:
    settings = Settings()
    first = submissions.next_source_epoch(settings)
    assert first.source_epoch > 0
    assert submissions.next_source_epoch(first).source_epoch > first.source_epoch
    far = settings.replace(source_epoch=2**40)
    assert submissions.next_source_epoch(far).source_epoch == 2**40 + 1


def test_a_negative_epoch_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="FEATURESTREAM_SOURCE_EPOCH"):
        Settings.from_env({"FEATURESTREAM_SOURCE_EPOCH": "-1"})


def test_the_resume_command_may_drop_the_old_sources_state() -> None:
    command = ["/flink/bin/flink", "run", "--fromSavepoint", "/sp/1", "--detached"]
    assert submissions.dropping_old_sources(command) == [
        "/flink/bin/flink", "run", "--allowNonRestoredState", "--fromSavepoint", "/sp/1",
        "--detached"]


def test_resetting_source_positions_needs_a_savepoint() -> None:
    args = argparse.Namespace(job="features", from_savepoint=None, reset_source_positions=True)
    with pytest.raises(UserFacingError, match="--from-savepoint PATH"):
        submit(Settings(), args)


class Overview(FlinkRest):
    """A JobManager that answers only its jobs' overview."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        super().__init__("http://127.0.0.1:8081")
        self.jobs = jobs

    def call_if_up(self, path: str) -> Any:
        assert path == "/jobs/overview"
        return {"jobs": self.jobs}


def test_a_job_up_cannot_resume_is_named_with_the_commands(tmp_path: Path) -> None:
    rest = Overview([
        {"jid": "a" * 32, "name": "featurestream-features", "state": "RUNNING"},
        {"jid": "b" * 32, "name": "someone-elses-job", "state": "RUNNING"},
        {"jid": "c" * 32, "name": "featurestream-scoring", "state": "FINISHED"}])
    lines: list[str] = []
    resumed = submissions.reset_source_positions(tmp_path, rest, Settings(), lines.append)
    assert resumed == []
    assert len(lines) == 2, lines  # the running featurestream job only: it says so, then how
    assert "a" * 32 in lines[0] and "broker that is gone" in lines[0]
    assert "`featurestream stop features --savepoint`" in lines[1]
    assert ("`featurestream submit features --from-savepoint PATH --reset-source-positions`"
            in lines[1])


def test_nothing_runs_nothing_to_reset(tmp_path: Path) -> None:
    lines: list[str] = []
    assert submissions.reset_source_positions(tmp_path, Overview([]), Settings(),
                                              lines.append) == []
    assert lines == []
