"""``/v1/predict`` on a real redis-server and a real registry: the score is the version's
``Booster.predict`` on the vector the answer shows, built from the stored rows (defaults where
a row or value is missing, labelled); batches keep order and report refusals per request; a
missing or broken model is a 503, hostile requests 4xx with a message; every prediction is
counted by model, version, variant and fallback."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestream.serving.predict_contract import PREDICT_BODY_LIMIT
from featurestream.settings import Settings
from featurestream.udfs.scoring.variants import VariantAssigner, parse_experiment
from featurestream.udfs.store.redis_layout import RowValue
from testing import model_fixtures
from testing.reader_fixtures import (
    RedisProcess,
    declared_oversized_post,
    feature_row,
    http,
    reader_in_thread,
    seed_rows,
    write_item_definitions,
)

pytestmark = pytest.mark.redis

PREFIX = "fs:"
NOW = int(time.time() * 1000)
HOUR_MS = 3_600_000
ROWS = {f"user-{i}": feature_row(NOW - 1_000 * i, purchases_5m=i, spend_1h=2.5 * i)
        for i in range(1, 30)}
ROWS["nulls"] = feature_row(NOW - 500, purchases_5m=None, spend_1h=None)
ITEM_ROWS: dict[str, dict[str, RowValue]] = {"sku-1": {
    "as_of": NOW - 2_000, "version": 1, "views_1h": 7, "last_buyer": "u",
    "recent_buyers": ["u"], "buyers_24h": 1}}
EXPERIMENT = "v1:50,v2:50"
TS = 1_700_000_000_000 + 13 * HOUR_MS


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("predict-redis"))
    server.start()
    client = server.client()
    seed_rows(client, PREFIX, ROWS, updated_at=NOW)
    seed_rows(client, PREFIX, ITEM_ROWS, updated_at=NOW, entity="item")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def models_dir() -> Iterator[Path]:
    """v1 and v2 of the fixture model; v2 without a default for purchases_5m."""
    directory = Path(tempfile.mkdtemp(prefix="predict-models-"))
    model_fixtures.publish(directory, 1)
    model_fixtures.publish(directory, 2, defaults={"amount": 0.0, "spend_1h": 0.0}, seed=1)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def settings_for(redis_server: RedisProcess, models: Path, **changes: object) -> Settings:
    defaults: dict[str, object] = {"redis_url": redis_server.url, "redis_key_prefix": PREFIX,
                                   "redis_timeout_ms": 100, "max_batch_size": 20,
                                   "models_dir": str(models), "experiment": EXPERIMENT}
    return Settings().replace(**{**defaults, **changes})


@pytest.fixture(scope="module")
def reader(redis_server: RedisProcess, models_dir: Path) -> Iterator[str]:
    with reader_in_thread(settings_for(redis_server, models_dir)) as url:
        yield url


def booster(models: Path, version: int) -> lgb.Booster:
    return lgb.Booster(model_file=str(models / f"{model_fixtures.NAME}-v{version}.txt"))


def arm(user_id: str) -> int:
    return VariantAssigner(parse_experiment(EXPERIMENT)).assign(user_id).version


def test_a_prediction_is_the_routed_version_on_the_stored_row(reader: str,
                                                              models_dir: Path) -> None:
    for i in (1, 2, 3, 4, 5, 6):
        user = f"user-{i}"
        reply = http("POST", reader + "/v1/predict",
                     {"user_id": user, "type": "purchase", "amount": 12.5, "ts": TS})
        assert reply.status == 200, reply.body
        body = reply.body
        version = arm(user)
        assert (body["model"], body["version"], body["variant"]) == (
            model_fixtures.NAME, version, f"v{version}")
        assert body["experiment"] is None
        assert body["features"] == {"amount": 12.5, "hour_of_day": TS // HOUR_MS % 24,
                                    "purchases_5m": i, "spend_1h": 2.5 * i}
        vector = np.array([list(body["features"].values())])
        assert body["score"] == pytest.approx(
            booster(models_dir, version).predict(vector)[0], abs=1e-12)
        row = ROWS[user]
        assert body["entities"]["user"]["id"] == user
        assert body["entities"]["user"]["as_of"] == body["as_of"] == row["as_of"]
        assert body["entities"]["user"]["source"] == "redis"
        assert body["staleness_ms"] >= NOW - body["as_of"]
        assert body["fallback"] == "none"
        assert set(body["timing"]) == {"total_ms", "features_ms", "model_ms"}


def user_routed_to(version: int, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(1, 1000) if arm(f"{prefix}-{i}") == version)


def test_an_unknown_user_gets_the_defaults_or_a_503_naming_the_features(reader: str) -> None:
    reply = http("POST", reader + "/v1/predict",
                 {"user_id": user_routed_to(1, "new"), "type": "purchase", "amount": 3.0})
    assert reply.status == 200, reply.body
    assert reply.body["fallback"] == "defaults"
    assert reply.body["entities"] == {"user": {"id": reply.body["entities"]["user"]["id"],
                                               "found": False, "as_of": None,
                                               "staleness_ms": None, "source": None,
                                           "cache_age_ms": None}}
    assert reply.body["features"]["purchases_5m"] == 0.0
    reply = http("POST", reader + "/v1/predict",
                 {"user_id": user_routed_to(2, "new"), "type": "purchase", "amount": 3.0})
    assert reply.status == 503, reply.body
    assert reply.body["error"] == "missing_features"
    assert "purchases_5m" in reply.body["message"]
    assert "spend_1h" not in reply.body["message"].split(":")[0]


def test_a_batch_answers_in_order_with_refusals_per_request(reader: str,
                                                             models_dir: Path) -> None:
    users = ["user-3", user_routed_to(2, "gone"), "user-7", "nulls", "user-3"]
    requests = [{"user_id": u, "type": "purchase", "amount": 1.0 + i, "ts": TS}
                for i, u in enumerate(users)]
    reply = http("POST", reader + "/v1/predict/batch", {"requests": requests})
    assert reply.status == 200, reply.body
    results, errors = reply.body["results"], reply.body["errors"]
    assert len(results) == len(users)
    assert [e["index"] for e in errors] == [1]
    assert errors[0]["status"] == 503 and errors[0]["features"] == ["purchases_5m"]
    assert results[1] is None
    for i in (0, 2, 3, 4):
        single = http("POST", reader + "/v1/predict", requests[i]).body
        assert results[i]["score"] == single["score"]
        assert results[i]["features"] == single["features"]
    assert results[0]["features"]["amount"] == 1.0 and results[4]["features"]["amount"] == 5.0
    nulls = results[3]  # null values take their defaults: the row exists, not a fallback
    assert nulls["fallback"] == "none" and nulls["entities"]["user"]["found"]
    assert nulls["features"]["spend_1h"] == 0.0


def test_an_item_model_reads_the_item_row(redis_server: RedisProcess,
                                          tmp_path: Path) -> None:
    features = ("amount", "purchases_5m", "item.views_1h")
    model_fixtures.publish(tmp_path, 1, features=features,
                           defaults={"amount": 0.0, "item.views_1h": -1.0})
    settings = settings_for(redis_server, tmp_path, experiment="",
                            definitions=str(write_item_definitions(tmp_path)))
    with reader_in_thread(settings) as url:
        with_item = http("POST", url + "/v1/predict", {"user_id": "user-2", "type": "purchase",
                                                       "amount": 4.0, "item_id": "sku-1"}).body
        without = http("POST", url + "/v1/predict", {"user_id": "user-2", "type": "view"}).body
    assert with_item["features"] == {"amount": 4.0, "purchases_5m": 2.0, "item.views_1h": 7.0}
    assert with_item["entities"]["item"]["as_of"] == ITEM_ROWS["sku-1"]["as_of"]
    assert with_item["fallback"] == "none" and with_item["variant"] == "latest"
    assert without["entities"]["item"] == {"id": None, "found": False, "as_of": None,
                                           "staleness_ms": None, "source": None,
                                           "cache_age_ms": None}
    assert without["features"]["item.views_1h"] == -1.0 and without["fallback"] == "defaults"


def test_a_missing_or_broken_model_is_a_503_naming_it(redis_server: RedisProcess,
                                                      tmp_path: Path) -> None:
    body = {"user_id": "user-1", "type": "purchase", "amount": 1.0}
    with reader_in_thread(settings_for(redis_server, tmp_path / "none", experiment="")) as url:
        reply = http("POST", url + "/v1/predict", body)
        assert reply.status == 503 and reply.body["error"] == "model_unavailable"
        assert "no purchase_risk model" in reply.body["message"]
    model_fixtures.publish(tmp_path, 1)
    (tmp_path / f"{model_fixtures.NAME}-v1.txt").write_text("not a model")
    with reader_in_thread(settings_for(redis_server, tmp_path, experiment="")) as url:
        reply = http("POST", url + "/v1/predict", body)
        assert reply.status == 503 and reply.body["error"] == "model_unavailable"
        assert "not a LightGBM model" in reply.body["message"]


def test_a_published_version_is_served_after_the_poll_interval(redis_server: RedisProcess,
                                                               tmp_path: Path) -> None:
    model_fixtures.publish(tmp_path, 1)
    settings = settings_for(redis_server, tmp_path, experiment="", model_poll_interval_ms=200)
    body = {"user_id": "user-1", "type": "purchase", "amount": 1.0}
    with reader_in_thread(settings) as url:
        assert http("POST", url + "/v1/predict", body).body["version"] == 1
        model_fixtures.publish(tmp_path, 2, seed=1)
        deadline = time.monotonic() + 10
        while http("POST", url + "/v1/predict", body).body["version"] != 2:
            assert time.monotonic() < deadline, "v2 never served"
            time.sleep(0.1)


HOSTILE = [
    (b'{"user_id": "user-1", "amount": 1.0', 400, "invalid_json"),
    (b'{"user_id": "user-1", "type": "purchase", "amount": NaN}', 400, "invalid_json"),
    (b'{"user_id": "user-1", "type": "purchase", "amount": 1e999}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "purchase", "amount": -1}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "purchase", "amount": "12"}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "purchase"}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "refund", "amount": 1}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "view", "event_type": "click"}', 400, "invalid_body"),
    (b'{"type": "view"}', 400, "invalid_body"),
    (b'{"user_id": "", "type": "view"}', 400, "invalid_body"),
    (b'{"user_id": "a b", "type": "view"}', 400, "invalid_body"),
    (b'{"user_id": 7, "type": "view"}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "view", "item_id": ""}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "view", "ts": -5}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "view", "ts": 1.5}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "view", "context": {"a": 1}}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "view", "colour": "red"}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "view", "max_staleness_ms": -1}', 400, "invalid_body"),
    (b'{"user_id": "user-1", "type": "view", "model": "other"}', 404, "unknown_model"),
    (b'{"user_id": "user-1", "type": "view", "model": "../etc"}', 400, "invalid_body"),
    (b'[1, 2]', 400, "invalid_body"),
    (b'', 400, "invalid_json"),
    (b'\xff\xfe', 400, "invalid_json"),
    (b'{"user_id": null, "type": Infinity}', 400, "invalid_body"),  # a type error first
]


@pytest.mark.parametrize(("body", "status", "error"), HOSTILE)
def test_hostile_predictions_are_4xx_with_a_message(reader: str, body: bytes, status: int,
                                                   error: str) -> None:
    reply = http("POST", reader + "/v1/predict", body)
    assert (reply.status, reply.body["error"]) == (status, error), reply.body
    assert reply.body["message"]


def test_unknown_model_names_the_known_one(reader: str) -> None:
    reply = http("POST", reader + "/v1/predict",
                 {"user_id": "user-1", "type": "view", "model": "fraud"})
    assert reply.status == 404
    assert reply.body["valid"] == [model_fixtures.NAME]
    assert model_fixtures.NAME in reply.body["message"]


@pytest.mark.parametrize(("body", "status", "error"), [
    ({"requests": []}, 400, "invalid_body"),
    ({"requests": [{"user_id": "user-1", "type": "view"}] * 21}, 413, "batch_too_large"),
    ({"requests": [{"user_id": "user-1", "type": "view", "amount": "x"}] * 21}, 413,
     "batch_too_large"),
    ({"requests": [{"user_id": "user-1", "type": "view"}, {"user_id": 1}]}, 400,
     "invalid_body"),
    ({"requests": {"user_id": "user-1"}}, 400, "invalid_body"),
    ({"user_id": "user-1"}, 400, "invalid_body"),
    ({"requests": [{"user_id": "user-1", "type": "view"}, {"user_id": "user-1"}]}, 400,
     "invalid_body"),
    ({"requests": [{"user_id": "user-1", "type": "view", "model": "x"}]}, 404, "unknown_model"),
])
def test_bad_batches(reader: str, body: dict, status: int, error: str) -> None:
    reply = http("POST", reader + "/v1/predict/batch", body)
    assert (reply.status, reply.body["error"]) == (status, error), reply.body
    assert reply.body["message"]
    if status != 413 and isinstance(body.get("requests"), list) and body["requests"]:
        assert "requests[" in reply.body["message"], "names the request"


def test_huge_bodies_are_a_413(reader: str) -> None:
    huge = {"user_id": "user-1", "type": "view", "context": {"k": "x" * 70_000}}
    reply = http("POST", reader + "/v1/predict", huge)
    assert (reply.status, reply.body["error"]) == (413, "body_too_large")
    assert reply.body["limit"] == PREDICT_BODY_LIMIT
    status, body = declared_oversized_post(reader, "/v1/predict/batch")
    assert status == 413
    assert body["error"] == "body_too_large"


def test_predictions_are_counted_by_model_version_variant_and_fallback(reader: str) -> None:
    def count(fallback: str) -> float:
        text = http("GET", reader + "/metrics").body
        prefix = "featurestream_reader_predictions_total{"
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(prefix) and f'fallback="{fallback}"' in line
                   and 'version="1"' in line and 'variant="v1"' in line)

    before = count("defaults"), count("none")
    http("POST", reader + "/v1/predict",
         {"user_id": user_routed_to(1, "counted"), "type": "purchase", "amount": 1.0})
    http("POST", reader + "/v1/predict",
         {"user_id": user_routed_to(1, "user"), "type": "purchase", "amount": 1.0})
    assert (count("defaults"), count("none")) == (before[0] + 1, before[1] + 1)


def test_the_document_covers_predict(reader: str) -> None:
    document = http("GET", reader + "/openapi.json").body
    for path in ("/v1/predict", "/v1/predict/batch"):
        operation = document["paths"][path]["post"]
        assert {"200", "400", "404", "413", "503"} <= set(operation["responses"])
        assert "requestBody" in operation


def test_redis_down_serves_the_last_row_read_when_allowed(tmp_path: Path,
                                                         models_dir: Path) -> None:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    user = user_routed_to(1, "user")
    seed_rows(server.client(), PREFIX, {user: ROWS[user]}, updated_at=NOW)
    body = {"user_id": user, "type": "purchase", "amount": 2.0, "max_staleness_ms": 60_000}
    try:
        with reader_in_thread(settings_for(server, models_dir)) as url:
            fresh = http("POST", url + "/v1/predict", body).body
            assert fresh["fallback"] == "none", fresh
            server.stop()
            cached = http("POST", url + "/v1/predict", body)
            assert cached.status == 200, cached.body
            assert cached.body["fallback"] == "cached_features"
            assert cached.body["entities"]["user"]["source"] == "cache"
            assert 0 <= cached.body["entities"]["user"]["cache_age_ms"] < 60_000
            assert cached.body["score"] == fresh["score"]
            strict = http("POST", url + "/v1/predict", {**body, "max_staleness_ms": None})
            assert strict.status == 503 and strict.body["message"], strict.body
            never_read = http("POST", url + "/v1/predict", {**body, "user_id": "user-29"})
            assert never_read.status == 503, never_read.body
    finally:
        server.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=6)
FIELDS = ("user_id", "type", "event_type", "item_id", "amount", "ts", "context", "event_id",
          "model", "max_staleness_ms")
valid_values = {"user_id": st.sampled_from(["user-1", "nobody"]),
                "type": st.sampled_from(["purchase", "view"]), "amount": st.floats(0, 1e9)}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
       valid=st.fixed_dictionaries({}, optional=valid_values), batch=st.booleans())
def test_no_body_is_a_500(reader: str, body: dict, valid: dict, batch: bool) -> None:
    """Any JSON for any field (or a valid one): a 200, a 4xx with a message, or a 503 naming
    why the model cannot score it -- never a 500."""
    request = {**body, **valid}
    path, sent = ("/v1/predict/batch", {"requests": [request]}) if batch else (
        "/v1/predict", request)
    reply = http("POST", reader + path, sent)
    assert reply.status in (200, 400, 404, 413, 503), reply.body
    if reply.status != 200:
        assert reply.body["error"] != "internal" and reply.body["message"]
