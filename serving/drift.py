"""Drift of a model's versions, from the scoring job's counts in Redis: ``GET
/v1/models/{name}/drift`` and the drift gauges of ``/metrics``.

The scoring job counts each version's scored vectors into the bins of its training distribution
(the sidecar's, :mod:`udfs.telemetry.drift`) and adds them to Redis in time buckets; here a
window of buckets is read in one pipelined round trip and summed into a
:class:`~udfs.telemetry.drift.DriftReport` per version. The gauges are computed when scraped, by
the worker that answers, from Redis: every worker would compute the same values, so they are
not kept in prometheus_client's multiprocess files.

A version is shown when it is live (served by the experiment, the latest without one, or the
shadow) or has samples in the window; one without a training distribution (a sidecar written
before they were recorded) is shown with a message, never as an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from msgspec import Meta, Struct
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from featurestream.serving.contract import ErrorBody
from featurestream.serving.metrics import Metrics
from featurestream.serving.redis_client import Command, RedisCalls, RedisUnavailable
from featurestream.serving.responses import ApiError, JSONResponse
from featurestream.serving.shaping import now_ms
from featurestream.settings import Settings
from featurestream.udfs.scoring.experiments import Split, live_rollout
from featurestream.udfs.scoring.model_registry import ModelError, ModelRegistry
from featurestream.udfs.telemetry.catalog import (
    DRIFT_SAMPLES,
    FEATURE_NULL_RATE,
    FEATURE_OUT_OF_RANGE_RATE,
    FEATURE_PSI,
    SCORE_PSI,
    Metric,
)
from featurestream.udfs.telemetry.drift import TrainingDistribution, drift_report, window_keys

MODEL_NAME = re.compile(r"^[A-Za-z0-9_]+$(?!\n)")
ModelName = Annotated[str, Meta(pattern=MODEL_NAME.pattern,
                                description="A model in the registry (letters, digits, _).")]

Rate = Annotated[float | None, Meta(description="Fraction of the window's samples; null "
                                                "without samples.")]
Psi = Annotated[float | None, Meta(description="Population stability index against training "
                                               "(> 0.2: drift); null without samples.")]


class FeatureDrift(Struct):
    """One input of the model over the window."""

    feature: str
    psi: Psi
    null_rate: Rate
    out_of_range_rate: Annotated[float | None, Meta(
        description="Fraction of the window's samples outside the training min/max; null "
                    "without samples.")]


class ScoreBins(Struct):
    """The score's training bins (``edges``: the cut points) and the fraction of scores in each,
    observed over the window and expected from training."""

    edges: list[float]
    observed: list[float]
    expected: list[float]


class VersionDrift(Struct):
    """One version's drift over the window; ``message`` says why there is none to show (no
    training distribution, or no samples yet)."""

    version: int
    live: Annotated[bool, Meta(description="Served now (experiment arm, latest, or shadow).")]
    samples: Annotated[int, Meta(description="Scored vectors counted in the window.")]
    score_psi: Psi
    features: list[FeatureDrift]
    score: ScoreBins | None
    message: str | None


class ModelDrift(Struct):
    """A model's versions and their drift against training over the last ``window_ms``."""

    model: str
    window_ms: int
    as_of: Annotated[int, Meta(description="Wall-clock time (epoch ms) of the computation.")]
    versions: list[VersionDrift]


@dataclass(frozen=True)
class VersionSource:
    """What one version's drift is computed from: its training distribution, or why none."""

    version: int
    live: bool
    distribution: TrainingDistribution | None
    problem: str | None = None  # why there is no distribution


def live_versions(settings: Settings, registry: ModelRegistry) -> set[int]:
    """The versions the scoring job serves for the registry's model (the experiment record,
    else the settings: :func:`~udfs.scoring.experiments.live_rollout`); none for a model it does
    not score."""
    if registry.name != settings.model_name:
        return set()
    return live_rollout(registry, Split.parse(settings.experiment, settings.shadow_model)).live


