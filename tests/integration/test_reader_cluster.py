"""The reader against a real Redis Cluster (3 masters, 3 replicas; ``testing.redis_cluster``)
answers every read route exactly as against a single redis-server seeded with the same rows
and scores (the jobs' layout, hash-tagged keys on the cluster), batches spanning every master
included; hostile ids read nothing outside their entity's keys on any node; a master lost is
a 503 until its replica takes over, then reads recover; the start-up refusal of cache
invalidation names the settings. The routing logic without a cluster:
``tests/unit/test_cluster_routing.py``; a failover under load:
``tests/faults/test_redis_cluster_failover.py``."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from featurestream.serving.cluster_routing import command_slot
from featurestream.serving.redis_cluster_client import check_cluster_settings
from featurestream.settings import Settings, SettingsError
from featurestream.udfs.store.redis_layout import Score, user_key
from featurestream.udfs.telemetry.drift import DriftCounts, bucket_start, drift_key
from testing import model_fixtures
from testing.reader_fixtures import (
    RedisProcess,
    feature_row,
    http,
    reader_in_thread,
    seed_rows,
    seed_score,
    wait_until,
    write_item_definitions,
)
from testing.redis_cluster import LocalRedisCluster
from testing.redis_cluster import redis_cluster as private_cluster

pytestmark = pytest.mark.redis

PREFIX = "fs:"
NOW = int(time.time() * 1000)
TS = 1_700_000_000_000 + 13 * 3_600_000
USERS = [f"user-{i}" for i in range(60)] + ["user.name@example.com", "a:b@c_d-e.f"]
ROWS = {user: feature_row(NOW - 1_000 * (i + 1), version=i + 1, clicks_1h=i,
                          spend_1h=0.5 * i, ctr_1h=None if i % 3 else i / 100)
        for i, user in enumerate(USERS)}
ITEMS: dict[str, dict[str, Any]] = {
    f"shop|sku:{i}": {"as_of": NOW - 3_000, "version": 1, "views_1h": i,
                      "last_buyer": USERS[i], "recent_buyers": USERS[:i % 4],
                      "buyers_24h": i % 4} for i in range(20)}
SCORED = USERS[:12]
VOLATILE = frozenset({"staleness_ms", "seconds_since_last_event", "timing", "cache_age_ms"})


def seed(client: Any, cluster: bool) -> None:
    """The rows, scores and drift buckets, written as the jobs write them."""
    seed_rows(client, PREFIX, ROWS, updated_at=NOW - 500, cluster=cluster)
    counts = DriftCounts(model_fixtures.FEATURES, model_fixtures.training_distribution())
    counts.add(np.random.default_rng(5).normal(size=(400, len(model_fixtures.FEATURES))) * 10,
               np.full(400, 0.5))
    fields = counts.take()
    bucket_ms = Settings().drift_bucket_ms
    now = int(time.time() * 1000)  # not NOW (import time): the window ends at the request
    for back in range(4):  # four buckets of the window, on whichever slots their keys have
        key = drift_key(PREFIX, model_fixtures.NAME, 1,
                        bucket_start(now - back * bucket_ms, bucket_ms))
        client.hset(key, mapping={name: value // 4 for name, value in fields.items()})
    seed_rows(client, PREFIX, ITEMS, updated_at=NOW - 500, entity="item", cluster=cluster)
    for i, user in enumerate(SCORED):
        for model in ("purchase_risk", "churn"):
            seed_score(client, PREFIX, user, Score(model, 1 + i % 2, "latest", i / 20,
                                                   f"evt-{i}", NOW - 300, NOW - 1_000),
                       cluster=cluster)


@pytest.fixture(scope="module")
def models_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="cluster-models-"))
    model_fixtures.publish(directory, 1)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def definitions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_item_definitions(tmp_path_factory.mktemp("definitions"))


def settings_for(url: str, models: Path, definitions: Path, **changes: object) -> Settings:
    return Settings().replace(**{
        "redis_url": url, "redis_key_prefix": PREFIX, "redis_timeout_ms": 500,
        "max_batch_size": 100, "models_dir": str(models), "definitions": str(definitions),
        "cache_ttl_ms": 0, **changes})


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
           definitions: Path) -> Iterator[str]:
    """The reader over one redis-server."""
    server = RedisProcess(tmp_path_factory.mktemp("single-redis"))
    server.start()
    try:
        seed(server.client(), cluster=False)
        with reader_in_thread(settings_for(server.url, models_dir, definitions)) as url:
            yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def clustered(redis_cluster: LocalRedisCluster, models_dir: Path,
              definitions: Path) -> Iterator[str]:
    """The reader over the cluster, seeded with the same rows."""
    redis_cluster.flush()
    seed(redis_cluster.client(), cluster=True)
    with reader_in_thread(settings_for(redis_cluster.url, models_dir, definitions,
                                       redis_cluster=True)) as url:
        yield url


def stable(body: Any) -> Any:
    """``body`` without what depends on the moment of the request."""
    if isinstance(body, dict):
        return {k: stable(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [stable(v) for v in body]
    return body


def same_answer(single: str, clustered: str, method: str, path: str,
                body: dict | None = None) -> Any:
    """The two readers' answers, equal but for the moment; the cluster's body."""
    one = http(method, single + path, body)
    many = http(method, clustered + path, body)
    assert (many.status, stable(many.body)) == (one.status, stable(one.body)), path
    return many


def test_the_seeded_users_span_every_master(redis_cluster: LocalRedisCluster) -> None:
    """So a batch below is really split over the nodes."""
    client = redis_cluster.client()
    owners = {client.nodes_manager.get_node_from_slot(
        command_slot(("HGETALL", user_key(PREFIX, u, cluster=True)))).port for u in USERS}
    assert len(owners) == 3


def test_single_reads_equal_a_single_redis(single: str, clustered: str) -> None:
    for user in [*USERS[:5], "user.name@example.com", "nobody"]:
        reply = same_answer(single, clustered, "GET", f"/v1/features/{user}")
        assert reply.status == (404 if user == "nobody" else 200)
    same_answer(single, clustered, "GET", "/v1/features/user-7?names=ctr_1h,clicks_1h")
    for item in ("shop|sku:3", "shop|sku:19", "nope"):
        same_answer(single, clustered, "GET", f"/v1/features/item/{item}")


def test_batches_over_every_master_equal_a_single_redis(single: str, clustered: str) -> None:
    ids = [*reversed(USERS), "nobody", USERS[3], "ghost"]
    reply = same_answer(single, clustered, "POST", "/v1/features/batch", {"user_ids": ids})
    assert [r["user_id"] for r in reply.body["results"]] == ids
    assert [r["found"] for r in reply.body["results"]] == [i in ROWS for i in ids]
    assert reply.body["results"][0]["features"]["clicks_1h"] == len(USERS) - 1
    items = [*ITEMS, "gone"]
    same_answer(single, clustered, "POST", "/v1/features/item/batch",
                {"ids": items, "names": ["recent_buyers", "views_1h"]})
    same_answer(single, clustered, "POST", "/v1/features/user/batch", {"ids": USERS[::3]})


def test_scores_equal_a_single_redis(single: str, clustered: str) -> None:
    for user in [*SCORED, USERS[-1]]:
        reply = same_answer(single, clustered, "GET", f"/v1/scores/{user}")
        assert reply.status == (200 if user in SCORED else 404)


def test_predictions_equal_a_single_redis(single: str, clustered: str) -> None:
    requests = [{"user_id": user, "type": "purchase", "amount": 12.5, "ts": TS}
                for user in [*USERS[:40:4], "nobody"]]
    for request in requests:
        reply = same_answer(single, clustered, "POST", "/v1/predict", request)
        assert reply.status == 200, reply.body
    batch = same_answer(single, clustered, "POST", "/v1/predict/batch", {"requests": requests})
    assert batch.status == 200 and len(batch.body["results"]) == len(requests)


def test_drift_over_buckets_of_every_slot_equals_a_single_redis(single: str,
                                                                clustered: str) -> None:
    """The window's buckets (one key each, spread over the slots) read from every master."""
    path = f"/v1/models/{model_fixtures.NAME}/drift"
    one, many = http("GET", single + path), http("GET", clustered + path)
    assert one.status == many.status == 200, many.body
    assert many.body["versions"][0]["samples"] == 400 // 4 * 4, many.body
    one.body.pop("as_of")  # the moment of the request
    many.body.pop("as_of")
    assert many.body == one.body


