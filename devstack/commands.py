"""CLI handlers ``featurestream up|down|status``: thin wrappers over :class:`LocalStack`.

``status`` also says how the pipeline is doing: under each running job a line with its lag,
freshness p99, dead letters per second and checkpoints, and a line per model with its live
versions, their split and the worst feature's PSI. Rates need two samples of the jobs'
cumulative counters: when a job runs, ``status`` takes them :data:`RATE_INTERVAL_S` apart (the
freshness p99 is over that interval too); with no job running it answers at once.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import redis
from redis.exceptions import RedisClusterException

from featurestream.devstack.component import ComponentStatus
from featurestream.devstack.local import LocalStack
from featurestream.flink_rest import CheckpointStats, FlinkRest
from featurestream.jobs.redis_target import sync_client
from featurestream.serving.drift import DriftQuery, Sidecars, unknown_model
from featurestream.serving.status import sample_jobs
from featurestream.settings import Settings, masked_url
from featurestream.udfs.scoring.experiments import Split, live_rollout
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.variants import version_label
from featurestream.udfs.telemetry.pipeline_stats import JobStats, job_stats

RATE_INTERVAL_S = 1.0
DRIFT_PSI = 0.2  # the alert rule's threshold


def up(settings: Settings, args: argparse.Namespace) -> int:
    """Start the local stack (with ``--taskmanagers N``: N TaskManagers)."""
    if args.taskmanagers is not None:
        settings = settings.replace(taskmanagers=args.taskmanagers)
    LocalStack(settings).up()
    return 0


def down(settings: Settings, args: argparse.Namespace) -> int:
    """Stop the local stack."""
    LocalStack(settings).down()
    return 0


def status(settings: Settings, args: argparse.Namespace) -> int:
    """Print one line per component (and per Flink job, with its health, and per model);
    exit 0 even if down."""
    statuses = LocalStack(settings).status()
    running = any(job.state == "RUNNING" for s in statuses for job in s.jobs)
    jobs = job_reports(FlinkRest(settings.flink_rest_url, timeout_s=2)) if running else {}
    for line in status_lines(statuses, jobs, [model_report(settings)], int(time.time() * 1000)):
        print(line)
    return 0


@dataclass(frozen=True)
class JobReport:
    """A running job's health over :data:`RATE_INTERVAL_S`."""

    stats: JobStats
    checkpoints: CheckpointStats | None


@dataclass(frozen=True)
class ModelReport:
    """A model: its live versions' shares, the feature with the highest PSI over the drift
    window (version, feature, PSI; None without samples), or why there is nothing to show; the
    experiment record that set the split (None: the settings) and the shadow version."""

    model: str
    split: Mapping[int, float]
    worst: tuple[int, str, float] | None = None
    problem: str | None = None
    experiment: str | None = None
    shadow: int | None = None


def job_reports(rest: FlinkRest) -> dict[str, JobReport]:
    """The known running jobs' reports by job id, from two samples (none if Flink does not
    answer)."""
    try:
        first = {sample.id: sample for _, sample in sample_jobs(rest)}
        time.sleep(RATE_INTERVAL_S)
        second = sample_jobs(rest)
    except (OSError, ValueError, KeyError):
        return {}
    return {sample.id: JobReport(job_stats(first[sample.id].metrics if sample.id in first
                                           else None, sample.metrics, kind.names),
                                 sample.checkpoints)
            for kind, sample in second}


