"""The reader over HTTP against a real redis-server seeded in the jobs' layout: every route,
every error path, Redis stopped and frozen mid-test, auth on and off, the cache, TLS with a
password, the real ``featurestream serve`` process, and every answer checked against the
reader's own ``/openapi.json``."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from featurestream.serving.contract import body_limit
from featurestream.settings import Settings
from featurestream.udfs.store.redis_layout import Score
from testing import model_fixtures
from testing.reader_fixtures import (
    FEATURE_NAMES,
    ITEM_FEATURES,
    RedisProcess,
    declared_oversized_post,
    feature_row,
    free_port,
    http,
    reader_in_thread,
    seed_rows,
    seed_score,
    start_serve,
    wait_until,
    write_item_definitions,
)

pytestmark = pytest.mark.redis

PREFIX = "fs:"
TOKEN = "reader-test-token-0123456789"
NOW = int(time.time() * 1000)
ROWS = {
    "user-1": feature_row(NOW - 2_000, version=3, clicks_1h=4, spend_24h=12.25, ctr_1h=0.5,
                          last_event_ts=NOW - 5_000),
    "user-2": feature_row(NOW - 60_000, avg_spend_1h=None),
    "user.name@example.com": feature_row(NOW - 1_000),
}
SCORES = [
    Score("purchase_risk", 3, "v3", 0.25, "evt-1", NOW - 500, NOW - 2_000),
    Score("churn", 1, "latest", 0.75, "evt-2", NOW - 400, NOW - 3_000),
]


ITEMS: dict[str, dict[str, Any]] = {
    "sku-1": {"as_of": NOW - 3_000, "version": 2, "views_1h": 7, "last_buyer": "user-1",
              "recent_buyers": ["user-1", "user-2", "user.name@example.com"], "buyers_24h": 3,
              "warming_up": {"buyers_24h": NOW + 60_000}},
    "shop|sku:2": {"as_of": NOW - 4_000, "version": 1, "views_1h": 0, "last_buyer": None,
                   "recent_buyers": [], "buyers_24h": 0},
}


# A model registry for the drift route (published by the redis_server fixture).
MODELS_DIR = Path(tempfile.mkdtemp(prefix="reader-models-"))


def seed(redis_server: RedisProcess) -> None:
    client = redis_server.client()
    seed_rows(client, PREFIX, ROWS, updated_at=NOW - 1_500)
    seed_rows(client, PREFIX, ITEMS, updated_at=NOW - 1_200, entity="item")
    for score in SCORES:
        seed_score(client, PREFIX, "user-1", score)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("reader-redis"))
    server.start()
    seed(server)
    model_fixtures.publish(MODELS_DIR, 1)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(MODELS_DIR, ignore_errors=True)


def settings_for(redis_server: RedisProcess, **changes: object) -> Settings:
    defaults: dict[str, object] = {"redis_url": redis_server.url, "redis_key_prefix": PREFIX,
                                   "redis_timeout_ms": 100, "max_batch_size": 50,
                                   "models_dir": str(MODELS_DIR),
                                   "cache_ttl_ms": 0}  # the cache: test_reader_cache.py
    return Settings().replace(**{**defaults, **changes})


@pytest.fixture(scope="module")
def reader(redis_server: RedisProcess) -> Iterator[str]:
    with reader_in_thread(settings_for(redis_server)) as url:
        yield url


@pytest.fixture(scope="module")
def entity_reader(redis_server: RedisProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A reader of definitions with users and items."""
    definitions = write_item_definitions(tmp_path_factory.mktemp("definitions"))
    with reader_in_thread(settings_for(redis_server, definitions=str(definitions))) as url:
        yield url


# --- features ------------------------------------------------------------------------------

def test_get_features_returns_the_stored_row_with_freshness(reader: str) -> None:
    before = int(time.time() * 1000)
    reply = http("GET", reader + "/v1/features/user-1")
    after = int(time.time() * 1000)
    assert reply.status == 200
    body = reply.body
    row = ROWS["user-1"]
    assert body["user_id"] == "user-1"
    assert body["as_of"] == row["as_of"]
    assert body["updated_at"] == NOW - 1_500
    assert body["features"] == {name: row[name] for name in FEATURE_NAMES}
    as_of, last = row["as_of"], row["last_event_ts"]
    assert isinstance(as_of, int) and isinstance(last, int)
    assert before - as_of <= body["staleness_ms"] <= after - as_of
    assert (before - last) / 1000 <= body["seconds_since_last_event"] <= (after - last) / 1000