def test_hostile_ids_read_nothing_outside_their_keys_on_any_node(
        redis_cluster: LocalRedisCluster, clustered: str, tmp_path: Path) -> None:
    """MONITOR on every node while ids that spell other keys are asked for: every key read is
    the asked entity's hash-tagged key under the prefix."""
    monitors = []
    for node in redis_cluster.nodes:
        log = (tmp_path / f"monitor-{node.port}.log").open("w")
        monitors.append((subprocess.Popen(["redis-cli", "-p", str(node.port), "monitor"],
                                          stdout=log, stderr=subprocess.STDOUT), log))
    try:
        wait_until(lambda: all((tmp_path / f"monitor-{n.port}.log").read_text().startswith("OK")
                               for n in redis_cluster.nodes), 10, "MONITOR on every node")
        hostile = ["user:user-1", "score:user-1", ":user-1", "{user-1}", "a}b", "x{", "}",
                   "..%2Fuser-1", "fs:user:{user-1}", "*", "user-1%00"]
        for entity_id in hostile:
            assert http("GET", clustered + f"/v1/features/item/{entity_id}").status in (400, 404)
            assert http("GET", clustered + f"/v1/features/{entity_id}").status in (400, 404)
            assert http("GET", clustered + f"/v1/scores/{entity_id}").status in (400, 404)
        assert http("POST", clustered + "/v1/features/item/batch",
                    {"ids": hostile}).status in (200, 400)
        assert http("GET", clustered + "/v1/features/item/shop|sku:1").status == 200  # a marker
        wait_until(lambda: any("shop|sku:1}" in (tmp_path / f"monitor-{n.port}.log").read_text()
                               for n in redis_cluster.nodes), 10, "the marker read")
    finally:
        for process, log in monitors:
            process.terminate()
            process.wait(5)
            log.close()
    keys = [line.split('"')[3] for node in redis_cluster.nodes
            for line in (tmp_path / f"monitor-{node.port}.log").read_text().splitlines()
            if '"HGETALL"' in line]
    assert keys, "MONITOR saw no reads"
    allowed = ("fs:item:{", "fs:user:{", "fs:score:{")
    for key in keys:
        assert key.startswith(allowed) and key.endswith("}"), key
        tagged = key.split(":", 2)[2]
        assert tagged.count("{") == 1 and tagged.count("}") == 1, key


