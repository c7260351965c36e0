"""The reader's drift: which versions it shows, its one round trip over the window's buckets,
the answer and the gauges, against fake Redis buckets filled by the scoring job's counter."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from featurestream.serving.drift import (
    DriftMonitor,
    ModelDrift,
    VersionDrift,
    drift_gauges,
    get_model_drift,
    live_versions,
)
from featurestream.serving.metrics import Metrics
from featurestream.serving.redis_client import RedisUnavailable
from featurestream.serving.responses import ApiError
from featurestream.settings import Settings
from featurestream.udfs.scoring.experiments import record
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.variants import Arm
from featurestream.udfs.telemetry import catalog
from featurestream.udfs.telemetry.drift import DriftCounts, bucket_start, drift_key
from testing import model_fixtures

PREFIX = "fs:"
NOW = 1_700_000_123_456
BUCKET = 10_000
WINDOW = 60_000


class FakeRedis:
    """HINCRBY-style hashes; answers HGETALL as the reader's client does (flat lists)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.round_trips: list[list[tuple[str, ...]]] = []
        self.down = False

    def add(self, key: str, fields: dict[str, int]) -> None:
        bucket = self.hashes.setdefault(key, {})
        for name, count in fields.items():
            bucket[name] = str(int(bucket.get(name, "0")) + count)

    async def execute(self, commands: list[tuple[str, ...]]) -> list[list[str]]:
        if self.down:
            raise RedisUnavailable("timeout", "Redis did not answer within 100 ms")
        self.round_trips.append(commands)
        assert {c[0] for c in commands} <= {"HGETALL"}
        return [[x for kv in self.hashes.get(c[1], {}).items() for x in kv] for c in commands]


def count(redis: FakeRedis, version: int, features: np.ndarray, at_ms: int = NOW,
          seed: int = 0) -> None:
    """What the scoring job adds to the bucket of ``at_ms`` after scoring ``features``."""
    counts = DriftCounts(model_fixtures.FEATURES, model_fixtures.training_distribution(seed=seed))
    scores = np.full(len(features), 0.5)
    counts.add(features, scores)
    redis.add(drift_key(PREFIX, model_fixtures.NAME, version, bucket_start(at_ms, BUCKET)),
              counts.take())


def training_like(n: int, seed: int = 1) -> np.ndarray:
    """Vectors drawn as the toy model's training rows were (normal, scale 10; a tenth missing
    every feature but the first)."""
    vectors = np.random.default_rng(seed).normal(size=(n, len(model_fixtures.FEATURES))) * 10
    vectors[::10, 1:] = np.nan
    return vectors


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    """v1 and v3 with a training distribution, v2 (an old sidecar) without."""
    model_fixtures.publish(tmp_path, 1)
    registry = ModelRegistry(tmp_path, model_fixtures.NAME)
    registry.publish(model_fixtures.train_text(),
                     model_fixtures.metadata(2, with_distribution=False))
    model_fixtures.publish(tmp_path, 3)
    return registry


def settings(registry: ModelRegistry, **changes: Any) -> Settings:
    return Settings(models_dir=str(registry.directory), redis_key_prefix=PREFIX,
                    drift_window_ms=WINDOW, drift_bucket_ms=BUCKET, **changes)


def drift(monitor: DriftMonitor, model: str = model_fixtures.NAME) -> ModelDrift:
    return asyncio.run(monitor.drift(model, NOW))


def by_version(answer: ModelDrift) -> dict[int, VersionDrift]:
    return {v.version: v for v in answer.versions}


def test_live_versions_are_the_arms_or_the_latest_and_the_shadow(tmp_path: Path) -> None:
    plain = Settings()
    registry = ModelRegistry(tmp_path, plain.model_name)
    assert live_versions(plain, registry) == set()
    for version in (1, 2, 5):
        model_fixtures.publish(tmp_path, version, seed=version)
    assert live_versions(plain, registry) == {5}
    split = Settings(experiment="v2:90,v5:10", shadow_model="v1")
    assert live_versions(split, registry) == {1, 2, 5}
    assert live_versions(split, ModelRegistry(tmp_path, "another_model")) == set()
    record(registry, (Arm(1, 1),), 2, "promote v1", "a", 1)
    assert live_versions(split, registry) == {1, 2}, "the record wins over the settings"


