"""``GET /v1/status`` (the pipeline at a glance, what the ``/ui`` page polls) and the page.

Jobs come from the Flink JobManager's REST API (``FEATURESTREAM_FLINK_REST_URL``): the running
feature and scoring jobs, their counters summed over subtasks by the JobManager, the Kafka
source's lag and the checkpoints. Those calls block, so they run in a thread, each bounded by
a short timeout, at most one sampling at a time, and the answer is kept about a second: any
number of pages polling costs Flink one sampling a second. Rates and the recent freshness
histogram are the difference between this sampling and the previous one this worker took
(:mod:`udfs.telemetry.pipeline_stats`). When Flink does not answer, the answer says so and
still carries the models.

Models: the scoring job's model, its live versions and their share of users (the experiment),
and drift over the window from the scoring job's buckets in Redis
(:class:`~featurestream.serving.drift.DriftMonitor`, as ``GET /v1/models/{name}/drift``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Literal, Protocol

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response

from featurestream.flink_rest import CheckpointStats, FlinkRest, JobSample
from featurestream.serving.drift import DriftMonitor, ModelDrift
from featurestream.serving.redis_client import RedisUnavailable
from featurestream.serving.responses import JSONResponse
from featurestream.settings import Settings, masked_url
from featurestream.udfs.scoring.experiments import Split, live_rollout
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.variants import version_label
from featurestream.udfs.telemetry import pipeline_stats
from featurestream.udfs.telemetry.pipeline_stats import JobStats, Snapshot, job_stats

log = logging.getLogger(__name__)

CACHE_S = 1.0  # how long a sampling of Flink is reused
REST_TIMEOUT_S = 1.0  # per Flink REST call
SAMPLE_TIMEOUT_S = 3.0  # the whole sampling (a job is several calls)

PerSecond = Annotated[float | None, Meta(description="Per second over the interval since the "
                                                     "previous sampling; null on the first.")]


class Bucket(Struct):
    """Observations with a value in ``(previous le, le]``; ``le`` null is +Inf."""

    le: float | None
    count: float


class Freshness(Struct):
    """Seconds from a record's time to its row being written to Redis: the histogram over
    ``window`` (``recent``: since the previous sampling; ``since_start``: the job's whole life)
    and its quantiles as Prometheus interpolates them (null without observations)."""

    window: Literal["recent", "since_start"]
    buckets: list[Bucket]
    p50_s: float | None
    p99_s: float | None


class Checkpoints(Struct):
    """Checkpoint counts and the last completed one (nulls before the first)."""

    completed: int
    failed: int
    in_progress: int
    last_duration_ms: int | None
    last_size_bytes: int | None
    last_age_s: float | None


class JobStatus(Struct):
    """A running job: totals since it started, rates, dead letters by reason, freshness
    (``append``: Kafka append time -> row; ``event``: event time -> row), lag, checkpoints."""

    job: Literal["features", "scoring"]
    name: str
    id: str
    state: str
    events_in: Annotated[float | None, Meta(description="Records read (features); null for "
                                                        "a job without that counter.")]
    events_per_s: PerSecond
    output: Literal["rows", "scores"]
    output_total: float
    output_per_s: PerSecond
    dead_letters: dict[str, float]
    dead_letters_per_s: dict[str, float]
    freshness: dict[str, Freshness]
    lag: Annotated[float | None, Meta(description="Records behind the log end (Kafka source's "
                                                  "pendingRecords); null if not reported.")]
    checkpoints: Checkpoints | None


class FlinkState(Struct):
    """Whether the JobManager answered; ``message`` says why not."""

    reachable: bool
    message: str | None = None


class ModelStatus(Struct):
    """A model the scoring job serves: each live version's share of users (``v3``: 0.9) and
    drift over the window (null with ``message`` when Redis did not answer)."""

    model: str
    split: dict[str, float]
    drift: ModelDrift | None
    message: str | None = None


class StatusBody(Struct):
    """The pipeline now: Flink's jobs and the models."""

    as_of: Annotated[int, Meta(description="Wall-clock time (epoch ms) of the answer.")]
    flink: FlinkState
    jobs: list[JobStatus]
    models: list[ModelStatus]


@dataclass(frozen=True)
class JobKind:
    """A job the page knows: its short name, its metrics and what it outputs."""

    job: Literal["features", "scoring"]
    names: pipeline_stats.JobMetricNames
    output: Literal["rows", "scores"]


JOB_KINDS: Mapping[str, JobKind] = {
    pipeline_stats.JOB_NAMES["features"]: JobKind("features", pipeline_stats.FEATURE_JOB, "rows"),
    pipeline_stats.JOB_NAMES["scoring"]: JobKind("scoring", pipeline_stats.SCORING_JOB, "scores"),
}


def job_status(kind: JobKind, sample: JobSample, stats: JobStats, now_ms: int) -> JobStatus:
    """The answer for one job."""
    return JobStatus(
        job=kind.job, name=sample.name, id=sample.id, state=sample.state,
        events_in=stats.events_in, events_per_s=stats.events_per_s, output=kind.output,
        output_total=stats.output, output_per_s=stats.output_per_s,
        dead_letters=dict(stats.dead_letters), dead_letters_per_s=dict(stats.dead_letters_per_s),
        freshness={what: Freshness("recent" if f.recent else "since_start",
                                   [Bucket(None if math.isinf(le) else le, count)
                                    for le, count in f.buckets], f.p50_s, f.p99_s)
                   for what, f in stats.freshness.items()},
        lag=stats.lag, checkpoints=_checkpoints(sample.checkpoints, now_ms))


def _checkpoints(stats: CheckpointStats | None, now_ms: int) -> Checkpoints | None:
    if stats is None:
        return None
    last = stats.last_completed_ms
    return Checkpoints(stats.completed, stats.failed, stats.in_progress, stats.last_duration_ms,
                       stats.last_size_bytes, None if last is None else (now_ms - last) / 1000)


def sample_jobs(rest: FlinkRest) -> list[tuple[JobKind, JobSample]]:
    """The running jobs the page knows, sampled now (blocking; OSError/ValueError if Flink
    does not answer)."""
    lag = {pipeline_stats.FEATURE_JOB.lag, pipeline_stats.SCORING_JOB.lag}
    return [(JOB_KINDS[name], rest.sample(job_id, lag))
            for name, job_id in sorted(rest.running_jobs().items()) if name in JOB_KINDS]


class FlinkJobs:
    """The jobs part of the answer, sampled at most once per ``cache_s`` (in a thread) and
    diffed against this worker's previous sampling of each job."""

    def __init__(self, rest: FlinkRest, cache_s: float = CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rest = rest
        self._cache_s = cache_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._cached: tuple[float, FlinkState, list[JobStatus]] | None = None
        self._previous: dict[str, Snapshot] = {}  # by job id

    async def status(self) -> tuple[FlinkState, list[JobStatus]]:
        """Flink's state and the running jobs'."""
        async with self._lock:
            cached = self._cached
            if cached is not None and self._clock() - cached[0] < self._cache_s:
                return cached[1], cached[2]
            try:
                samples = await asyncio.wait_for(asyncio.to_thread(sample_jobs, self._rest),
                                                 SAMPLE_TIMEOUT_S)
            except (OSError, ValueError, TimeoutError, KeyError) as exc:
                state, jobs = FlinkState(False, f"Flink REST at {masked_url(self._rest.url)} "
                                                f"did not answer: {exc or type(exc).__name__}"), []
            else:
                state, jobs = FlinkState(True), self._diffed(samples)
            self._cached = (self._clock(), state, jobs)
            return state, jobs

    def _diffed(self, samples: list[tuple[JobKind, JobSample]]) -> list[JobStatus]:
        now_ms = int(time.time() * 1000)
        jobs = [job_status(kind, sample,
                           job_stats(self._previous.get(sample.id), sample.metrics, kind.names),
                           now_ms)
                for kind, sample in samples]
        self._previous = {sample.id: sample.metrics for _, sample in samples}
        return jobs


class PipelineStatus:
    """What ``/v1/status`` (:class:`StatusBody`: Flink's jobs and the scoring job's model) and
    ``/ui`` (the page, read once from the package) answer."""

    def __init__(self, settings: Settings, drift: DriftMonitor,
                 jobs: FlinkJobs | None = None) -> None:
        self.page = resources.files("featurestream.serving").joinpath(
            "ui/status.html").read_bytes()
        self._settings = settings
        self._drift = drift
        self._jobs = jobs or FlinkJobs(FlinkRest(settings.flink_rest_url, REST_TIMEOUT_S))
        self._registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
        self._default = Split.parse(settings.experiment, settings.shadow_model)

    async def status(self) -> StatusBody:
        """The answer now."""
        now_ms = int(time.time() * 1000)
        flink, jobs = await self._jobs.status()
        return StatusBody(now_ms, flink, jobs, [await self._model(now_ms)])

    async def _model(self, now_ms: int) -> ModelStatus:
        name = self._settings.model_name
        split = {version_label(v): share for v, share in
                 live_rollout(self._registry, self._default).shares.items()}
        problem = self._drift.unknown(name)
        if problem is not None:
            return ModelStatus(name, split, None, problem)
        try:
            drift = await self._drift.drift(name, now_ms)
        except RedisUnavailable as exc:
            return ModelStatus(name, split, None, str(exc))
        return ModelStatus(name, split, drift)


class _StatusReader(Protocol):
    """What the endpoints need of the reader."""

    @property
    def status(self) -> PipelineStatus: ...


async def get_status(reader: _StatusReader, request: Request) -> Response:
    """``GET /v1/status``: the pipeline now."""
    return JSONResponse(await reader.status.status())


async def get_ui(reader: _StatusReader, request: Request) -> Response:
    """``GET /ui``: the status page (it polls ``/v1/status``)."""
    return Response(reader.status.page, media_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-cache"})
