"""The one client of the Flink JobManager's REST API (cluster overview, jobs, metrics,
checkpoints, cancellation, stop with a savepoint), for the CLI, the local stack's supervisor,
the reader's status page, the tests and the benchmark.

Only the standard library (and the core's pure stats types): it sits below the reader in the
layers, and the jobs never import it (it does not travel with them).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from featurestream.udfs.telemetry.pipeline_stats import Series, Snapshot

FINAL_STATES = ("CANCELED", "FAILED", "FINISHED")
METRIC_GROUP = "featurestream"  # the jobs' user metrics: metric_group.add_group(METRIC_GROUP)


def metric_series(metric_id: str) -> Series:
    """A REST metric id as a series named as :func:`pipeline_stats.rest_name` names it.

    ``Op.featurestream.stage.window.reason.LateEvent.dead_letters`` -> ``dead_letters`` with
    labels stage and reason: Flink writes a key/value group as its key then its value. A plain
    group before them joins the name (``Op.featurestream.append_freshness_seconds.le.0_5.bucket``
    -> ``append_freshness_seconds_bucket{le="0.5"}``); the REST ids write a value's dots as
    ``_``, so an ``le`` gets them back. Outside the group the id's last part is the name
    (``Op.pendingRecords``).
    """
    parts = metric_id.split(".")
    try:
        start = parts.index(METRIC_GROUP, 1) + 1  # parts[0] is the operator's name
    except ValueError:
        return parts[-1], ()
    groups = parts[start:-1]
    plain, pairs = groups[:len(groups) % 2], groups[len(groups) % 2:]
    labels = {key: value.replace("_", ".") if key == "le" else value
              for key, value in zip(pairs[::2], pairs[1::2], strict=True)}
    return "_".join([*plain, parts[-1]]), tuple(sorted(labels.items()))


def metrics_query(path: str, ids: Sequence[str]) -> str:
    """``path?get=...&agg=sum`` for ``ids``, each percent-encoded: metric ids hold characters a
    query string changes or rejects (a bucket's ``le.+Inf`` -- a bare ``+`` reads as a space --
    and an operator named ``a -> b``), and one such id empties the JobManager's whole answer."""
    names = ",".join(urllib.parse.quote(i, safe="") for i in ids)
    return f"{path}?get={names}&agg=sum"


@dataclass(frozen=True)
class CheckpointStats:
    """A job's checkpoints (REST ``/jobs/<id>/checkpoints``): counts, and the last completed
    one's end-to-end duration, size and completion time (epoch ms), None before the first."""

    completed: int
    failed: int
    in_progress: int
    last_duration_ms: int | None
    last_size_bytes: int | None
    last_completed_ms: int | None


@dataclass(frozen=True)
class JobSample:
    """A running job at one moment: its state, its metrics summed over subtasks, checkpoints."""

    id: str
    name: str
    state: str
    metrics: Snapshot
    checkpoints: CheckpointStats | None