def test_names_select_features_in_the_order_asked(reader: str) -> None:
    reply = http("GET", reader + "/v1/features/user-1?names=spend_24h,clicks_1h,spend_24h")
    assert reply.status == 200
    assert list(reply.body["features"].items()) == [("spend_24h", 12.25), ("clicks_1h", 4)]
    assert reply.body["as_of"] == ROWS["user-1"]["as_of"]


def test_unknown_feature_names_are_a_400_listing_the_valid_ones(reader: str) -> None:
    reply = http("GET", reader + "/v1/features/user-1?names=clicks_1h,nope,as_of")
    assert reply.status == 400
    assert reply.body["error"] == "unknown_feature"
    assert "nope" in reply.body["message"] and "as_of" in reply.body["message"]
    assert reply.body["valid"] == list(FEATURE_NAMES)


def test_unknown_user_is_a_404_with_a_json_body(reader: str) -> None:
    reply = http("GET", reader + "/v1/features/nobody")
    assert reply.status == 404
    assert reply.body == {"error": "unknown_user", "message": "no features for user 'nobody'"}


@pytest.mark.parametrize("user_id", [
    "x" * 129, "a%20b", "a*", "%2A", "a%0D%0AFLUSHALL", "%C3%A9", "a%00", "a;b", "%7Bx%7D",
])
def test_invalid_user_ids_are_a_400(reader: str, user_id: str) -> None:
    for path in ("/v1/features/", "/v1/scores/"):
        reply = http("GET", reader + path + user_id)
        assert reply.status == 400, (path, user_id, reply.body)
        assert reply.body["error"] == "invalid_user_id"
        assert "1-128 characters" in reply.body["message"]


def test_ids_with_allowed_punctuation_are_read(reader: str) -> None:
    reply = http("GET", reader + "/v1/features/user.name@example.com")
    assert reply.status == 200 and reply.body["user_id"] == "user.name@example.com"


def test_unknown_paths_and_methods_are_json(reader: str) -> None:
    missing = http("GET", reader + "/v1/nothing/here")
    assert missing.status == 404 and missing.body["error"] == "not_found"
    slash = http("GET", reader + "/v1/features/a%2F..%2Fb")  # decodes to a path with slashes
    assert slash.status == 404 and slash.body["error"] == "not_found"
    wrong = http("DELETE", reader + "/v1/features/user-1")
    assert wrong.status == 405 and wrong.body["error"] == "method_not_allowed"


# --- entities ------------------------------------------------------------------------------

def test_an_item_is_served_with_typed_values_and_warming_up(entity_reader: str) -> None:
    reply = http("GET", entity_reader + "/v1/features/item/sku-1")
    assert reply.status == 200, reply.body
    item = ITEMS["sku-1"]
    assert {k: reply.body[k] for k in ("entity", "id", "as_of", "updated_at")} == {
        "entity": "item", "id": "sku-1", "as_of": item["as_of"], "updated_at": NOW - 1_200}
    assert reply.body["features"] == {name: item[name] for name in ITEM_FEATURES}
    assert reply.body["warming_up"] == {"buyers_24h": NOW + 60_000}
    assert reply.body["seconds_since_last_event"] is None  # items declare no last_event_ts
    joined = http("GET", entity_reader + "/v1/features/item/shop%7Csku:2?names=last_buyer")
    assert joined.status == 200, joined.body
    assert joined.body["id"] == "shop|sku:2" and joined.body["features"] == {"last_buyer": None}
    assert "warming_up" not in joined.body
    missing = http("GET", entity_reader + "/v1/features/item/sku-404")
    assert missing.status == 404 and missing.body == {
        "error": "unknown_id", "message": "no features for item 'sku-404'"}
    wrong = http("GET", entity_reader + "/v1/features/item/sku-1?names=clicks_1h")
    assert wrong.status == 400 and wrong.body["valid"] == list(ITEM_FEATURES)


@pytest.mark.parametrize("entity", ["score", "items", "USER", "user:x", "%2A", "a%20b", "..",
                                    "user%0D%0AFLUSHALL", "x" * 300])
def test_an_unknown_entity_is_a_404_naming_the_known_ones(entity_reader: str,
                                                          entity: str) -> None:
    for method, path, body in (("GET", f"/v1/features/{entity}/user-1", None),
                               ("POST", f"/v1/features/{entity}/batch", {"ids": ["user-1"]})):
        reply = http(method, entity_reader + path, body)
        assert reply.status == 404, (path, reply.body)
        assert reply.body["error"] == "unknown_entity"
        assert reply.body["valid"] == ["user", "item"]