def test_the_live_version_and_those_with_samples_are_shown(registry: ModelRegistry) -> None:
    redis = FakeRedis()
    count(redis, 1, training_like(500))
    count(redis, 3, training_like(2_000, seed=2), at_ms=NOW - 30_000)
    answer = drift(DriftMonitor(settings(registry), redis, Metrics()))  # type: ignore[arg-type]
    assert (answer.model, answer.window_ms, answer.as_of) == (model_fixtures.NAME, WINDOW, NOW)
    versions = by_version(answer)
    assert list(versions) == [1, 3]  # v2: neither live nor counted
    assert (versions[1].live, versions[1].samples) == (False, 500)
    assert (versions[3].live, versions[3].samples, versions[3].message) == (True, 2_000, None)
    for version in versions.values():
        assert [f.feature for f in version.features] == list(model_fixtures.FEATURES)
        amount = version.features[0]
        assert amount.psi is not None and amount.psi < 0.1  # drawn like the training rows
        assert amount.null_rate == 0 and amount.out_of_range_rate is not None
        assert version.features[1].null_rate == pytest.approx(0.1, abs=0.001)
        assert version.score is not None and len(version.score.observed) == len(
            version.score.expected)


def test_one_round_trip_reads_the_window_of_each_version_with_a_distribution(
        registry: ModelRegistry) -> None:
    redis = FakeRedis()
    asyncio.run(DriftMonitor(settings(registry), redis, Metrics())  # type: ignore[arg-type]
                .drift(model_fixtures.NAME, NOW))
    [commands] = redis.round_trips
    versions = [int(c[1].split(":")[-2]) for c in commands]
    assert versions == [1] * 6 + [3] * 6  # WINDOW / BUCKET buckets each; v2 has none


def test_buckets_older_than_the_window_do_not_count(registry: ModelRegistry) -> None:
    redis = FakeRedis()
    count(redis, 3, training_like(100), at_ms=NOW - WINDOW - BUCKET)
    count(redis, 3, training_like(40), at_ms=NOW - WINDOW + BUCKET)
    answer = drift(DriftMonitor(settings(registry), redis, Metrics()))  # type: ignore[arg-type]
    assert by_version(answer)[3].samples == 40


def test_a_shift_of_one_feature_drifts_that_feature(registry: ModelRegistry) -> None:
    redis = FakeRedis()
    shifted = training_like(3_000)
    shifted[: len(shifted) // 2, 0] *= 3  # amount x3 for half the vectors
    count(redis, 3, shifted)
    v3 = by_version(drift(DriftMonitor(settings(registry), redis,  # type: ignore[arg-type]
                                       Metrics())))[3]
    psi = {f.feature: f.psi for f in v3.features}
    assert psi["amount"] is not None and psi["amount"] > 0.2
    assert all(p is not None and p < 0.1 for name, p in psi.items() if name != "amount")


def test_no_samples_and_no_distribution_are_messages_not_errors(
        registry: ModelRegistry) -> None:
    monitor = DriftMonitor(settings(registry, experiment="v2:50,v3:50"),
                           FakeRedis(), Metrics())  # type: ignore[arg-type]
    versions = by_version(drift(monitor))
    assert versions[2].message == ("no training distribution recorded for version 2; retrain "
                                   "with featurestream train")
    assert (versions[2].samples, versions[2].score, versions[2].features) == (0, None, [])
    assert versions[3].message == "no scored samples in the last 1m yet"
    assert versions[3].score_psi is None
    assert all(f.psi is None and f.null_rate is None for f in versions[3].features)


def test_a_version_published_later_is_picked_up(registry: ModelRegistry) -> None:
    monitor = DriftMonitor(settings(registry), FakeRedis(), Metrics())  # type: ignore[arg-type]
    assert [v.version for v in drift(monitor).versions] == [3]
    model_fixtures.publish(registry.directory, 4)
    assert [v.version for v in drift(monitor).versions] == [4]


def request(name: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": f"/v1/models/{name}/drift",
                    "path_params": {"name": name}, "headers": [], "query_string": b""})


