"""The status page in a real headless Chromium against the running feature job: a known number
of good and bad events in, the reader's ``/v1/status`` counts them, and the page (after its
script ran) shows the same numbers, with a model of two versions in an experiment and their
drift counts in Redis (as the scoring job writes them; the scoring job itself is tested in
test_scoring_job.py and test_drift.py); its screenshot (and the status it showed) are kept under
build/test-artefacts/."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.commands import job_reports, model_report, status_lines
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.flink_rest import FlinkRest
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.telemetry.drift import DriftCounts, bucket_start, drift_key
from testing import model_fixtures
from testing.reader_fixtures import http, reader_in_thread
from tests.integration.conftest import cancel_job, job_diagnostics, wait_for

pytestmark = pytest.mark.flink

EXPERIMENT = "v1:70,v2:30"

GOOD = 500
BAD = {b"this is not an event": "MalformedRecord", b"[1, 2, 3]": "MalformedRecord",
       b"\x00\x00\x00\x03\xe7\x02x": "UnknownSchemaId"}
ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artefacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class PageNumbers(HTMLParser):
    """Every ``data-metric`` element's ``data-value``, keyed by the data-job / data-model /
    data-reason / data-split / data-feature around it and the metric."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr"})
    SCOPES = ("data-job", "data-model", "data-version", "data-reason", "data-split",
              "data-feature", "data-freshness")

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, ...], str] = {}
        self._stack: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if "data-metric" in found and "data-value" in found:
            scope = tuple(f"{k}={a[k]}" for a in [*self._stack, found] for k in self.SCOPES
                          if k in a)
            self.values[(*scope, found["data-metric"])] = found["data-value"]
        if tag not in self.VOID:
            self._stack.append(found)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self._stack:
            self._stack.pop()


def chromium(*args: str) -> str:
    """Headless Chromium's stdout; the page gets 6 s of virtual time for its polls."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--virtual-time-budget=6000", "--window-size=1400,1000", *args],
        capture_output=True, text=True, timeout=90, check=True)
    return done.stdout


def number(text: str) -> float | None:
    return float(text) if text else None


def seed_drift(settings: Settings, registry: ModelRegistry, seed: int) -> None:
    """Each version's drift counts in the current Redis bucket, as the scoring job adds them:
    vectors like the training ones, the first feature shifted for v2."""
    client = redis.Redis.from_url(settings.redis_url)
    rng = np.random.default_rng(seed)
    start = bucket_start(int(time.time() * 1000), settings.drift_bucket_ms)
    for version in registry.versions():
        metadata = registry.metadata(version)
        assert metadata.training_distribution is not None
        counts = DriftCounts(metadata.features, metadata.training_distribution)
        vectors = rng.normal(size=(300, len(metadata.features))) * 10
        vectors[:, 0] += 15 * (version - 1)
        counts.add(vectors, rng.uniform(size=300))
        key = drift_key(settings.redis_key_prefix, settings.model_name, version, start)
        pipe = client.pipeline(transaction=False)
        for field, count in counts.take().items():
            pipe.hincrby(key, field, count)
        pipe.expire(key, 3600)
        pipe.execute()


def test_page_shows_what_the_status_says(stack: LocalStack, tmp_path: Path) -> None:
    settings = isolated(stack, "statuspage", models_dir=str(tmp_path), experiment=EXPERIMENT)
    registry = model_fixtures.publish(tmp_path, 1)
    model_fixtures.publish(tmp_path, 2, seed=1)
    seed_drift(settings, registry, seed=16)
    job_id = submit_job(settings, "features")
    try:
        config = StreamConfig(users=50, items=100, events_per_second=50.0, seed=16)
        events = list(itertools.islice(generate_events(config), GOOD))
        encoder = EventEncoder(registry_for(settings.schema_registry))
        with EventProducer(settings) as producer:
            for event in events:
                producer.send(event.user_id, encoder.json(event), event.ts)
            for raw in BAD:
                producer.send("bad", raw, events[-1].ts)
        assert producer.failed == 0
        expected_dead: dict[str, float] = {}
        for reason in BAD.values():
            expected_dead[reason] = expected_dead.get(reason, 0) + 1

        with reader_in_thread(settings) as url:
            def features() -> dict[str, Any] | None:
                body = http("GET", url + "/v1/status").body
                return next((j for j in body["jobs"] if j["job"] == "features"), None)

            def counted() -> bool:
                # the keyed operator's metrics too: rows written and the freshness histogram
                job = features()
                return (job is not None and job["events_in"] == GOOD + len(BAD)
                        and job["dead_letters"] == expected_dead and job["output_total"] > 0
                        and job["freshness"]["append"]["p99_s"] is not None)

            def diagnostics() -> str:
                rows = len(redis.Redis.from_url(settings.redis_url).keys(
                    f"{settings.redis_key_prefix}user:*"))
                rest = FlinkRest(settings.flink_rest_url)
                metrics = rest.job_metrics(rest.job(job_id), ())
                return (f"{features()}\n{rows} user rows in Redis\n{metrics}\n"
                        + job_diagnostics(settings, job_id))

            wait_for(counted, 120, "the status to count every event", diagnostics)
            status = http("GET", url + "/v1/status").body
            dom = chromium("--dump-dom", url + "/ui")
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            (ARTEFACTS / "status.json").write_text(json.dumps(status, indent=2))
            (ARTEFACTS / "status-diagnostics.txt").write_text(diagnostics())
            shot = ARTEFACTS / "status-page.png"
            chromium(f"--screenshot={shot}", url + "/ui")

        # featurestream status: the job's health line (its rates over a second) and the model's
        lines = status_lines(stack.status(), job_reports(FlinkRest(settings.flink_rest_url)),
                             [model_report(settings)], int(time.time() * 1000))
        (ARTEFACTS / "status.txt").write_text("\n".join(lines) + "\n")
        health = lines[lines.index(next(line for line in lines if job_id in line)) + 1]
        assert f"{len(BAD)} in all" in health and "checkpoints" in health, lines
        assert any(line.startswith(f"model  {settings.model_name}") for line in lines), lines

        parser = PageNumbers()
        parser.feed(dom)
        shown = parser.values
        job = next(j for j in status["jobs"] if j["job"] == "features")
        assert number(shown[("data-job=features", "events_in")]) == job["events_in"]
        assert job["events_in"] == GOOD + len(BAD)
        assert number(shown[("data-job=features", "output_total")]) == job["output_total"]
        for reason, count in expected_dead.items():
            assert number(shown[("data-job=features", f"data-reason={reason}",
                                 "dead_letters")]) == count
        [model] = status["models"]
        assert model["split"] == {"v1": 0.7, "v2": 0.3}
        scope = f"data-model={model['model']}"
        for label, share in model["split"].items():
            assert number(shown[(scope, f"data-split={label}", "share")]) == share
        for version in model["drift"]["versions"]:
            where = (scope, f"data-version=v{version['version']}")
            assert number(shown[(*where, "samples")]) == version["samples"] == 300
            assert number(shown[(*where, "score_psi")]) == version["score_psi"]
            for feature in version["features"]:
                assert number(shown[(*where, f"data-feature={feature['feature']}", "psi")]) \
                    == feature["psi"]
        worst = max(f["psi"] for v in model["drift"]["versions"] for f in v["features"])
        assert worst > 0.2  # v2's shifted first feature
        assert shown[("flink_state",)] == "reachable"
        assert shot.stat().st_size > 10_000  # a real picture, not an empty page
    finally:
        cancel_job(settings, job_id)