@pytest.mark.parametrize("entity_id", ["x" * 257, "a%20b", "a*", "%2A", "a%0D%0AFLUSHALL",
                                       "%C3%A9", "a%00", "a;b", "%7Bx%7D", "a%5Cb"])
def test_hostile_entity_ids_are_a_400(entity_reader: str, entity_id: str) -> None:
    reply = http("GET", entity_reader + f"/v1/features/item/{entity_id}")
    assert reply.status == 400, (entity_id, reply.body)
    assert reply.body["error"] == "invalid_id" and "1-256 characters" in reply.body["message"]


def test_ids_never_reach_another_entitys_keys(entity_reader: str) -> None:
    """An item id that spells another key (a user's, a score's) stays under fs:item:."""
    for entity_id in ("user:user-1", "score:user-1", ":user-1", "..%2Fuser-1"):
        reply = http("GET", entity_reader + f"/v1/features/item/{entity_id}")
        assert reply.status == 404, (entity_id, reply.body)
    slash = http("GET", entity_reader + "/v1/features/item/a%2F..%2Fb")
    assert slash.status == 404 and slash.body["error"] == "not_found"


def test_an_item_batch_keeps_request_order(entity_reader: str) -> None:
    reply = http("POST", entity_reader + "/v1/features/item/batch", {
        "ids": ["shop|sku:2", "nope", "sku-1"], "names": ["recent_buyers", "views_1h"]})
    assert reply.status == 200, reply.body
    first, missing, last = reply.body["results"]
    assert (first["id"], first["found"]) == ("shop|sku:2", True)
    assert first["features"] == {"recent_buyers": [], "views_1h": 0}
    assert missing == {"entity": "item", "id": "nope", "found": False}
    assert last["features"] == {"recent_buyers": ITEMS["sku-1"]["recent_buyers"], "views_1h": 7}
    assert last["warming_up"] == {"buyers_24h": NOW + 60_000}


@pytest.mark.parametrize(("body", "status", "error"), [
    ({"ids": [f"i{n}" for n in range(51)]}, 413, "batch_too_large"),
    ({"ids": ["sku-1"], "names": ["clicks_1h"]}, 400, "unknown_feature"),
    ({"ids": ["a b"]}, 400, "invalid_id"),
    ({"user_ids": ["sku-1"]}, 400, "invalid_body"),
])
def test_bad_item_batches(entity_reader: str, body: dict, status: int, error: str) -> None:
    reply = http("POST", entity_reader + "/v1/features/item/batch", body)
    assert (reply.status, reply.body["error"]) == (status, error), reply.body


def test_the_user_routes_answer_as_before_beside_the_entity_routes(reader: str,
                                                                   entity_reader: str) -> None:
    """The user routes of a reader with more entities equal those of the built-in reader."""
    def stable(body: dict) -> dict:
        return {k: v for k, v in body.items() if k not in ("staleness_ms",
                                                           "seconds_since_last_event")}

    for path, body in (("/v1/features/user-1", None), ("/v1/features/nobody", None),
                       ("/v1/features/user-1?names=ctr_1h,clicks_1h", None),
                       ("/v1/features/batch", {"user_ids": ["user-2", "nobody"]})):
        old = http("POST" if body else "GET", reader + path, body)
        new = http("POST" if body else "GET", entity_reader + path, body)
        assert old.status == new.status
        if "results" in old.body:
            assert [stable(r) for r in old.body["results"]] == [
                stable(r) for r in new.body["results"]]
        else:
            assert stable(old.body) == stable(new.body)
    alias = http("GET", entity_reader + "/v1/features/user-1").body
    generic = http("GET", entity_reader + "/v1/features/user/user-1").body
    assert generic["entity"] == "user" and generic["id"] == "user-1"
    assert generic["features"] == alias["features"] and generic["as_of"] == alias["as_of"]
    batch = http("POST", entity_reader + "/v1/features/user/batch", {"ids": ["user-1"]}).body
    assert batch["results"][0]["features"] == alias["features"]


# --- batch ---------------------------------------------------------------------------------

def test_batch_returns_results_in_request_order_with_missing_users_marked(reader: str) -> None:
    ids = ["user-2", "nobody", "user-1", "user-2"]
    reply = http("POST", reader + "/v1/features/batch",
                 {"user_ids": ids, "names": ["clicks_1h", "avg_spend_1h"]})
    assert reply.status == 200
    results = reply.body["results"]
    assert [r["user_id"] for r in results] == ids
    assert [r["found"] for r in results] == [True, False, True, True]
    assert results[1] == {"user_id": "nobody", "found": False}
    assert results[0]["features"] == {"clicks_1h": 1, "avg_spend_1h": None}
    assert results[2]["features"] == {"clicks_1h": 4, "avg_spend_1h": 1.5}
    assert results[2]["as_of"] == ROWS["user-1"]["as_of"]
    assert results[0]["staleness_ms"] >= 60_000