class _Reader:
    def __init__(self, monitor: DriftMonitor) -> None:
        self.drift = monitor


@pytest.mark.parametrize("name", ["nope", "../purchase_risk", "purchase-risk", ""])
def test_an_unknown_model_is_a_404_naming_the_registry(registry: ModelRegistry,
                                                       name: str) -> None:
    monitor = DriftMonitor(settings(registry), FakeRedis(), Metrics())  # type: ignore[arg-type]
    with pytest.raises(ApiError) as err:
        asyncio.run(get_model_drift(_Reader(monitor), request(name)))
    assert err.value.status == 404 and err.value.body.error == "unknown_model"
    assert str(registry.directory) in err.value.body.message
    assert "featurestream train" in err.value.body.message


def test_the_endpoint_answers_the_models_drift(registry: ModelRegistry) -> None:
    redis = FakeRedis()
    count(redis, 3, training_like(10), at_ms=int(time.time() * 1000))
    monitor = DriftMonitor(settings(registry), redis, Metrics())  # type: ignore[arg-type]
    response = asyncio.run(get_model_drift(_Reader(monitor), request(model_fixtures.NAME)))
    assert response.status_code == 200
    assert b'"samples":10' in response.body


def samples_of(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples}


def test_gauges_carry_the_answer_under_the_catalogs_names(registry: ModelRegistry) -> None:
    redis = FakeRedis()
    count(redis, 3, training_like(300))
    monitor = DriftMonitor(settings(registry, experiment="v2:50,v3:50"),
                           redis, Metrics())  # type: ignore[arg-type]
    answer = drift(monitor)
    scraped = samples_of(drift_gauges([answer]))
    model = model_fixtures.NAME
    v3 = by_version(answer)[3]
    assert scraped[(catalog.DRIFT_SAMPLES.name, (("model", model), ("version", "3")))] == 300
    assert scraped[(catalog.DRIFT_SAMPLES.name, (("model", model), ("version", "2")))] == 0
    assert v3.score_psi is not None
    assert scraped[(catalog.SCORE_PSI.name, (("model", model), ("version", "3")))] == (
        pytest.approx(v3.score_psi))
    for f in v3.features:
        labels = (("feature", f.feature), ("model", model), ("version", "3"))
        for metric, value in ((catalog.FEATURE_PSI, f.psi),
                              (catalog.FEATURE_NULL_RATE, f.null_rate),
                              (catalog.FEATURE_OUT_OF_RANGE_RATE, f.out_of_range_rate)):
            assert value is not None
            assert scraped[(metric.name, labels)] == pytest.approx(value)
    # v2 has no distribution: no PSI or rate, only its (zero) samples
    assert not [k for k in scraped if ("version", "2") in k[1]
                and k[0] != catalog.DRIFT_SAMPLES.name]
    assert not any(math.isnan(v) for v in scraped.values())


def test_every_gauge_is_in_the_catalog_with_its_labels(registry: ModelRegistry) -> None:
    redis = FakeRedis()
    count(redis, 3, training_like(50))
    text = drift_gauges([drift(DriftMonitor(settings(registry), redis,  # type: ignore[arg-type]
                                            Metrics()))])
    for family in text_string_to_metric_families(text.decode()):
        entry = catalog.by_series(family.name)
        assert entry is not None and entry.kind == catalog.Kind.GAUGE
        for sample in family.samples:
            assert set(sample.labels) == set(entry.labels)


def test_gauges_are_left_out_when_redis_is_down_and_the_error_counted(
        registry: ModelRegistry) -> None:
    redis = FakeRedis()
    redis.down = True
    metrics = Metrics()
    monitor = DriftMonitor(settings(registry), redis, metrics)  # type: ignore[arg-type]
    assert asyncio.run(monitor.gauges()) == b""
    assert metrics.registry.get_sample_value("featurestream_reader_redis_errors_total",
                                             {"kind": "timeout"}) == 1


def test_no_gauges_for_a_scored_model_not_in_the_registry(tmp_path: Path) -> None:
    monitor = DriftMonitor(Settings(models_dir=str(tmp_path)), FakeRedis(),  # type: ignore[arg-type]
                           Metrics())
    assert asyncio.run(monitor.gauges()) == b""
