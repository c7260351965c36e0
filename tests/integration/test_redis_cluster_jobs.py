"""Both jobs unchanged on a real Redis Cluster (3 masters, 3 replicas;
``FEATURESTREAM_REDIS_CLUSTER=true``), beside the private stack's Kafka and Flink: every row
equals the independent oracle, every purchase is scored once from the row captured for it and
each user's latest score is in Redis; then, the cluster emptied, ``featurestream
rematerialize`` writes every row back from the job's state, equal to the oracle again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.private import isolated
from featurestream.flink_rest import FlinkRest
from featurestream.jobs import JOB_NAMES
from featurestream.jobs.redis_target import sync_client
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.store.redis_layout import decode_scores, score_key
from testing import model_fixtures
from testing.reader_fixtures import FEATURESTREAM, REPO
from testing.redis_cluster import LocalRedisCluster
from tests.integration.conftest import cancel_job, job_diagnostics, job_exceptions, wait_for
from tests.integration.test_feature_job import (
    assert_rows_equal_oracle,
    encoded,
    good_events,
    produce,
    wait_until_stable,
)
from tests.integration.test_scoring_job import Topics, assert_scored_from_captures

pytestmark = pytest.mark.flink


def test_both_jobs_on_a_redis_cluster_match_the_oracle_and_rematerialize(
        stack: LocalStack, redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    redis_cluster.flush()
    settings = isolated(stack, "rcluster", redis_url=redis_cluster.url, redis_cluster=True,
                        models_dir=str(tmp_path / "models"), model_name=model_fixtures.NAME)
    model_fixtures.publish(settings.effective_models_dir, 1)
    events, by_user = good_events(seed=53, count=1200)
    purchases = {e.event_id: e for e in events if e.event_type == "purchase"}
    jobs = [submit_job(settings, "features")]
    try:
        jobs.append(submit_job(settings, "scoring"))
        produce(settings, encoded(EventEncoder(registry_for(settings.schema_registry)), events))

        def diagnostics() -> str:
            return "\n".join(job_diagnostics(settings, job) for job in jobs)

        users = sorted(by_user)
        assert_rows_equal_oracle(wait_until_stable(settings, users, lambda: True, diagnostics),
                                 by_user)
        topics = Topics(settings)
        wait_for(topics.settled(len(purchases), 0), 120, "every purchase scored", diagnostics)
        assert sorted(s["event_id"] for s in topics.scores) == sorted(purchases)  # each once
        client = sync_client(settings.redis_url, cluster=True)
        assert_scored_from_captures(settings, client, topics.scores, purchases)
        for user in {s["user_id"] for s in topics.scores}:
            newest = max((s["as_of"], s["scored_at"]) for s in topics.scores
                         if s["user_id"] == user)
            stored = decode_scores(client.hgetall(score_key(settings.redis_key_prefix, user,
                                                            cluster=True)))
            assert (stored[model_fixtures.NAME].as_of, stored[model_fixtures.NAME].scored_at) \
                == newest, user
        assert [job_exceptions(settings, job) for job in jobs] == [[], []], diagnostics()

        redis_cluster.flush()
        out = subprocess.run([str(FEATURESTREAM), "rematerialize", "--timeout", "120"], cwd=REPO,
                             env={**os.environ, **settings.to_env()}, capture_output=True,
                             text=True, check=False, timeout=240)
        assert out.returncode == 0, out.stdout + out.stderr
        jobs[0] = FlinkRest(settings.flink_rest_url).running_job(JOB_NAMES["features"]) or jobs[0]
        assert_rows_equal_oracle(wait_until_stable(settings, users, lambda: True, diagnostics),
                                 by_user)
    finally:
        for job in jobs:
            cancel_job(settings, job)