def test_batch_without_names_returns_every_feature(reader: str) -> None:
    reply = http("POST", reader + "/v1/features/batch", {"user_ids": ["user-1"]})
    assert reply.status == 200
    assert set(reply.body["results"][0]["features"]) == set(FEATURE_NAMES)


@pytest.mark.parametrize(("body", "status", "error"), [
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_body"),
    (b'{"user_ids": "user-1"}', 400, "invalid_body"),
    (b'{"user_ids": []}', 400, "invalid_body"),
    (b'{"names": ["clicks_1h"]}', 400, "invalid_body"),
    (b'{"user_ids": ["user-1"], "extra": 1}', 400, "invalid_body"),
    (b'{"user_ids": [42]}', 400, "invalid_user_id"),
    (b'{"user_ids": ["ok", "bad id"]}', 400, "invalid_user_id"),
    (b'{"user_ids": ["user-1"], "names": "clicks_1h"}', 400, "invalid_body"),
    (b'{"user_ids": ["user-1"], "names": ["nope"]}', 400, "unknown_feature"),
    (b'{"user_ids": [' + b",".join(b'"u%d"' % i for i in range(51)) + b"]}", 413,
     "batch_too_large"),
])
def test_bad_batch_bodies_are_4xx_with_a_message(reader: str, body: bytes, status: int,
                                                  error: str) -> None:
    reply = http("POST", reader + "/v1/features/batch", body,
                 headers={"Content-Type": "application/json"})
    assert reply.status == status, reply.body
    assert reply.body["error"] == error
    assert reply.body["message"]


def test_a_declared_oversized_body_is_refused_before_it_is_sent(reader: str) -> None:
    status, body = declared_oversized_post(reader, "/v1/features/batch")
    assert status == 413
    assert body["error"] == "body_too_large" and body["limit"] == body_limit(50)


def test_an_oversized_chunked_body_is_refused_while_streaming(reader: str) -> None:
    """No Content-Length: the limit holds on the bytes received."""
    host, port = reader.removeprefix("http://").split(":")
    body = b'{"user_ids": ["' + b"x" * body_limit(50) + b'"]}'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:40_000], body[40_000:]))
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/features/batch HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunks + b"0\r\n\r\n")  # all at once: nothing arrives after the answer
        response = HTTPResponse(sock)
        response.begin()
        assert response.status == 413
        assert json.loads(response.read())["error"] == "body_too_large"


# --- scores --------------------------------------------------------------------------------

def test_scores_are_the_latest_per_model_with_freshness(reader: str,
                                                        redis_server: RedisProcess) -> None:
    older = Score("purchase_risk", 2, "v2", 0.9, "evt-0", NOW, NOW - 10_000)  # older as_of
    assert seed_score(redis_server.client(), PREFIX, "user-1", older) == 0
    reply = http("GET", reader + "/v1/scores/user-1")
    assert reply.status == 200
    body = reply.body
    assert body["user_id"] == "user-1"
    assert body["as_of"] == NOW - 2_000
    assert set(body["scores"]) == {"purchase_risk", "churn"}
    risk = body["scores"]["purchase_risk"]
    assert {k: risk[k] for k in ("model", "version", "variant", "score", "event_id",
                                 "scored_at", "as_of")} == {
        "model": "purchase_risk", "version": 3, "variant": "v3", "score": 0.25,
        "event_id": "evt-1", "scored_at": NOW - 500, "as_of": NOW - 2_000}
    assert risk["staleness_ms"] >= 2_000
    assert body["scores"]["churn"]["staleness_ms"] >= 3_000


def test_user_without_scores_is_a_404(reader: str) -> None:
    reply = http("GET", reader + "/v1/scores/user-2")
    assert reply.status == 404 and reply.body["error"] == "unknown_user"


# --- health, metrics, docs -----------------------------------------------------------------

def test_health_readiness_and_openapi(reader: str) -> None:
    assert http("GET", reader + "/healthz").body == {"status": "ok"}
    assert http("GET", reader + "/readyz").body == {"status": "ready"}
    doc = http("GET", reader + "/openapi.json").body
    assert doc["openapi"].startswith("3.")
    assert {"/v1/features/{user_id}", "/v1/features/batch", "/v1/scores/{user_id}",
            "/healthz", "/readyz", "/metrics"} <= set(doc["paths"])


