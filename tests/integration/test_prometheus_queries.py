"""The Grafana dashboard's queries and the alert rules against a real Prometheus (Debian's
``prometheus``, installed with promtool by scripts/setup.sh) scraping the real feature and
scoring jobs (Flink's Prometheus reporters of the local stack) and the reader, while events
flow: every query returns series, the freshness quantiles are finite, and every rule
evaluates without error. The unit tests check names against the catalog; this checks the
catalog's names and the queries' label use against what is actually scraped."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.endpoints import Endpoints
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from testing.reader_fixtures import free_port, http, reader_in_thread
from tests.integration.conftest import cancel_job, wait_for
from tests.integration.test_scoring_job import publish_trained
from tests.promql import dashboard_queries

pytestmark = pytest.mark.flink

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "featurestream.json"
# Grafana's variables as the dashboard's defaults resolve them (scrapes here are 1 s apart).
GRAFANA_VALUES = {"$__rate_interval": "20s", "$model": ".*"}
# Counters with a label registered only when they first count: no series in a healthy run.
EMPTY_WHEN_HEALTHY = {"Fallbacks and shadow failures B", "Reader Redis errors and cache A",
                      "Reader circuit breakers B", "Reader fallbacks served A"}  # transitions
NOT_ON_THE_LOCAL_STACK = {"Consumer lag B"}  # the production stack's Kafka exporter
BAD_RECORDS = (b"this is not an event", b"[1, 2, 3]")


@contextmanager
def prometheus(workdir: Path, targets: dict[str, list[str]]) -> Iterator[str]:
    """A Prometheus server scraping ``targets`` (scrape job -> host:port) every second with
    the production alert rules; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/setup.sh (Debian's prometheus "
                    "package, which also brings promtool)")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(RULES)],
              "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]}
                                 for job, hosts in targets.items()]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(url), 30, "Prometheus to start",
                 lambda: (workdir / "prometheus.log").read_text()[-3000:])
        yield url
    finally:
        process.terminate()
        process.wait(30)


def ready(url: str) -> bool:
    try:
        return http("GET", url + "/-/ready", timeout=2).status == 200
    except OSError:
        return False


def query(url: str, expr: str) -> list[dict[str, Any]]:
    reply = http("GET", f"{url}/api/v1/query?{urlencode({'query': expr})}")
    assert reply.status == 200 and reply.body["status"] == "success", (expr, reply.body)
    result: list[dict[str, Any]] = reply.body["data"]["result"]
    return result


def resolved(expr: str) -> str:
    for variable, value in GRAFANA_VALUES.items():
        expr = expr.replace(variable, value)
    return expr


@contextmanager
def producing(settings: Any) -> Iterator[None]:
    """Generated events at 100/s in real time (event time = now) until the block ends, in a
    thread, and a few bad records first."""
    stop = threading.Event()
    errors: list[BaseException] = []
    encoder = EventEncoder(registry_for(settings.schema_registry))
    config = StreamConfig(users=200, items=500, events_per_second=100.0, seed=16,
                          start_ts=int(time.time() * 1000))

    def run() -> None:
        try:
            with EventProducer(settings) as producer:
                for raw in BAD_RECORDS:
                    producer.send("bad", raw, config.start_ts)
                for event in generate_events(config):
                    if stop.wait(max(0.0, (event.ts - time.time() * 1000) / 1000)):
                        break
                    producer.send(event.user_id, encoder.json(event), event.ts)
            assert producer.failed == 0, producer.first_error
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    if errors:
        raise errors[0]


def test_dashboard_queries_and_alert_rules_on_the_running_pipeline(
        stack: LocalStack, tmp_path: Path) -> None:
    settings = isolated(stack, "promq", models_dir=str(tmp_path / "models"))
    publish_trained(settings, seed=1)
    endpoints = Endpoints.from_settings(stack.settings)
    jobs = [submit_job(settings, "features"), submit_job(settings, "scoring")]
    board = json.loads(DASHBOARD.read_text())
    try:
        with reader_in_thread(settings) as reader, prometheus(tmp_path, {
                "flink-jobmanager": [endpoints.flink_jobmanager_metrics.address],
                "flink-taskmanager": [endpoints.flink_taskmanager_metrics.address],
                "reader": [reader.removeprefix("http://")]}) as url, producing(settings):
            for user in ("u1", "u2", "nobody"):
                http("GET", f"{reader}/v1/features/{user}")
                http("GET", f"{reader}/v1/scores/{user}")
            http("POST", f"{reader}/v1/features/batch", {"user_ids": ["u1", "u2"]})

            expected = [q for q in dashboard_queries(board)
                        if q.where not in EMPTY_WHEN_HEALTHY | NOT_ON_THE_LOCAL_STACK]

            def empty() -> list[str]:
                return [q.where for q in expected if not query(url, resolved(q.expr))]

            wait_for(lambda: not empty(), 120, "every dashboard query to return series",
                     lambda: f"empty: {empty()}")

            p99 = query(url, resolved(next(q.expr for q in expected
                                           if q.where == "Freshness p50 / p99 B")))
            assert all(math.isfinite(float(s["value"][1])) for s in p99), p99
            routes = {s["metric"]["route"] for s in query(url, resolved(next(
                q.expr for q in expected if q.where == "Reader p99 by route A")))}
            assert {"/v1/features/{user_id}", "/v1/scores/{user_id}",
                    "/v1/features/batch"} <= routes

            rules = http("GET", url + "/api/v1/rules").body["data"]["groups"]
            evaluated = {r["name"]: (r["health"], r.get("lastError", ""))
                         for group in rules for r in group["rules"]}
            assert evaluated and all(health == ("ok", "") for health in evaluated.values()), \
                evaluated
    finally:
        for job_id in jobs:
            cancel_job(settings, job_id)