class Sidecars:
    """The versions of one model in the registry, their sidecars read again only when the
    registry directory changes (versions are never overwritten)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._marker: tuple[int, tuple[int, ...]] | None = None
        self._sources: dict[int, tuple[TrainingDistribution | None, str | None]] = {}

    def sources(self, live: Iterable[int]) -> list[VersionSource]:
        """Every version in the registry, oldest first."""
        marker = self.registry.changed_marker()
        if marker != self._marker:
            self._marker = marker
            self._sources = {v: self._read(v) for v in self.registry.versions()}
        live = set(live)
        return [VersionSource(v, v in live, *source) for v, source in self._sources.items()]

    def _read(self, version: int) -> tuple[TrainingDistribution | None, str | None]:
        try:
            metadata = self.registry.metadata(version)
        except ModelError as exc:
            return None, f"unreadable sidecar: {exc}"
        return metadata.training_distribution, metadata.no_distribution()


def unknown_model(settings: Settings, model: str) -> str | None:
    """Why ``model`` has no drift to show: not a model name, or no version of it in the
    registry (None: it has versions)."""
    if MODEL_NAME.match(model) and ModelRegistry(settings.effective_models_dir, model).versions():
        return None
    return (f"no model {model!r} in the registry {settings.effective_models_dir} "
            "(FEATURESTREAM_MODELS_DIR); publish one with featurestream train")


@dataclass(frozen=True)
class DriftQuery:
    """One model's drift to compute: its versions, and the Redis buckets of each in the window
    ending ``now_ms`` (none for a version without a training distribution)."""

    model: str
    sources: tuple[VersionSource, ...]
    keys: tuple[tuple[str, ...], ...]  # per source
    window_ms: int
    now_ms: int

    @classmethod
    def of(cls, settings: Settings, sidecars: Sidecars, now_ms: int) -> DriftQuery:
        """The query for ``sidecars``' model under ``settings`` (prefix, window, live set)."""
        model = sidecars.registry.name
        sources = sidecars.sources(live_versions(settings, sidecars.registry))
        keys = tuple(
            tuple(window_keys(settings.redis_key_prefix, model, s.version, now_ms,
                              settings.drift_window_ms, settings.drift_bucket_ms))
            if s.distribution is not None else () for s in sources)
        return cls(model, tuple(sources), keys, settings.drift_window_ms, now_ms)

    @property
    def all_keys(self) -> list[str]:
        """Every bucket to read, in order: one ``HGETALL`` each."""
        return [key for per_source in self.keys for key in per_source]

    def answer(self, hashes: Sequence[Mapping[str, str]]) -> ModelDrift:
        """The drift from the hashes of :attr:`all_keys` (an expired bucket: empty): the live
        versions and those with samples in the window."""
        remaining = iter(hashes)
        shown = []
        for source, keys in zip(self.sources, self.keys, strict=True):
            version = _version_drift(self.model, source, [next(remaining) for _ in keys],
                                     self.window_ms)
            if source.live or version.samples:
                shown.append(version)
        return ModelDrift(self.model, self.window_ms, self.now_ms, shown)


def hash_reply(reply: Sequence[str]) -> dict[str, str]:
    """An HGETALL reply ``[field, value, ...]`` as a mapping."""
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _version_drift(model: str, source: VersionSource, hashes: Sequence[Mapping[str, str]],
                   window_ms: int) -> VersionDrift:
    if source.distribution is None:
        return VersionDrift(source.version, source.live, 0, None, [], None,
                            source.problem or "no training distribution")
    report = drift_report(model, source.version, source.distribution, hashes, window_ms)
    histogram = report.score
    message = None if report.samples else (
        f"no scored samples in the last {duration_text(window_ms)} yet")
    return VersionDrift(
        source.version, source.live, report.samples, report.score_psi,
        [FeatureDrift(f.feature, f.psi, f.null_rate, f.out_of_range_rate)
         for f in report.features],
        ScoreBins(list(histogram.edges), list(histogram.observed), list(histogram.expected)),
        message)