def test_cache_invalidation_on_a_cluster_is_refused_naming_the_settings(
        redis_cluster: LocalRedisCluster) -> None:
    on = Settings().replace(redis_url=redis_cluster.url, redis_cluster=True)
    with pytest.raises(SettingsError, match="FEATURESTREAM_CACHE_INVALIDATION"):
        check_cluster_settings(on)


@pytest.mark.parametrize("lose", ["stop", "freeze"])
def test_a_lost_master_is_a_503_until_its_replica_takes_over_then_reads_recover(
        models_dir: Path, definitions: Path, lose: str) -> None:
    """A private cluster (this one loses a node): a master stopped (connections refused) or
    frozen (SIGSTOP: silent), a batch over every master is a 503 ``redis_unavailable`` (never
    a 500 or a hang) until the cluster promotes its replica; then the same reader, without a
    restart, answers it in full again."""
    with private_cluster() as cluster:
        seed(cluster.client(), cluster=True)
        settings = settings_for(cluster.url, models_dir, definitions, redis_cluster=True,
                                redis_timeout_ms=250, breaker_reset_ms=200)
        with reader_in_thread(settings) as url:
            def batch() -> Any:
                return http("POST", url + "/v1/features/batch", {"user_ids": USERS}, timeout=5)

            healthy = batch()
            assert healthy.status == 200
            master, _ = cluster.master_and_replica()
            master.stop() if lose == "stop" else master.freeze()
            statuses = []

            def served_again() -> bool:
                reply = batch()
                assert reply.status in (200, 503), reply.body  # a hang: http's timeout raises
                if reply.status == 503:
                    assert reply.body["error"] == "redis_unavailable", reply.body
                statuses.append(reply.status)
                return reply.status == 200

            wait_until(served_again, 30, "the replica promoted and the batch served")
            assert statuses[0] == 503  # the loss was seen before the promotion
            assert stable(batch().body) == stable(healthy.body)
