"""The one client of the Flink JobManager's REST API (cluster overview, jobs, metrics,
cancellation, stop with a savepoint), for the CLI, the local stack's supervisor, the tests and
the benchmark."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

FINAL_STATES = ("CANCELED", "FAILED", "FINISHED")


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
        return sum(float(m["sum"]) for m in self.call(f"{path}?get={','.join(ids)}&agg=sum"))

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
        for job in self.call("/jobs/overview").get("jobs", []):
            if job["name"] == name and job["state"] not in FINAL_STATES:
                return str(job["jid"])
        return None

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