def duration_text(ms: int) -> str:
    """``300000`` -> ``5m``; ``90000`` -> ``90s``."""
    seconds = ms // 1000
    return f"{seconds // 60}m" if seconds % 60 == 0 and seconds else f"{seconds}s"


class DriftMonitor:
    """The reader's view of drift: the sidecars of each model asked for (kept while the
    registry holds it), and the window's buckets read from Redis in one round trip."""

    def __init__(self, settings: Settings, redis: RedisCalls, metrics: Metrics) -> None:
        self._settings = settings
        self._redis = redis
        self._metrics = metrics
        self._sidecars: dict[str, Sidecars] = {}

    def unknown(self, model: str) -> str | None:
        """Why ``model`` has no drift (None: the registry holds it)."""
        problem = unknown_model(self._settings, model)
        if problem is not None:
            self._sidecars.pop(model, None)
        return problem

    async def drift(self, model: str, now_ms: int) -> ModelDrift:
        """The drift of a ``model`` the registry holds, now (RedisUnavailable if Redis does
        not answer)."""
        if model not in self._sidecars:
            registry = ModelRegistry(self._settings.effective_models_dir, model)
            self._sidecars[model] = Sidecars(registry)
        query = DriftQuery.of(self._settings, self._sidecars[model], now_ms)
        commands: list[Command] = [("HGETALL", key) for key in query.all_keys]
        return query.answer([hash_reply(r) for r in await self._redis.execute(commands)])

    async def gauges(self) -> bytes:
        """The drift gauges of the model the scoring job scores, for ``/metrics``: none when
        the registry holds no version of it, or Redis does not answer (counted as a Redis
        error: the rest of the scrape still answers)."""
        model = self._settings.model_name
        if self.unknown(model) is not None:
            return b""
        try:
            drift = await self.drift(model, now_ms())
        except RedisUnavailable as exc:
            self._metrics.redis_errors.labels(exc.kind).inc()
            return b""
        return drift_gauges([drift])


def drift_gauges(models: Iterable[ModelDrift]) -> bytes:
    """The drift gauges of ``models`` in Prometheus' text format (a PSI or rate only where the
    window has samples)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DriftCollector(list(models)))
    return generate_latest(registry)


def _family(metric: Metric) -> GaugeMetricFamily:
    return GaugeMetricFamily(metric.name, metric.help, labels=list(metric.labels))


class _DriftCollector(Collector):
    def __init__(self, models: Sequence[ModelDrift]) -> None:
        self._models = models

    def collect(self) -> Iterable[Any]:
        psi, nulls, oor = (_family(FEATURE_PSI), _family(FEATURE_NULL_RATE),
                           _family(FEATURE_OUT_OF_RANGE_RATE))
        score, samples = _family(SCORE_PSI), _family(DRIFT_SAMPLES)
        for model in self._models:
            for v in model.versions:
                version = [model.model, str(v.version)]
                samples.add_metric(version, v.samples)
                if v.score_psi is not None:
                    score.add_metric(version, v.score_psi)
                for f in v.features:
                    for family, value in ((psi, f.psi), (nulls, f.null_rate),
                                          (oor, f.out_of_range_rate)):
                        if value is not None:
                            family.add_metric([*version, f.feature], value)
        return [psi, score, nulls, oor, samples]


class _DriftReader(Protocol):
    """What the endpoint needs of the reader."""

    @property
    def drift(self) -> DriftMonitor: ...


async def get_model_drift(reader: _DriftReader, request: Request) -> Response:
    """``GET /v1/models/{name}/drift``: each live version's drift over the window (404 for a
    model the registry does not hold)."""
    name = request.path_params["name"]
    problem = reader.drift.unknown(name)
    if problem is not None:
        raise ApiError(404, ErrorBody("unknown_model", problem))
    return JSONResponse(await reader.drift.drift(name, now_ms()))