def test_metrics_have_latency_by_route(reader: str) -> None:
    http("GET", reader + "/v1/features/user-1")
    http("GET", reader + "/v1/features/nobody")
    text = http("GET", reader + "/metrics").body
    assert ('featurestream_reader_request_seconds_count{route="/v1/features/{user_id}",'
            'status="200"}') in text
    assert 'route="/v1/features/{user_id}",status="404"' in text
    assert "# TYPE featurestream_reader_redis_errors_total counter" in text
    assert "featurestream_reader_cache_hits_total 0.0" in text


# --- Redis in trouble ----------------------------------------------------------------------

def metric(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


def test_redis_stopped_mid_test_gives_fast_503s_then_recovers(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path)
    server.start()
    seed(server)
    try:
        with reader_in_thread(settings_for(server)) as url:
            assert http("GET", url + "/v1/features/user-1").status == 200
            server.stop()
            for method, path, body in (("GET", "/v1/features/user-1", None),
                                       ("POST", "/v1/features/batch", {"user_ids": ["user-1"]}),
                                       ("GET", "/v1/scores/user-1", None),
                                       ("GET", "/readyz", None)):
                reply = http(method, url + path, body)
                assert reply.status == 503, (path, reply.body)
                assert reply.body["error"] == "redis_unavailable"
                assert "Redis" in reply.body["message"]
                assert reply.headers["retry-after"] == "1"
                assert reply.seconds < 1.0
            assert http("GET", url + "/healthz").status == 200
            errors = metric(http("GET", url + "/metrics").body,
                            'featurestream_reader_redis_errors_total{kind="connection"}')
            assert errors >= 4

            server.start()  # same port, empty: recovery needs no restart of the reader
            seed(server)
            wait_until(lambda: http("GET", url + "/readyz").status == 200, 5, "readyz")
            reply = http("GET", url + "/v1/features/user-1")
            assert reply.status == 200 and reply.body["features"]["clicks_1h"] == 4
    finally:
        server.stop()


def test_frozen_redis_fails_within_the_timeout_without_hanging_workers(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path)
    server.start()
    seed(server)
    try:
        # the breaker kept closed: every call waits out the timeout (test_reader_breaker.py
        # has the breaker)
        with reader_in_thread(settings_for(server, redis_timeout_ms=150,
                                           breaker_failures=1_000)) as url:
            assert http("GET", url + "/v1/features/user-1").status == 200
            server.freeze()
            with ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(
                    lambda i: http("GET", f"{url}/v1/features/user-{i % 2 + 1}"), range(16)))
            for reply in replies:
                assert reply.status == 503
                assert reply.body["error"] == "redis_unavailable"
                assert "did not answer within 150 ms" in reply.body["message"]
                assert reply.seconds < 1.0
            assert http("GET", url + "/healthz").seconds < 0.5
            assert http("GET", url + "/readyz").status == 503
            text = http("GET", url + "/metrics").body
            assert metric(text, 'featurestream_reader_redis_errors_total{kind="timeout"}') >= 16

            server.thaw()
            wait_until(lambda: http("GET", url + "/readyz").status == 200, 5, "readyz")
            assert http("GET", url + "/v1/features/user-1").status == 200
    finally:
        server.stop()


def test_reader_started_before_redis_becomes_ready_by_itself(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path)
    with reader_in_thread(settings_for(server)) as url:
        assert http("GET", url + "/readyz").status == 503
        assert http("GET", url + "/healthz").status == 200
        server.start()
        try:
            seed(server)
            wait_until(lambda: http("GET", url + "/readyz").status == 200, 5, "readyz")
            assert http("GET", url + "/v1/features/user-2").status == 200
        finally:
            server.stop()


# --- auth, cache, TLS ----------------------------------------------------------------------

