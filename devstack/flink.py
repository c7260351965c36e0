"""Flink for the local stack: a standalone session cluster (1 JobManager, 1 TaskManager).

Started with the daemon scripts of the clean FLINK_HOME (see :mod:`flink_home`), which write
their pid files to ``<home>/run`` and logs to ``<home>/logs/flink``. Python workers of the
TaskManager (``pyflink-udf-runner.sh`` and its ``beam_boot``) survive a killed TaskManager, so
``stop`` also ends every such process whose environment or cwd points into this FLINK_HOME.

Each daemon exports its metrics for Prometheus on a port of its own (:meth:`FlinkCluster.
metrics_urls`), given with ``-D`` as both read the same config file.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from featurestream.devstack import process
from featurestream.devstack.component import ComponentStatus, Echo, Job
from featurestream.devstack.endpoints import Endpoint, Endpoints
from featurestream.devstack.flink_home import build_flink_home
from featurestream.devstack.paths import FLINK_IDENT, StackPaths
from featurestream.errors import UserFacingError
from featurestream.flink_rest import FlinkRest
from featurestream.jdk import java_tool
from featurestream.settings import Settings

JOBMANAGER = "standalonesession"  # flink-daemon.sh names
TASKMANAGER = "taskexecutor"
JOBMANAGER_CLASS = "StandaloneSessionClusterEntrypoint"
TASKMANAGER_CLASS = "TaskManagerRunner"
WORKER_MARKERS = ("pyflink-udf-runner", "pyflink.fn_execution")
JOBMANAGER_TIMEOUT_S = 60.0
TASKMANAGER_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
REST_TIMEOUT_S = 2.0
METRICS_PORT_KEY = "metrics.reporter.prom.port"


class FlinkCluster:
    """JobManager (REST on FEATURESTREAM_FLINK_REST_URL's port, RPC on it + 1, Prometheus metrics
    on it + 2) and a TaskManager (Prometheus metrics on REST + 3)."""

    name = "flink"

    def __init__(self, settings: Settings, paths: StackPaths, endpoints: Endpoints) -> None:
        self.settings = settings
        self.paths = paths
        self.endpoints = endpoints
        self.address = f"http://{endpoints.flink_rest.address}"
        self.rest = FlinkRest(self.address, timeout_s=REST_TIMEOUT_S)

    def jobmanager_pid(self) -> int | None:
        """Pid of this stack's JobManager, if alive."""
        return process.owned_pid(self.paths.flink_pid_file(JOBMANAGER), JOBMANAGER_CLASS)

    def taskmanager_pid(self) -> int | None:
        """Pid of this stack's TaskManager, if alive."""
        return process.owned_pid(self.paths.flink_pid_file(TASKMANAGER), TASKMANAGER_CLASS)

    def running(self) -> bool:
        """True if our JobManager serves REST and our TaskManager is alive."""
        return self._jobmanager_up() and self.taskmanager_pid() is not None

    def check_startable(self, echo: Echo) -> None:
        """Fail early without java or if the REST/RPC port belongs to a foreign process."""
        if self.running():
            return
        java_tool("java", "Flink needs Java 17")
        if self.jobmanager_pid() is None:
            for endpoint, what in (
                    (self.endpoints.flink_rest, "the Flink REST API"),
                    (self.endpoints.flink_rpc, "the Flink JobManager RPC (REST+1)"),
                    (self.endpoints.flink_jobmanager_metrics,
                     "the Flink JobManager's Prometheus metrics (REST+2)")):
                process.ensure_port_free(endpoint.port, endpoint.variable, what)
        if self.taskmanager_pid() is None:
            endpoint = self.endpoints.flink_taskmanager_metrics
            process.ensure_port_free(endpoint.port, endpoint.variable,
                                     "the Flink TaskManager's Prometheus metrics (REST+3)")

    def start(self, echo: Echo) -> None:
        """Start whichever of JobManager and TaskManager is not running; wait until ready."""
        if not self._jobmanager_up():
            stale = self.jobmanager_pid()
            if stale is not None:
                process.terminate([stale])
            build_flink_home(self.settings, self.paths, self.endpoints)
            echo(f"starting flink jobmanager on {self.address} "
                 f"(FLINK_HOME {self.paths.flink_home})")
            seconds = self._launch("jobmanager", JOBMANAGER, JOBMANAGER_TIMEOUT_S,
                                   lambda: self.rest.call_if_up("/overview") is not None,
                                   self.endpoints.flink_jobmanager_metrics)
            echo(f"flink jobmanager ready in {seconds:.1f} s")
        if self.taskmanager_pid() is None:
            process.terminate(self.python_workers(), timeout=5.0)
            echo("starting flink taskmanager")
            known = self._taskmanager_ids()  # a killed TaskManager stays listed until timed out
            seconds = self._launch("taskmanager", TASKMANAGER, TASKMANAGER_TIMEOUT_S,
                                   lambda: bool(self._taskmanager_ids() - known),
                                   self.endpoints.flink_taskmanager_metrics)
            echo(f"flink taskmanager ready in {seconds:.1f} s ({self._slots()})")

    def stop(self, echo: Echo) -> None:
        """SIGTERM (then SIGKILL) TaskManager and JobManager, then their leftover Python workers."""
        daemons = [pid for pid in (self.taskmanager_pid(), self.jobmanager_pid()) if pid]
        workers = self.python_workers()
        if not daemons and not workers:
            echo("flink already down")
        else:
            echo(f"stopping flink (pids {', '.join(map(str, daemons + workers))})")
            started = time.monotonic()
            process.terminate(daemons, timeout=STOP_TIMEOUT_S)
            process.terminate(self.python_workers(), timeout=5.0)
            echo(f"flink stopped in {time.monotonic() - started:.1f} s")
        for daemon in (JOBMANAGER, TASKMANAGER):
            self.paths.flink_pid_file(daemon).unlink(missing_ok=True)

    def status(self) -> ComponentStatus:
        """Up/down, REST address, slots, web UI link and the jobs."""
        jm_up, tm_pid = self._jobmanager_up(), self.taskmanager_pid()
        if not jm_up:
            return ComponentStatus(self.name, False, self.address,
                                   detail="" if tm_pid is None else "jobmanager down")
        jobs = (self.rest.call_if_up("/jobs/overview") or {}).get("jobs", [])
        return ComponentStatus(
            self.name, tm_pid is not None, self.address, self.jobmanager_pid(),
            detail=f"{self._slots()}; web UI {self.address}/; metrics "
            + ", ".join(self.metrics_urls()) + ("" if tm_pid else "; taskmanager down"),
            jobs=tuple(Job(j["jid"], j["name"], j["state"]) for j in jobs),
        )

    def metrics_urls(self) -> tuple[str, str]:
        """The Prometheus endpoints of the JobManager (checkpoints, restarts) and of the
        TaskManager (the jobs' operators: our metrics, Kafka lag, records in)."""
        return (f"http://{self.endpoints.flink_jobmanager_metrics.address}/metrics",
                f"http://{self.endpoints.flink_taskmanager_metrics.address}/metrics")

    def python_workers(self) -> list[int]:
        """Python worker processes started by a TaskManager of this FLINK_HOME."""
        return [pid for pid in process.all_pids()
                if any(m in process.cmdline(pid) for m in WORKER_MARKERS) and self._owns(pid)]

    def _owns(self, pid: int) -> bool:
        env = process.environ(pid)
        places = (env.get("FLINK_CONF_DIR", ""), env.get("BOOT_LOG_DIR", ""), process.cwd(pid))
        home = self.paths.flink_home
        return any(place and Path(place).is_relative_to(home) for place in places)

    def _jobmanager_up(self) -> bool:
        return (self.jobmanager_pid() is not None
                and process.port_open(self.endpoints.flink_rest.port))

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FLINK_") and k != "_FLINK_HOME_DETERMINED"}
        env.update(FLINK_CONF_DIR=str(self.paths.flink_conf), FLINK_IDENT_STRING=FLINK_IDENT)
        return env

    def _launch(self, role: str, daemon: str, timeout: float, ready: Callable[[], bool],
                metrics: Endpoint) -> float:
        """Run ``bin/<role>.sh start`` (its Prometheus reporter on ``metrics``) and wait until
        ``ready``; return the seconds it took."""
        pid_file = self.paths.flink_pid_file(daemon)
        pid_file.unlink(missing_ok=True)  # flink-daemon.sh appends to it
        started = time.monotonic()
        result = subprocess.run(
            [str(self.paths.flink_home / "bin" / f"{role}.sh"), "start",
             "-D", f"{METRICS_PORT_KEY}={metrics.port}"],
            env=self._environment(), cwd=self.paths.flink_home, capture_output=True, text=True,
            check=False,
        )
        pid = process.read_pid(pid_file)
        if result.returncode != 0 or pid is None:
            output = [line for line in (result.stdout + result.stderr).strip().splitlines()
                      if not line.startswith("INFO ")]
            raise UserFacingError(f"flink {role}.sh start failed (logs in "
                                  f"{self.paths.flink_log_dir}):\n" + "\n".join(output[-20:]))
        # The pid may still be the forked shell, not yet java: check liveness, not the class name.
        process.wait_ready(f"flink {role}", ready, timeout, lambda: process.alive(pid),
                           self.paths.flink_log_file(daemon))
        return time.monotonic() - started

    def _taskmanager_ids(self) -> set[str]:
        listed = self.rest.call_if_up("/taskmanagers") or {}
        return {tm["id"] for tm in listed.get("taskmanagers", [])}

    def _slots(self) -> str:
        o = self.rest.call_if_up("/overview") or {}
        return (f"{o.get('taskmanagers', 0)} taskmanager(s), "
                f"{o.get('slots-available', 0)}/{o.get('slots-total', 0)} slots free")
