"""``featurestream submit`` against a second Flink cluster whose TaskManagers run a Python with
PyFlink but without featurestream or its dependencies (``testing.bare_python``): a plain submit
fails with ModuleNotFoundError; ``--ship-deps`` runs the feature job there, against the test
stack's Kafka and Redis, with rows equal to the oracle, and the scoring job with its models from
a registry both the client and the TaskManager read at one path (shared storage)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from featurestream.cli.submit import submit_job
from featurestream.cli.train import TrainingRun, train
from featurestream.devstack import LocalStack
from featurestream.devstack.endpoints import Endpoints
from featurestream.devstack.flink import FlinkCluster
from featurestream.devstack.paths import StackPaths
from featurestream.devstack.private import free_ports, isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.model_registry import ModelRegistry
from testing.bare_python import bare_python
from tests.integration.conftest import cancel_job, job_diagnostics, job_exceptions, wait_for
from tests.integration.test_feature_job import (
    assert_rows_equal_oracle,
    encoded,
    good_events,
    produce,
    wait_until_stable,
)
from tests.integration.test_scoring_job import Topics, capture_ahead, purchases

pytestmark = pytest.mark.flink


@pytest.fixture(scope="module")
def bare_cluster(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Settings]:
    """A second session cluster (same pyflink/bin, its own home, conf and ports) whose
    TaskManager runs the bare Python; its settings (Kafka and Redis: the test stack's)."""
    home = Path(tmp_path_factory.mktemp("remote-cluster"))
    [rest] = free_ports(1)
    settings = stack.settings.replace(
        home=home, flink_rest_url=f"http://127.0.0.1:{rest}",
        python_executable=str(bare_python(home / "bare-python")))
    cluster = FlinkCluster(settings, StackPaths(home), Endpoints.from_settings(settings))
    cluster.start(print)
    try:
        yield settings
    finally:
        cluster.stop(print)


def on_cluster(stack: LocalStack, cluster: Settings, name: str) -> Settings:
    """The test stack's slice ``name`` (topics, Redis prefix), submitted to ``cluster``."""
    return isolated(stack, name).replace(home=cluster.home,
                                         flink_rest_url=cluster.flink_rest_url,
                                         python_executable=cluster.python_executable)


def test_plain_submit_fails_without_the_package(stack: LocalStack,
                                                bare_cluster: Settings) -> None:
    settings = on_cluster(stack, bare_cluster, "remote-plain")
    job_id = submit_job(settings, "features")
    try:
        wait_for(lambda: any("ModuleNotFoundError" in trace
                             for trace in job_exceptions(settings, job_id)),
                 120, "the job to fail with ModuleNotFoundError",
                 lambda: job_diagnostics(settings, job_id))
    finally:
        cancel_job(settings, job_id)


def assert_shipped_job_matches_oracle(settings: Settings, seed: int, count: int) -> None:
    """Submit the feature job with ``--ship-deps``, produce ``count`` events: every row equals
    the oracle and the job never failed."""
    started = time.monotonic()
    job_id = submit_job(settings, "features", with_deps=True)
    submitted = time.monotonic()
    try:
        events, by_user = good_events(seed=seed, count=count)
        produce(settings, encoded(EventEncoder(registry_for(settings.schema_registry)), events))
        rows = wait_until_stable(settings, sorted(by_user), lambda: True,
                                 lambda: job_diagnostics(settings, job_id))
        print(f"--ship-deps: submitted in {submitted - started:.1f} s, rows stable "
              f"{time.monotonic() - submitted:.1f} s later")
        assert_rows_equal_oracle(rows, by_user)
        assert job_exceptions(settings, job_id) == [], "the job failed and restarted"
    finally:
        cancel_job(settings, job_id)


def test_ship_deps_runs_the_feature_job(stack: LocalStack, bare_cluster: Settings) -> None:
    assert_shipped_job_matches_oracle(on_cluster(stack, bare_cluster, "remote-shipped"),
                                      seed=31, count=300)


def test_ship_deps_runs_the_scoring_job_from_a_shared_registry(
        stack: LocalStack, bare_cluster: Settings, tmp_path: Path) -> None:
    # Not the default <home>/models: the client's home is not the TaskManager's.
    settings = on_cluster(stack, bare_cluster, "remote-scoring").replace(
        models_dir=str(tmp_path / "models"), scoring_group="remote-scorer")
    model_text, metadata = train(settings, TrainingRun(events=10_000, users=200, rounds=10))
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    registry.publish(model_text, metadata)
    version = registry.versions()[-1]
    events = purchases("remote", 30, 1_700_000_000_000)
    capture_ahead(settings, events)
    job_id = submit_job(settings, "scoring", with_deps=True)
    try:
        encoder = EventEncoder(registry_for(settings.schema_registry))
        produce(settings, [(e.user_id, encoder.avro(e), e.ts) for e in events])
        topics = Topics(settings)
        wait_for(topics.settled(len(events), 0), 240, "every purchase scored",
                 lambda: job_diagnostics(settings, job_id))
        assert sorted(s["event_id"] for s in topics.scores) == sorted(e.event_id for e in events)
        assert {s["version"] for s in topics.scores} == {version}
        assert job_exceptions(settings, job_id) == [], "the job failed and restarted"
    finally:
        cancel_job(settings, job_id)