def test_bearer_token_guards_v1_only(redis_server: RedisProcess) -> None:
    with reader_in_thread(settings_for(redis_server, auth_token=TOKEN)) as url:
        for headers in ({}, {"Authorization": "Bearer wrong-token"},
                        {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
            for method, path, body in (("GET", "/v1/features/user-1", None),
                                       ("POST", "/v1/features/batch", {"user_ids": ["u"]}),
                                       ("GET", "/v1/scores/user-1", None)):
                reply = http(method, url + path, body, headers=headers)
                assert reply.status == 401, (headers, path)
                assert reply.body["error"] == "unauthorized"
                assert reply.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert http("GET", url + "/v1/features/user-1", headers=good).status == 200
        assert http("GET", url + "/v1/scores/user-1", headers=good).status == 200
        assert http("POST", url + "/v1/features/batch", {"user_ids": ["user-1"]},
                    headers=good).status == 200
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert http("GET", url + path).status == 200
        doc = http("GET", url + "/openapi.json").body
        assert doc["paths"]["/v1/features/{user_id}"]["get"]["security"] == [{"bearer": []}]


def test_cache_serves_within_its_ttl_and_counts_hits(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path)
    server.start()
    seed(server)
    try:
        with reader_in_thread(settings_for(server, cache_ttl_ms=1_000,
                                           cache_invalidation=False)) as url:
            first = http("GET", url + "/v1/features/user-2?names=clicks_1h")
            seed_rows(server.client(), PREFIX,
                      {"user-2": feature_row(NOW, version=9, clicks_1h=7)}, updated_at=NOW)
            cached = http("GET", url + "/v1/features/user-2?names=clicks_1h")
            assert first.body["features"] == cached.body["features"] == {"clicks_1h": 1}
            assert cached.body["staleness_ms"] >= first.body["staleness_ms"]  # still read-time
            batch = http("POST", url + "/v1/features/batch", {"user_ids": ["user-2", "user-1"]})
            assert [r["found"] for r in batch.body["results"]] == [True, True]
            text = http("GET", url + "/metrics").body
            assert metric(text, "featurestream_reader_cache_hits_total") == 2
            assert metric(text, "featurestream_reader_cache_misses_total") == 2
            time.sleep(1.1)
            fresh = http("GET", url + "/v1/features/user-2?names=clicks_1h")
            assert fresh.body["features"] == {"clicks_1h": 7}
    finally:
        server.stop()


def test_tls_and_password_from_the_redis_url(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    server = RedisProcess(tmp_path, port=port, extra_args=(
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
        "--requirepass", "s3cret:/@pw"),
        url=f"rediss://:s3cret%3A%2F%40pw@127.0.0.1:{port}/0?ssl_ca_certs={cert}")
    server.start()
    try:
        seed(server)
        with reader_in_thread(settings_for(server)) as url:
            reply = http("GET", url + "/v1/features/user-1")
            assert reply.status == 200 and reply.body["features"]["clicks_1h"] == 4
        wrong = server.url.replace("s3cret", "wrong")
        with reader_in_thread(settings_for(server, redis_url=wrong)) as url:
            reply = http("GET", url + "/readyz")
            assert reply.status == 503 and "WRONGPASS" in reply.body["message"]
            assert "s3cret" not in reply.body["message"] and "wrong" not in reply.body["message"]
    finally:
        server.stop()


# --- the real `featurestream serve` ----------------------------------------------------------

def test_featurestream_serve_end_to_end(redis_server: RedisProcess, tmp_path: Path) -> None:
    served = start_serve({"FEATURESTREAM_REDIS_URL": redis_server.url,
                          "FEATURESTREAM_REDIS_KEY_PREFIX": PREFIX,
                          "FEATURESTREAM_SERVE_WORKERS": "2",
                          "FEATURESTREAM_AUTH_TOKEN": TOKEN}, tmp_path / "serve.log")
    try:
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert http("GET", served.url + "/v1/features/user-1").status == 401
        for _ in range(10):
            reply = http("GET", served.url + "/v1/features/user-1", headers=good)
            assert reply.status == 200 and reply.body["features"]["spend_24h"] == 12.25
        batch = http("POST", served.url + "/v1/features/batch",
                     {"user_ids": ["user-1", "nobody"]}, headers=good)
        assert [r["found"] for r in batch.body["results"]] == [True, False]
        assert http("GET", served.url + "/v1/scores/user-1", headers=good).status == 200
        assert http("GET", served.url + "/readyz").status == 200
        text = http("GET", served.url + "/metrics").body
        count = metric(text, 'featurestream_reader_request_seconds_count{route='
                             '"/v1/features/{user_id}",status="200"}')
        assert count == 10  # summed over the workers (prometheus multiprocess mode)
    finally:
        code = served.stop()
    log = served.log()
    assert code == 0, log
    lines = log.strip().splitlines()
    assert "reader: listening on " in lines[0]
    assert sum("reader worker" in line and "started" in line and "reachable" in line
               for line in lines) == 2
    assert sum("reader worker" in line and "stopped" in line for line in lines) == 2
    assert lines[-1].endswith("reader: stopped")
    assert TOKEN not in log


def test_featurestream_serve_fails_loudly_on_bad_config(redis_server: RedisProcess,
                                                         tmp_path: Path) -> None:
    cases = [
        ({"FEATURESTREAM_SERVE_WORKERS": "0"}, "FEATURESTREAM_SERVE_WORKERS"),
        ({"FEATURESTREAM_AUTH_TOKEN": "short secret"}, "FEATURESTREAM_AUTH_TOKEN"),
        ({"FEATURESTREAM_REDIS_URL": "redis://127.0.0.1:notaport/0"}, "FEATURESTREAM_REDIS_URL"),
        ({"FEATURESTREAM_CACHE_TTL_MS": "soon"}, "FEATURESTREAM_CACHE_TTL_MS"),
    ]
    for env, variable in cases:
        served = start_serve({"FEATURESTREAM_REDIS_URL": redis_server.url, **env},
                             tmp_path / "bad.log", wait=False)
        assert served.process.wait(30) == 2
        assert variable in served.log() and "short secret" not in served.log()
    served = start_serve({"FEATURESTREAM_REDIS_URL": redis_server.url}, tmp_path / "a.log")
    try:
        port = served.url.rsplit(":", 1)[1]
        clash = start_serve({"FEATURESTREAM_REDIS_URL": redis_server.url,
                             "FEATURESTREAM_SERVE_PORT": port}, tmp_path / "b.log", wait=False)
        assert clash.process.wait(30) == 2
        assert "FEATURESTREAM_SERVE_PORT" in clash.log()
    finally:
        assert served.stop() == 0


# --- the served document describes every real answer ----------------------------------------

class Conformance:
    """Checks replies against a reader's own ``/openapi.json`` and notes what was covered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.doc = http("GET", url + "/openapi.json").body
        self.covered: set[tuple[str, str, str]] = set()

    def check(self, method: str, route: str, path: str, body: dict[str, Any] | bytes | None,
              headers: dict[str, str]) -> None:
        """Send the request; its status must be documented for ``route`` and its body valid."""
        if body is not None:
            headers = {"Content-Type": "application/json", **headers}
        reply = http(method, self.url + path, body, headers=headers)
        operation = self.doc["paths"][route][method.lower()]
        response = operation["responses"].get(str(reply.status))
        assert response is not None, (method, path, reply.status, reply.body)
        [(media_type, content)] = response["content"].items()
        assert reply.headers["content-type"].split(";")[0] == media_type
        schema = {**content["schema"], "components": self.doc["components"]}
        jsonschema.validate(reply.body, schema, cls=jsonschema.Draft202012Validator)
        if body is not None and reply.status in (200, 400, 413):  # decided by the body
            request_schema = {**operation["requestBody"]["content"]["application/json"]["schema"],
                              "components": self.doc["components"]}
            valid = jsonschema.Draft202012Validator(request_schema).is_valid(
                json.loads(body) if isinstance(body, bytes) else body)
            assert valid == (reply.status == 200), (body, reply.status)  # as the doc says
        self.covered.add((method, route, str(reply.status)))

    def documented(self) -> set[tuple[str, str, str]]:
        """Every (method, route, status) the document lists."""
        return {(method.upper(), route, status)
                for route, operations in self.doc["paths"].items()
                for method, operation in operations.items() for status in operation["responses"]}


FEATURES_ROUTE, SCORES_ROUTE = "/v1/features/{user_id}", "/v1/scores/{user_id}"
BATCH_ROUTE = "/v1/features/batch"
DRIFT_ROUTE = "/v1/models/{name}/drift"
PREDICT_ROUTE, PREDICT_BATCH_ROUTE = "/v1/predict", "/v1/predict/batch"
ENTITY_ROUTE, ENTITY_BATCH_ROUTE = "/v1/features/{entity}/{id}", "/v1/features/{entity}/batch"
Call = tuple[str, str, str, dict[str, Any] | bytes | None]  # method, route, path, body
V1_CALLS: list[Call] = [("GET", FEATURES_ROUTE, "/v1/features/user-1", None),
                        ("POST", BATCH_ROUTE, BATCH_ROUTE, {"user_ids": ["user-1"]}),
                        ("GET", ENTITY_ROUTE, "/v1/features/user/user-1", None),
                        ("POST", ENTITY_BATCH_ROUTE, "/v1/features/user/batch",
                         {"ids": ["user-1"]}),
                        ("GET", SCORES_ROUTE, "/v1/scores/user-1", None),
                        ("GET", DRIFT_ROUTE, f"/v1/models/{model_fixtures.NAME}/drift", None),
                        ("GET", "/v1/status", "/v1/status", None),
                        ("POST", PREDICT_ROUTE, PREDICT_ROUTE,
                         {"user_id": "user-1", "type": "purchase", "amount": 1.0}),
                        ("POST", PREDICT_BATCH_ROUTE, PREDICT_BATCH_ROUTE,
                         {"requests": [{"user_id": "user-1", "type": "view"}]})]


def conformance(settings: Settings, calls: list[Call],
                *headers: dict[str, str]) -> Conformance:
    """``calls`` (once per set of ``headers``) checked against a reader of ``settings``."""
    with reader_in_thread(settings) as url:
        served = Conformance(url)
        for method, route, path, body in calls:
            for each in headers or ({},):
                served.check(method, route, path, body, headers=each)
    return served


def test_every_answer_matches_the_served_openapi_document(redis_server: RedisProcess,
                                                           tmp_path: Path) -> None:
    calls: list[Call] = [("GET", FEATURES_ROUTE, f"/v1/features/{user_id}", None) for user_id in (
        "user-1", "user-2?names=avg_spend_1h,ctr_1h", "user.name@example.com", "nobody",
        "a%20b", "user-1?names=nope", "user-1?max_staleness_ms=5000",
        "user-1?max_staleness_ms=-1")]
    bodies: list[dict[str, Any] | bytes] = [
        {"user_ids": ["user-1", "nobody", "user-2", "user-1"]},
        {"user_ids": ["user-2"], "names": ["clicks_1h", "ctr_1h"]},
        {"user_ids": ["user-1"], "names": []}, {"user_ids": ["bad id"]},
        {"user_ids": ["user-1"], "names": ["nope"]}, {"user_ids": []},
        {"user_ids": ["user-1"], "extra": 1}, {"user_ids": [f"u{i}" for i in range(51)]},
        b"[1]", {"user_ids": ["user-1"], "max_staleness_ms": 5000},
        {"user_ids": ["user-1"], "max_staleness_ms": "5s"}]
    calls += [("POST", BATCH_ROUTE, BATCH_ROUTE, body) for body in bodies]
    calls += [("GET", ENTITY_ROUTE, f"/v1/features/{path}", None) for path in (
        "user/user-1", "user/user-2?names=ctr_1h", "user/nobody", "item/sku-1", "user/a%20b",
        "item/sku-1?max_staleness_ms=0", "item/sku-1?max_staleness_ms=1.5")]
    # (an entity route's body schema has any entity's names: no unknown names here)
    entity_bodies: list[dict[str, Any] | bytes] = [
        {"ids": ["user-1", "nobody"]}, {"ids": ["user-2"], "names": ["ctr_1h"]},
        {"ids": ["bad id"]}, {"ids": []}, {"ids": [f"u{i}" for i in range(51)]}, b"[1]",
        {"ids": ["user-1"], "max_staleness_ms": 0}, {"ids": ["user-1"], "max_staleness_ms": -5}]
    calls += [("POST", ENTITY_BATCH_ROUTE, "/v1/features/user/batch", body)
              for body in entity_bodies]
    calls.append(("POST", ENTITY_BATCH_ROUTE, "/v1/features/item/batch", {"ids": ["sku-1"]}))
    calls += [("GET", SCORES_ROUTE, f"/v1/scores/{user_id}", None)
              for user_id in ("user-1", "user-2", "a*")]
    calls += [("GET", DRIFT_ROUTE, f"/v1/models/{name}/drift", None)
              for name in (model_fixtures.NAME, "nope", "a%20b")]
    purchase: dict[str, Any] = {"user_id": "user-1", "type": "purchase", "amount": 1.0}
    predict_bodies: list[dict[str, Any] | bytes] = [
        purchase, {**purchase, "user_id": "nobody"}, {**purchase, "amount": "1"},
        {**purchase, "model": "nope"}, b"[1]", {**purchase, "context": {"k": "x" * 70_000}}]
    calls += [("POST", PREDICT_ROUTE, PREDICT_ROUTE, body) for body in predict_bodies]
    predict_batches: list[dict[str, Any] | bytes] = [
        {"requests": [purchase, {**purchase, "user_id": "nobody"}]}, {"requests": []},
        {"requests": [{**purchase, "model": "nope"}]}, {"requests": [purchase] * 51}]
    calls += [("POST", PREDICT_BATCH_ROUTE, PREDICT_BATCH_ROUTE, body)
              for body in predict_batches]
    calls += [("GET", route, route, None)
              for route in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/ui")]
    served = conformance(settings_for(redis_server), calls)
    guarded = conformance(settings_for(redis_server, auth_token=TOKEN), V1_CALLS,
                          {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}"})
    down = RedisProcess(tmp_path)  # never started: nothing answers there
    unavailable = conformance(settings_for(down), [*V1_CALLS, ("GET", "/readyz", "/readyz", None)])
    # every documented answer was seen, and only those
    assert served.covered | guarded.covered | unavailable.covered == served.documented()