class FlinkRest:
    """REST calls against ``url`` (e.g. ``http://127.0.0.1:8081``)."""

    def __init__(self, url: str, timeout_s: float = 10) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def call(self, path: str, method: str = "GET", body: Any = None) -> Any:
        """The decoded JSON answer to ``method path`` (None for an empty body); ``body`` is
        sent as JSON."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            body = response.read()
        return json.loads(body) if body else None

    def call_if_up(self, path: str) -> Any:
        """Like :meth:`call` for a GET, but None while the JobManager does not answer (down,
        starting, or not Flink at all): for probes and status lines."""
        try:
            return self.call(path)
        except (OSError, ValueError):  # URLError and timeouts are OSErrors; bad JSON ValueError
            return None

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's details: state, vertices and their metrics."""
        return self.call(f"/jobs/{job_id}")

    def operator_metric(self, job_id: str, vertex_prefix: str, metric: str) -> float:
        """A user metric of an operator (e.g. a counter), summed over the vertex's subtasks.

        0 until the metric has been reported; the first vertex whose name starts with
        ``vertex_prefix`` is read.
        """
        vertex = next(v for v in self.job(job_id)["vertices"]
                      if v["name"].startswith(vertex_prefix))
        path = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
        ids = [m["id"] for m in self.call(path) if m["id"].endswith("." + metric)]
        if not ids:
            return 0.0
        return sum(float(m["sum"]) for m in self.call(metrics_query(path, ids)))

    def job_metrics(self, job: Mapping[str, Any], names: Collection[str]) -> dict[Series, float]:
        """The metrics of ``job`` (its :meth:`job` details) in the ``featurestream`` group,
        and those called one of ``names`` (e.g. ``pendingRecords``), each summed over its
        vertex's subtasks by the JobManager (``agg=sum``): one listing and one read per
        vertex."""
        values: dict[Series, float] = {}
        for vertex in job["vertices"]:
            path = f"/jobs/{job['jid']}/vertices/{vertex['id']}/subtasks/metrics"
            ids = [m["id"] for m in self.call(path)
                   if f".{METRIC_GROUP}." in m["id"] or m["id"].rsplit(".", 1)[-1] in names]
            if ids:
                for metric in self.call(metrics_query(path, ids)):
                    key = metric_series(metric["id"])
                    values[key] = values.get(key, 0.0) + float(metric["sum"])
        return values

    def checkpoints(self, job_id: str) -> CheckpointStats:
        """The job's checkpoint counts and last completed checkpoint."""
        stats = self.call(f"/jobs/{job_id}/checkpoints")
        counts = stats.get("counts", {})
        last = (stats.get("latest") or {}).get("completed") or {}
        return CheckpointStats(
            completed=int(counts.get("completed", 0)), failed=int(counts.get("failed", 0)),
            in_progress=int(counts.get("in_progress", 0)),
            last_duration_ms=last.get("end_to_end_duration"),
            last_size_bytes=last.get("checkpointed_size", last.get("state_size")),
            last_completed_ms=last.get("latest_ack_timestamp"))

    def running_jobs(self) -> dict[str, str]:
        """The running (or restarting) jobs' ids by name (the newest when a name repeats)."""
        jobs = sorted(self.call("/jobs/overview").get("jobs", []),
                      key=lambda j: j.get("start-time", 0))
        return {j["name"]: str(j["jid"]) for j in jobs if j["state"] not in FINAL_STATES}

    def sample(self, job_id: str, names: Collection[str]) -> JobSample:
        """The job's :class:`JobSample` now (taken on the monotonic clock, for rates)."""
        job = self.job(job_id)
        metrics = self.job_metrics(job, names)
        return JobSample(job_id, job["name"], job["state"],
                         Snapshot(time.monotonic(), metrics), self.checkpoints(job_id))

    def exceptions(self, job_id: str) -> list[str]:
        """Stack traces of every failure (and so restart) the job has had, newest first."""
        history = self.call(f"/jobs/{job_id}/exceptions").get("exceptionHistory", {})
        return [entry["stacktrace"] for entry in history.get("entries", [])]

    def cancel(self, job_id: str, timeout_s: float = 60) -> None:
        """Cancel the job and wait until it has stopped."""
        self.call(f"/jobs/{job_id}?mode=cancel", method="PATCH")
        deadline = time.monotonic() + timeout_s
        while self.job(job_id)["state"] not in FINAL_STATES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Flink job {job_id} did not stop within {timeout_s} s")
            time.sleep(0.5)

    def running_job(self, name: str) -> str | None:
        """The id of the running (or restarting) job called ``name``, if any."""
        return self.running_jobs().get(name)

    def stop_with_savepoint(self, job_id: str, directory: str, timeout_s: float = 300) -> str:
        """Stop the job with a savepoint under ``directory`` (a URL); returns its location.

        The sources stop first and every operator takes the savepoint, so a job resumed from it
        continues exactly where this one stopped (Flink's "stop", not "cancel").
        """
        trigger = self.call(f"/jobs/{job_id}/stop", method="POST",
                            body={"targetDirectory": directory, "drain": False})
        path = f"/jobs/{job_id}/savepoints/{trigger['request-id']}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.call(path)
            if status["status"]["id"] == "COMPLETED":
                operation = status.get("operation", {})
                if "failure-cause" in operation:
                    cause = operation["failure-cause"].get("stack-trace", "").splitlines()
                    raise RuntimeError(f"the savepoint of job {job_id} failed: "
                                       f"{cause[0] if cause else operation}")
                return str(operation["location"])
            time.sleep(0.5)
        raise TimeoutError(f"the savepoint of job {job_id} did not complete in {timeout_s} s")