def model_report(settings: Settings) -> ModelReport:
    """The scored model's split and worst drift, read from the registry and Redis."""
    model = settings.model_name
    registry = ModelRegistry(settings.effective_models_dir, model)
    rollout = live_rollout(registry, Split.parse(settings.experiment, settings.shadow_model))
    split = partial(ModelReport, model, rollout.shares, experiment=rollout.experiment,
                    shadow=rollout.shadow)
    problem = unknown_model(settings, model)
    if problem is not None:
        return split(problem="no version published")
    query = DriftQuery.of(settings, Sidecars(registry), int(time.time() * 1000))
    try:
        client = sync_client(settings.redis_url, settings.redis_cluster, 2)
        try:
            pipe = client.pipeline(transaction=False)
            for key in query.all_keys:
                pipe.hgetall(key)
            hashes = [{f.decode(): v.decode() for f, v in r.items()} for r in pipe.execute()]
        finally:
            client.close()
    except (redis.RedisError, RedisClusterException):  # the latter: no cluster node answers
        return split(problem=f"Redis at {masked_url(settings.redis_url)} did not answer")
    scored = [(v.version, f.feature, f.psi) for v in query.answer(hashes).versions
              for f in v.features if f.psi is not None]
    if not scored:
        return split(problem="no scored samples in the drift window")
    return split(max(scored, key=lambda s: s[2]))


def status_lines(statuses: list[ComponentStatus], jobs: Mapping[str, JobReport] | None = None,
                 models: Sequence[ModelReport] = (), now_ms: int = 0) -> list[str]:
    """``name  up|down  address  [pid N]  [detail]``, then an indented line per job (and its
    health when reported), then a line per model."""
    jobs = jobs or {}
    lines = []
    for s in statuses:
        parts = [f"{s.name:<6}", "up  " if s.up else "down", s.address]
        if s.pid is not None:
            parts.append(f"pid {s.pid}")
        if s.detail:
            parts.append(s.detail)
        lines.append("  ".join(parts))
        for job in s.jobs:
            lines.append(f"         job {job.name}  {job.id}  {job.state}")
            if job.id in jobs:
                lines.append("             " + job_line(jobs[job.id], now_ms))
    lines.extend(model_line(m) for m in models)
    return lines


def job_line(report: JobReport, now_ms: int) -> str:
    """``lag N  freshness p99 ...  dead letters ...  checkpoints ...``."""
    stats = report.stats
    parts = [f"lag {_count(stats.lag)}"]
    if stats.freshness:
        parts.append("freshness p99 " + ", ".join(
            f"{_seconds(f.p99_s)} ({what}{'' if f.recent or f.p99_s is None else ', since start'})"
            for what, f in stats.freshness.items()))
    per_s = sum(stats.dead_letters_per_s.values())
    worst = sorted(stats.dead_letters_per_s.items(), key=lambda r: -r[1])
    parts.append(f"dead letters {per_s:.1f}/s" + (
        " (" + ", ".join(f"{reason} {rate:.1f}/s" for reason, rate in worst if rate) + ")"
        if per_s else "") + f", {_count(sum(stats.dead_letters.values()))} in all")
    parts.append(_checkpoints(report.checkpoints, now_ms))
    return "  ".join(parts)


def _checkpoints(stats: CheckpointStats | None, now_ms: int) -> str:
    if stats is None:
        return "checkpoints ?"
    text = f"checkpoints {stats.completed}" + (f" ({stats.failed} failed)" if stats.failed
                                                else "")
    if stats.last_completed_ms is None or stats.last_duration_ms is None:
        return text
    size = stats.last_size_bytes or 0
    return (f"{text}, last {stats.last_duration_ms} ms {_size(size)} "
            f"{max(now_ms - stats.last_completed_ms, 0) / 1000:.0f} s ago")


def model_line(report: ModelReport) -> str:
    """``model NAME  live v3 90%, v4 10% (exp-2)  shadow v5  worst PSI v4 amount 0.31
    (drift)``."""
    live = ", ".join(f"{version_label(v)} {share:.0%}" for v, share in report.split.items())
    parts = [f"model  {report.model}", f"live {live or 'none'}"
             + (f" ({report.experiment})" if report.experiment else "")]
    if report.shadow is not None:
        parts.append(f"shadow {version_label(report.shadow)}")
    if report.worst is not None:
        version, feature, psi = report.worst
        parts.append(f"worst PSI {version_label(version)} {feature} {psi:.3f}"
                     + (" (drift)" if psi > DRIFT_PSI else ""))
    else:
        parts.append(report.problem or "")
    return "  ".join(p for p in parts if p)


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3g} s"


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
