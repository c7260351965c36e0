"""Drift against a real redis-server holding buckets as the scoring job writes them (HINCRBY
of the counter's fields): the reader's endpoint and gauges -- in process and as the real
multi-worker ``featurestream serve`` -- and ``featurestream drift`` agree on the numbers."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from featurestream.settings import Settings
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.telemetry import catalog
from featurestream.udfs.telemetry.drift import DriftCounts, bucket_start, drift_key
from testing import model_fixtures
from testing.reader_fixtures import (
    FEATURESTREAM,
    REPO,
    RedisProcess,
    http,
    reader_in_thread,
    start_serve,
)

pytestmark = pytest.mark.redis

PREFIX = "drift-test:"
MODEL = model_fixtures.NAME
SAMPLES = 2_000


def scored_vectors(shift: float) -> np.ndarray:
    """Vectors like the toy model's training rows; ``amount`` times ``shift`` for half."""
    vectors = np.random.default_rng(5).normal(size=(SAMPLES, len(model_fixtures.FEATURES))) * 10
    vectors[::10, 1:] = np.nan
    vectors[: SAMPLES // 2, 0] *= shift
    return vectors


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisProcess, Path]]:
    """Redis with v2's buckets (amount x3 for half the vectors) and v1's (no shift); the
    registry: v1, v2 (live) with distributions."""
    workdir = tmp_path_factory.mktemp("drift-redis")
    models = workdir / "models"
    for version in (1, 2):
        model_fixtures.publish(models, version)
    server = RedisProcess(workdir)
    server.start()
    client = server.client()
    now = int(time.time() * 1000)
    for version, shift in ((1, 1.0), (2, 3.0)):
        counts = DriftCounts(model_fixtures.FEATURES, model_fixtures.training_distribution())
        counts.add(scored_vectors(shift), np.full(SAMPLES, 0.5))
        # two buckets, as two flushes of the job
        fields = counts.take()
        for at in (now, now - 10_000):
            key = drift_key(PREFIX, MODEL, version, bucket_start(at, 10_000))
            pipe = client.pipeline(transaction=False)
            for name, value in fields.items():
                pipe.hincrby(key, name, value // 2 if at != now else value - value // 2)
            pipe.pexpire(key, 600_000)
            pipe.execute()
    try:
        yield server, models
    finally:
        server.stop()


def env(server: RedisProcess, models: Path) -> dict[str, str]:
    return {"FEATURESTREAM_REDIS_URL": server.url, "FEATURESTREAM_REDIS_KEY_PREFIX": PREFIX,
            "FEATURESTREAM_MODELS_DIR": str(models), "FEATURESTREAM_DRIFT_WINDOW_MS": "60000"}


def gauges(text: str) -> dict[tuple[str, str, str], float]:
    """(name, version, feature) -> value of the drift gauges in a scrape."""
    return {(s.name, s.labels["version"], s.labels.get("feature", "")): s.value
            for family in text_string_to_metric_families(text)
            if family.name.startswith("featurestream_model_") for s in family.samples}


def test_endpoint_gauges_and_cli_show_the_same_drift(stack: tuple[RedisProcess, Path]) -> None:
    server, models = stack
    settings = Settings.from_env(env(server, models))
    with reader_in_thread(settings) as url:
        reply = http("GET", f"{url}/v1/models/{MODEL}/drift")
        scrape = http("GET", f"{url}/metrics").body
        unknown = http("GET", f"{url}/v1/models/nope/drift")
    assert reply.status == 200
    versions = {v["version"]: v for v in reply.body["versions"]}
    assert list(versions) == [1, 2]  # v1: not live, but it has samples
    assert (versions[1]["live"], versions[2]["live"]) == (False, True)
    assert versions[1]["samples"] == versions[2]["samples"] == SAMPLES
    psi = {v: {f["feature"]: f["psi"] for f in versions[v]["features"]} for v in versions}
    assert psi[1]["amount"] < 0.1 < 0.2 < psi[2]["amount"]
    assert unknown.status == 404 and unknown.body["error"] == "unknown_model"

    scraped = gauges(scrape)
    assert scraped[(catalog.FEATURE_PSI.name, "2", "amount")] == pytest.approx(psi[2]["amount"])
    assert scraped[(catalog.DRIFT_SAMPLES.name, "1", "")] == SAMPLES
    assert 'featurestream_reader_request_seconds_bucket' in scrape  # the reader's own, still

    cli = subprocess.run([str(FEATURESTREAM), "drift"], cwd=REPO, capture_output=True, text=True,
                         env={**_plain_environment(), **env(server, models)}, timeout=60)
    assert cli.returncode == 0, cli.stderr
    [amount_v2] = [line for line in cli.stdout.split("\nv2")[1].splitlines()
                   if line.startswith("  amount")]
    assert f"{psi[2]['amount']:.3f}" in amount_v2 and amount_v2.endswith("<- drift")
    assert f"v1: {SAMPLES:,} samples" in cli.stdout


def test_serve_with_workers_exports_each_gauge_once(stack: tuple[RedisProcess, Path],
                                                     tmp_path: Path) -> None:
    server, models = stack
    served = start_serve({**env(server, models), "FEATURESTREAM_SERVE_WORKERS": "2"},
                         tmp_path / "serve.log")
    try:
        for _ in range(4):  # whichever worker answers
            text = http("GET", served.url + "/metrics").body
            families = [f.name for f in text_string_to_metric_families(text)]
            assert families.count(catalog.FEATURE_PSI.name) == 1
            assert gauges(text)[(catalog.FEATURE_PSI.name, "2", "amount")] > 0.2
    finally:
        assert served.stop() == 0


def test_a_version_without_training_distribution_is_a_message(
        stack: tuple[RedisProcess, Path]) -> None:
    server, models = stack
    registry = ModelRegistry(models, MODEL)
    registry.publish(model_fixtures.train_text(),
                     model_fixtures.metadata(3, with_distribution=False))
    try:
        with reader_in_thread(Settings.from_env(env(server, models))) as url:
            reply = http("GET", f"{url}/v1/models/{MODEL}/drift")
    finally:
        for path in (registry.model_path(3), registry.sidecar_path(3)):
            path.unlink()
    assert reply.status == 200
    [v3] = [v for v in reply.body["versions"] if v["version"] == 3]
    assert v3["live"] and v3["samples"] == 0 and v3["score_psi"] is None
    assert "no training distribution recorded for version 3" in v3["message"]


def _plain_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTREAM_")}
