"""Flink for the local stack: a standalone session cluster (1 JobManager, N TaskManagers).

Started with the daemon scripts of the clean FLINK_HOME (see :mod:`flink_home`), which write
their pid files to ``<home>/run`` and logs to ``<home>/logs/flink``; each TaskManager has its own
(:mod:`taskmanagers`). Python workers of a TaskManager (``pyflink-udf-runner.sh`` and its
``beam_boot``) survive a killed TaskManager, so starting one ends the orphaned workers of this
FLINK_HOME, and ``stop`` ends every such process.

Each daemon exports its metrics for Prometheus on a port of its own (:meth:`FlinkCluster.
metrics_urls`), given with ``-D`` as all read the same config file.

The JobManager runs without high availability: ``start`` after it was lost restarts it, replaces
the TaskManagers still running the lost jobs' tasks, and resumes those jobs from their retained
checkpoints (:mod:`submissions`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from featurestream.devstack import process, submissions
from featurestream.devstack.component import ComponentStatus, Echo, Job
from featurestream.devstack.endpoints import Endpoints
from featurestream.devstack.flink_home import build_flink_home
from featurestream.devstack.paths import FLINK_IDENT, StackPaths
from featurestream.devstack.taskmanagers import TaskManager, taskmanagers
from featurestream.errors import UserFacingError
from featurestream.flink_rest import FlinkRest
from featurestream.jdk import java_tool
from featurestream.settings import Settings

JOBMANAGER = "standalonesession"  # flink-daemon.sh's name
JOBMANAGER_CLASS = "StandaloneSessionClusterEntrypoint"
WORKER_MARKERS = ("pyflink-udf-runner", "pyflink.fn_execution")
JOBMANAGER_TIMEOUT_S = 60.0
TASKMANAGER_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
REST_TIMEOUT_S = 2.0
METRICS_PORT_KEY = "metrics.reporter.prom.port"
RESOURCE_ID_KEY = "taskmanager.resource-id"
ARCHIVE_KEY = "jobmanager.archive.fs.dir"


class FlinkCluster:
    """JobManager (REST on FEATURESTREAM_FLINK_REST_URL's port, RPC on it + 1, Prometheus metrics
    on it + 2) and FEATURESTREAM_TASKMANAGERS TaskManagers (the first's Prometheus metrics on
    REST + 3, the others' on free ports)."""

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

    def taskmanagers(self) -> list[TaskManager]:
        """The TaskManagers this stack runs (FEATURESTREAM_TASKMANAGERS of them)."""
        return taskmanagers(self.paths, self.endpoints.flink_taskmanager_metrics,
                            self.settings.taskmanagers)[:self.settings.taskmanagers]

    def taskmanager_pid(self) -> int | None:
        """Pid of this stack's first TaskManager, if alive."""
        return self.taskmanagers()[0].pid()

    def taskmanager_pids(self) -> list[int]:
        """Pids of this stack's live TaskManagers."""
        return [pid for tm in self.taskmanagers() if (pid := tm.pid()) is not None]

    def registered_taskmanagers(self) -> set[str]:
        """The resource ids the JobManager lists (a killed TaskManager's until timed out)."""
        listed = self.rest.call_if_up("/taskmanagers") or {}
        return {tm["id"] for tm in listed.get("taskmanagers", [])}

    def _registered(self, resource_id: str) -> bool:
        return resource_id in self.registered_taskmanagers()

    def running(self) -> bool:
        """True if our JobManager serves REST and all our TaskManagers are alive."""
        return self._jobmanager_up() and all(tm.pid() for tm in self.taskmanagers())

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
        """Start whichever of the JobManager and the TaskManagers is not running and wait until
        each is ready; after a lost JobManager, resume its jobs (only then: a JobManager that
        stayed up still runs them, however slowly it answers now)."""
        restarted = not self._jobmanager_up()
        if restarted:
            self._start_jobmanager(echo)
        dead = [tm for tm in self.taskmanagers() if tm.pid() is None]
        if dead:
            process.terminate(self._orphaned_workers(), timeout=5.0)
        for tm in dead:
            echo(f"starting flink taskmanager {tm.index}")
            launch = tm.new_launch(f"{time.time_ns():x}")
            seconds = self._launch(
                "taskmanager", tm.pid_file, tm.log_file, TASKMANAGER_TIMEOUT_S,
                partial(self._registered, launch.resource_id),
                {METRICS_PORT_KEY: launch.metrics_port, RESOURCE_ID_KEY: launch.resource_id},
                tm.ident)
            echo(f"flink taskmanager ready in {seconds:.1f} s (taskmanager {tm.index}; "
                 f"{self._slots()})")
        if restarted:
            submissions.resume_lost_jobs(self.settings.home, self.rest, self.settings, echo)

    def _start_jobmanager(self, echo: Echo) -> None:
        """(Re)start the JobManager; TaskManagers still running tasks of a lost one are stopped
        too (they would hold the lost jobs' slots until their heartbeats time out)."""
        stale = self.jobmanager_pid()
        if stale is not None:
            process.terminate([stale])
        survivors = self.taskmanager_pids()
        if survivors:
            echo("stopping the taskmanagers of the lost jobmanager "
                 f"(pids {', '.join(map(str, survivors))})")
            process.terminate(survivors, timeout=STOP_TIMEOUT_S)
        build_flink_home(self.settings, self.paths, self.endpoints)
        echo(f"starting flink jobmanager on {self.address} (FLINK_HOME {self.paths.flink_home})")
        archive = submissions.archive_dir(self.settings.home)
        archive.mkdir(parents=True, exist_ok=True)
        seconds = self._launch(
            "jobmanager", self.paths.flink_pid_file(JOBMANAGER),
            self.paths.flink_log_file(JOBMANAGER), JOBMANAGER_TIMEOUT_S,
            lambda: self.rest.call_if_up("/overview") is not None,
            {METRICS_PORT_KEY: self.endpoints.flink_jobmanager_metrics.port,
             ARCHIVE_KEY: archive.resolve().as_uri()}, FLINK_IDENT)
        echo(f"flink jobmanager ready in {seconds:.1f} s")

    def stop(self, echo: Echo) -> None:
        """SIGTERM (then SIGKILL) TaskManagers and JobManager, then their leftover Python
        workers."""
        every = taskmanagers(self.paths, self.endpoints.flink_taskmanager_metrics,
                             self.settings.taskmanagers)
        daemons = [pid for pid in (*(tm.pid() for tm in every), self.jobmanager_pid()) if pid]
        workers = self.python_workers()
        if not daemons and not workers:
            echo("flink already down")
        else:
            echo(f"stopping flink (pids {', '.join(map(str, daemons + workers))})")
            started = time.monotonic()
            process.terminate(daemons, timeout=STOP_TIMEOUT_S)
            process.terminate(self.python_workers(), timeout=5.0)
            echo(f"flink stopped in {time.monotonic() - started:.1f} s")
        self.paths.flink_pid_file(JOBMANAGER).unlink(missing_ok=True)
        for tm in every:
            tm.forget()

    def status(self) -> ComponentStatus:
        """Up/down, REST address, slots, each TaskManager, web UI link and the jobs."""
        jm_up = self._jobmanager_up()
        managers = self.taskmanagers()
        pids = [tm.pid() for tm in managers]
        if not jm_up:
            return ComponentStatus(self.name, False, self.address,
                                   detail="" if not any(pids) else "jobmanager down")
        registered = self.registered_taskmanagers()
        each = []
        for tm, pid in zip(managers, pids, strict=True):
            launch = tm.launch()
            if pid is None or launch is None:
                each.append(f"taskmanager {tm.index} down")
            else:
                state = "" if launch.resource_id in registered else ", not registered"
                each.append(f"taskmanager {tm.index} pid {pid}{state}")
        jobs = (self.rest.call_if_up("/jobs/overview") or {}).get("jobs", [])
        return ComponentStatus(
            self.name, all(pids), self.address, self.jobmanager_pid(),
            detail=f"{self._slots()} ({'; '.join(each)}); web UI {self.address}/; metrics "
            + ", ".join(self.metrics_urls()),
            jobs=tuple(Job(j["jid"], j["name"], j["state"]) for j in jobs),
        )

    def metrics_urls(self) -> tuple[str, ...]:
        """The Prometheus endpoints of the JobManager (checkpoints, restarts) and of each
        started TaskManager (the jobs' operators: our metrics, Kafka lag, records in)."""
        managers = [url for tm in self.taskmanagers() if (url := tm.metrics_url())]
        return (f"http://{self.endpoints.flink_jobmanager_metrics.address}/metrics", *managers)

    def python_workers(self) -> list[int]:
        """Python worker processes started by a TaskManager of this FLINK_HOME."""
        return [pid for pid in process.all_pids()
                if any(m in process.cmdline(pid) for m in WORKER_MARKERS) and self._owns(pid)]

    def _orphaned_workers(self) -> list[int]:
        """Python workers of this FLINK_HOME whose TaskManager is gone (a live one's stay,
        beyond FEATURESTREAM_TASKMANAGERS too: a larger earlier ``up`` may have left some)."""
        every = taskmanagers(self.paths, self.endpoints.flink_taskmanager_metrics,
                             self.settings.taskmanagers)
        live = {pid for tm in every if (pid := tm.pid()) is not None}
        return [pid for pid in self.python_workers() if not live & _ancestors(pid)]

    def _owns(self, pid: int) -> bool:
        env = process.environ(pid)
        places = (env.get("FLINK_CONF_DIR", ""), env.get("BOOT_LOG_DIR", ""), process.cwd(pid))
        home = self.paths.flink_home
        return any(place and Path(place).is_relative_to(home) for place in places)

    def _jobmanager_up(self) -> bool:
        return (self.jobmanager_pid() is not None
                and process.port_open(self.endpoints.flink_rest.port))

    def _environment(self, ident: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FLINK_") and k != "_FLINK_HOME_DETERMINED"}
        env.update(FLINK_CONF_DIR=str(self.paths.flink_conf), FLINK_IDENT_STRING=ident)
        return env

    def _launch(self, role: str, pid_file: Path, log_file: Path, timeout: float,
                ready: Callable[[], bool], options: Mapping[str, object], ident: str) -> float:
        """Run ``bin/<role>.sh start`` with ``-D`` ``options`` as ``FLINK_IDENT_STRING``
        ``ident`` and wait until ``ready``; return the seconds it took."""
        pid_file.unlink(missing_ok=True)  # flink-daemon.sh appends to it
        started = time.monotonic()
        dynamic = [arg for key, value in options.items() for arg in ("-D", f"{key}={value}")]
        result = subprocess.run(
            [str(self.paths.flink_home / "bin" / f"{role}.sh"), "start", *dynamic],
            env=self._environment(ident), cwd=self.paths.flink_home, capture_output=True,
            text=True, check=False,
        )
        pid = process.read_pid(pid_file)
        if result.returncode != 0 or pid is None:
            output = [line for line in (result.stdout + result.stderr).strip().splitlines()
                      if not line.startswith("INFO ")]
            raise UserFacingError(f"flink {role}.sh start failed (logs in "
                                  f"{self.paths.flink_log_dir}):\n" + "\n".join(output[-20:]))
        # The pid may still be the forked shell, not yet java: check liveness, not the class name.
        process.wait_ready(f"flink {role}", ready, timeout, lambda: process.alive(pid), log_file)
        return time.monotonic() - started

    def _slots(self) -> str:
        o = self.rest.call_if_up("/overview") or {}
        return (f"{o.get('taskmanagers', 0)} taskmanager(s) registered, "
                f"{o.get('slots-available', 0)}/{o.get('slots-total', 0)} slots free")


def _ancestors(pid: int) -> set[int]:
    """The pids of a process's parent, its parent's parent, ... (read from /proc)."""
    found: set[int] = set()
    while pid > 1 and pid not in found:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])
        found.add(pid)
    return found
