"""The reader's pure logic, without network: entity, id and body checks, freshness and
response shaping (typed values, warming_up), the TTL cache, Redis URLs, one round trip per
read, the contract's types and the OpenAPI document generated from them, settings."""

from __future__ import annotations

import asyncio
import ssl
import string
from typing import Any

import jsonschema
import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream.serving.cache import MISS, TTLCache
from featurestream.serving.contract import (
    MAX_USER_ID_LENGTH,
    BatchRequest,
    ErrorBody,
    ReaderContract,
    body_limit,
)
from featurestream.serving.metrics import Metrics
from featurestream.serving.openapi import openapi_document
from featurestream.serving.redis_client import parse_redis_url
from featurestream.serving.responses import ApiError
from featurestream.serving.routes import ROUTES
from featurestream.serving.shaping import (
    batch_body,
    entity_batch_body,
    entity_body,
    features_body,
    scores_body,
    seconds_since,
    staleness_ms,
)
from featurestream.serving.store import FeatureStore, ServedRow
from featurestream.serving.validation import (
    check_entity,
    check_entity_id,
    check_user_id,
    parse_batch,
    parse_entity_batch,
    parse_names,
)
from featurestream.settings import Settings, SettingsError
from featurestream.udfs.store.redis_layout import (
    RowValue,
    Score,
    encode_score,
    encode_value,
    entity_key,
    score_key,
    user_key,
)

VALID = ("clicks_1h", "spend_24h", "ctr_1h", "last_event_ts")
ALLOWED = set(string.ascii_letters + string.digits + "._@:-")
CONTRACT = ReaderContract({"user": VALID}, 3)


# --- user ids, names, batch bodies ------------------------------------------------------------

@pytest.mark.parametrize("user_id", ["u", "user-00042", "a.b_c@d:e-f", "x" * MAX_USER_ID_LENGTH])
def test_valid_user_ids_pass(user_id: str) -> None:
    assert check_user_id(user_id) == user_id


INVALID_IDS = ["", "x" * 129, "a b", "a/b", "a*", "a\r\nPING", "é", "a\n", "{x}", "a\x00"]


@pytest.mark.parametrize("user_id", INVALID_IDS)
def test_invalid_user_ids_are_a_400(user_id: str) -> None:
    with pytest.raises(ApiError) as err:
        check_user_id(user_id)
    assert err.value.status == 400 and err.value.body.error == "invalid_user_id"


@given(st.text(max_size=200))
def test_an_accepted_id_only_ever_names_its_own_key(user_id: str) -> None:
    try:
        check_user_id(user_id)
    except ApiError:
        return
    assert set(user_id) <= ALLOWED and 1 <= len(user_id) <= MAX_USER_ID_LENGTH
    assert user_key("fs:", user_id) == "fs:user:" + user_id


def test_names_select_dedupe_and_keep_order() -> None:
    assert parse_names(None, VALID) is None
    assert parse_names("", VALID) is None
    assert parse_names(" spend_24h, clicks_1h,spend_24h ,", VALID) == ("spend_24h", "clicks_1h")


def test_unknown_names_are_a_400_listing_the_valid_ones() -> None:
    with pytest.raises(ApiError) as err:
        parse_names("clicks_1h,nope,version", VALID)
    assert err.value.status == 400
    assert msgspec.to_builtins(err.value.body) == {"error": "unknown_feature",
                                "message": "unknown feature name(s): nope, version",
                                "valid": list(VALID)}


def test_batch_body_is_checked() -> None:
    batch = parse_batch(b'{"user_ids": ["a", "b", "a"], "names": ["ctr_1h"]}', CONTRACT)
    assert batch.user_ids == ["a", "b", "a"] and batch.names == ["ctr_1h"]
    assert parse_batch(b'{"user_ids": ["a"], "names": null}', CONTRACT).names is None


@pytest.mark.parametrize(("body", "status", "error"), [
    (b"nope", 400, "invalid_json"),
    (b'"text"', 400, "invalid_body"),
    (b'{"user_ids": null}', 400, "invalid_body"),
    (b'{"user_ids": ["a"], "name": []}', 400, "invalid_body"),
    (b'{"user_ids": ["a", null]}', 400, "invalid_user_id"),
    (b'{"user_ids": ["a", "b c"]}', 400, "invalid_user_id"),
    (b'{"user_ids": ["a"], "names": [1]}', 400, "invalid_body"),
    (b'{"user_ids": ["a", "b", "c", "d"]}', 413, "batch_too_large"),
])
def test_bad_batch_bodies(body: bytes, status: int, error: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_batch(body, CONTRACT)
    assert (err.value.status, err.value.body.error) == (status, error)


def test_body_limit_fits_a_full_batch_of_longest_ids() -> None:
    ids = ["x" * MAX_USER_ID_LENGTH] * 1000
    body = orjson.dumps({"user_ids": ids, "names": list(VALID) * 10}, option=orjson.OPT_INDENT_2)
    assert len(body) < body_limit(1000)


@pytest.mark.parametrize("user_id", INVALID_IDS)
def test_invalid_ids_in_a_batch_are_a_400_naming_their_place(user_id: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_batch(msgspec.json.encode({"user_ids": ["ok", user_id]}), CONTRACT)
    assert (err.value.status, err.value.body.error) == (400, "invalid_user_id")
    assert err.value.body.message.startswith("user_ids[1] ")


@given(st.text(max_size=200))
def test_batch_ids_and_path_ids_follow_one_rule(user_id: str) -> None:
    try:
        check_user_id(user_id)
        accepted = True
    except ApiError:
        accepted = False
    try:
        parse_batch(msgspec.json.encode({"user_ids": [user_id]}), CONTRACT)
        decoded = True
    except ApiError as err:
        assert err.body.error == "invalid_user_id"
        decoded = False
    assert decoded == accepted


def test_a_batch_too_large_is_a_413_whatever_else_is_wrong() -> None:
    with pytest.raises(ApiError) as err:
        parse_batch(b'{"user_ids": ["a", "b c", "c", "d"]}', CONTRACT)
    assert msgspec.to_builtins(err.value.body) == {
        "error": "batch_too_large", "message": "4 user ids; at most 3 per request", "limit": 3}


def test_unknown_names_in_a_batch_are_all_listed() -> None:
    with pytest.raises(ApiError) as err:
        parse_batch(b'{"user_ids": ["a"], "names": ["ctr_1h", "nope", "as_of"]}', CONTRACT)
    assert msgspec.to_builtins(err.value.body) == {
        "error": "unknown_feature", "message": "unknown feature name(s): nope, as_of",
        "valid": list(VALID)}


# --- freshness and shaping ----------------------------------------------------------------------

def test_staleness_and_seconds_since_are_read_time_and_never_negative() -> None:
    assert staleness_ms(1_000, 3_500) == 2_500
    assert staleness_ms(4_000, 3_500) == 0
    assert staleness_ms(None, 3_500) is None
    assert seconds_since(1_000, 3_500) == 2.5
    assert seconds_since(9_000, 3_500) == 0
    assert seconds_since(None, 3_500) is None


ROW = {"as_of": 10_000, "version": 4, "updated_at": 10_200, "clicks_1h": 3, "spend_24h": 2.5,
       "ctr_1h": None, "last_event_ts": 9_000}


def test_features_body_has_freshness_and_no_meta_fields() -> None:
    assert msgspec.to_builtins(features_body("u", ROW, None, 12_000)) == {
        "user_id": "u", "as_of": 10_000, "updated_at": 10_200, "staleness_ms": 2_000,
        "seconds_since_last_event": 3.0,
        "features": {"clicks_1h": 3, "spend_24h": 2.5, "ctr_1h": None, "last_event_ts": 9_000}}
    selected = features_body("u", ROW, ("ctr_1h", "clicks_1h"), 12_000).features
    assert isinstance(selected, dict)
    assert list(selected.items()) == [("ctr_1h", None), ("clicks_1h", 3)]


def fresh(*rows: Any) -> list[ServedRow]:
    """``rows`` as read from Redis now."""
    return [ServedRow(row, "redis", None) for row in rows]


def test_batch_body_keeps_request_order_and_marks_missing_users() -> None:
    body = msgspec.to_builtins(batch_body(["b", "a", "b"], fresh(None, ROW, None), ("clicks_1h",),
                                          12_000))
    assert body["results"][0] == {"user_id": "b", "found": False}
    assert body["results"][1]["user_id"] == "a" and body["results"][1]["found"] is True
    assert body["results"][1]["features"] == {"clicks_1h": 3}
    assert body["results"][2] == {"user_id": "b", "found": False}


def test_scores_body_gives_each_model_its_staleness() -> None:
    scores = {"risk": Score("risk", 2, "v2", 0.5, "e1", 11_000, 10_000),
              "churn": Score("churn", 1, "latest", 0.1, "e0", 9_500, 9_000)}
    body = msgspec.to_builtins(scores_body("u", scores, 12_000))
    assert body["as_of"] == 10_000 and body["staleness_ms"] == 2_000
    assert list(body["scores"]) == ["churn", "risk"]
    assert body["scores"]["churn"] == {"model": "churn", "version": 1, "variant": "latest",
                                       "score": 0.1, "event_id": "e0", "scored_at": 9_500,
                                       "as_of": 9_000, "experiment": None,
                                       "staleness_ms": 3_000}


# --- the cache -------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cache_holds_values_and_known_absences_for_the_ttl() -> None:
    clock = Clock()
    cache = TTLCache(ttl_ms=500, max_entries=10, clock=clock)
    assert cache.get("a") is MISS
    cache.put("a", {"x": 1})
    cache.put("gone", None)
    clock.now += 0.4
    assert cache.get("a") == {"x": 1} and cache.get("gone") is None
    clock.now += 0.2
    assert cache.get("a") is MISS and cache.get("gone") is MISS


def test_cache_is_bounded_oldest_out_and_a_put_refreshes() -> None:
    clock = Clock()
    cache = TTLCache(ttl_ms=1_000, max_entries=2, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 3)  # refreshed: now the newest
    cache.put("c", 4)
    assert [cache.get(k) for k in "abc"] == [3, MISS, 4]


# --- Redis URLs ---------------------------------------------------------------------------------

def test_redis_urls() -> None:
    plain = parse_redis_url("redis://127.0.0.1:6390/2")
    assert (plain.host, plain.port, plain.db, plain.password, plain.tls) == (
        "127.0.0.1", 6390, 2, "", None)
    auth = parse_redis_url("redis://reader:p%40ss%3Aw@redis.internal/0")
    assert (auth.username, auth.password, auth.port) == ("reader", "p@ss:w", 6379)
    assert "p@ss" not in auth.describe()
    tls = parse_redis_url("rediss://:pw@host:6380")
    assert tls.tls is not None and tls.tls.verify_mode == ssl.CERT_REQUIRED
    assert tls.describe() == "rediss://host:6380/0"
    unverified = parse_redis_url("rediss://host?ssl_cert_reqs=none")
    assert unverified.tls is not None and unverified.tls.verify_mode == ssl.CERT_NONE
    unix = parse_redis_url("unix:///run/redis.sock?db=3")
    assert (unix.unix_path, unix.db) == ("/run/redis.sock", 3)


@pytest.mark.parametrize("url", ["http://host", "redis://host:port/0", "unix://", "redis://h/x"])
def test_bad_redis_urls_never_echo_the_url(url: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_redis_url(url.replace("://", "://:secret@", 1) if "unix" not in url else url)
    assert "secret" not in str(err.value)


# --- one round trip per read ------------------------------------------------------------------

class FakeRedis:
    """Answers HGETALL from a dict of hashes; records each round trip."""

    def __init__(self, hashes: dict[str, dict[str, str]]) -> None:
        self.hashes = hashes
        self.round_trips: list[list[tuple[str, ...]]] = []

    async def execute(self, commands: list[tuple[str, ...]]) -> list[list[str]]:
        self.round_trips.append(commands)
        return [[x for kv in self.hashes.get(c[1], {}).items() for x in kv] for c in commands]


def hashes(*user_ids: str) -> dict[str, dict[str, str]]:
    return {user_key("fs:", u): {k: encode_value(v) for k, v in ROW.items()} for u in user_ids}


def test_a_batch_is_one_round_trip_with_duplicates_read_once() -> None:
    redis = FakeRedis(hashes("a", "b"))
    store = FeatureStore(redis, "fs:", None, Metrics())  # type: ignore[arg-type]
    rows = [s.row for s in asyncio.run(store.rows_with_fallback("user", ["b", "x", "a", "b"],
                                                                None))]
    assert [r is not None for r in rows] == [True, False, True, True]
    assert rows[0] == ROW
    assert redis.round_trips == [[("HGETALL", "fs:user:b"), ("HGETALL", "fs:user:x"),
                                  ("HGETALL", "fs:user:a")]]


def test_the_cache_leaves_only_misses_for_redis() -> None:
    redis = FakeRedis(hashes("a"))
    metrics = Metrics()
    store = FeatureStore(redis, "fs:", TTLCache(60_000, 100), metrics)  # type: ignore[arg-type]
    asyncio.run(store.rows_with_fallback("user", ["a", "x"], None))
    asyncio.run(store.rows_with_fallback("user", ["x", "a", "b"], None))
    assert redis.round_trips[1] == [("HGETALL", "fs:user:b")]
    sample = metrics.registry.get_sample_value
    assert sample("featurestream_reader_cache_hits_total") == 2
    assert sample("featurestream_reader_cache_misses_total") == 3


def test_scores_are_read_from_the_score_key() -> None:
    score = Score("risk", 2, "v2", 0.5, "e1", 11_000, 10_000)
    redis = FakeRedis({score_key("fs:", "a"): {"risk": encode_score(score)}})
    store = FeatureStore(redis, "fs:", None, Metrics())  # type: ignore[arg-type]
    assert asyncio.run(store.scores("a")) == {"risk": score}
    assert asyncio.run(store.scores("b")) is None


# --- OpenAPI and settings ------------------------------------------------------------------

def test_every_route_is_documented_and_auth_is_marked_when_on() -> None:
    for auth in (False, True):
        doc = openapi_document(ROUTES, ReaderContract({"user": VALID}, 100), auth)
        for route in ROUTES:
            operation = doc["paths"][route.path][route.method.lower()]
            assert operation["responses"]
            assert ("security" in operation) == (auth and route.protected)
        msgspec.json.encode(doc)


def test_reader_settings_from_env() -> None:
    settings = Settings.from_env({"FEATURESTREAM_SERVE_PORT": "9000",
                                  "FEATURESTREAM_REDIS_TIMEOUT_MS": "250ms",
                                  "FEATURESTREAM_CACHE_TTL_MS": "2s",
                                  "FEATURESTREAM_AUTH_TOKEN": "0123456789abcdef"})
    assert (settings.serve_port, settings.redis_timeout_ms, settings.cache_ttl_ms) == (
        9000, 250, 2000)
    defaults = Settings()
    assert (defaults.cache_ttl_ms, defaults.cache_invalidation,
            defaults.auth_token.get_secret_value(), defaults.serve_workers) == (1000, True, "", 2)


@pytest.mark.parametrize(("name", "value"), [
    ("SERVE_PORT", "0"), ("SERVE_PORT", "70000"), ("SERVE_WORKERS", "0"),
    ("REDIS_TIMEOUT_MS", "0"), ("CACHE_TTL_MS", "-1"), ("CACHE_MAX_ENTRIES", "0"),
    ("MAX_BATCH_SIZE", "0"), ("SERVE_HOST", " "), ("AUTH_TOKEN", "short"),
    ("AUTH_TOKEN", "long enough but has spaces"),
])
def test_bad_reader_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({f"FEATURESTREAM_{name}": value})
    assert f"FEATURESTREAM_{name}" in str(err.value)
    if name == "AUTH_TOKEN":
        assert value not in str(err.value)


# --- the contract's types and the document generated from them --------------------------------

def batch_request_schema(contract: ReaderContract) -> dict[str, Any]:
    doc = openapi_document(ROUTES, contract, False)
    operation = doc["paths"]["/v1/features/batch"]["post"]
    return {**operation["requestBody"]["content"]["application/json"]["schema"],
            "components": doc["components"]}


def test_the_request_type_is_the_batch_request_with_this_readers_limits() -> None:
    assert issubclass(CONTRACT.batch_request, BatchRequest)
    assert CONTRACT.batch_request.__struct_fields__ == BatchRequest.__struct_fields__
    schema = batch_request_schema(CONTRACT)["components"]["schemas"]["BatchRequest"]
    assert schema["properties"]["user_ids"]["maxItems"] == 3
    assert sorted(schema["properties"]["names"]["anyOf"][0]["items"]["enum"]) == sorted(VALID)


batch_bodies = st.fixed_dictionaries(
    {"user_ids": st.lists(st.one_of(st.sampled_from(["a", "b.c@d", "b c", "a\n", ""]),
                                    st.integers()), max_size=5)},
    optional={"names": st.one_of(st.none(), st.text(), st.lists(
        st.one_of(st.sampled_from([*VALID, "nope"]), st.integers()), max_size=3)),
        "extra": st.integers()})


@given(st.one_of(batch_bodies, st.lists(st.integers()), st.text()))
def test_the_document_accepts_exactly_the_bodies_the_reader_accepts(body: object) -> None:
    validator = jsonschema.Draft202012Validator(batch_request_schema(CONTRACT))
    try:
        parse_batch(msgspec.json.encode(body), CONTRACT)
        accepted = True
    except ApiError:
        accepted = False
    assert validator.is_valid(body) == accepted


def test_answers_encode_in_the_documented_order_and_omit_what_is_absent() -> None:
    features = msgspec.json.encode(features_body("u", ROW, None, 12_000))
    assert list(orjson.loads(features)) == ["user_id", "as_of", "updated_at", "staleness_ms",
                                            "seconds_since_last_event", "features"]
    batch = msgspec.json.encode(batch_body(["a", "b"], fresh(ROW, None), ("ctr_1h",), 12_000))
    assert batch.endswith(b'"features":{"ctr_1h":null},"found":true},'
                          b'{"user_id":"b","found":false}]}')
    assert msgspec.json.encode(ErrorBody("unknown_user", "no such")) == (
        b'{"error":"unknown_user","message":"no such"}')


def test_the_document_is_valid_json_schema_and_names_every_error_body() -> None:
    doc = openapi_document(ROUTES, ReaderContract({"user": VALID}, 100), True)
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for route in ROUTES:
        responses = doc["paths"][route.path][route.method.lower()]["responses"]
        for status in route.errors:
            assert responses[str(status)]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"}


# --- entities: routes, validation, shapes -----------------------------------------------------

ITEM_NAMES = ("views_1h", "last_buyer", "recent_buyers")
ENTITIES = ReaderContract({"user": VALID, "item": ITEM_NAMES}, 3)
ITEM_ROW: dict[str, RowValue] = {"as_of": 10_000, "version": 2, "updated_at": 10_100, "views_1h": 3,
            "last_buyer": "u-1", "recent_buyers": ["u-1", "u|2"],
            "warming_up": {"views_1h": 13_000}}


def test_an_unknown_entity_is_a_404_naming_the_known_ones() -> None:
    assert check_entity("item", ENTITIES).feature_names == ITEM_NAMES
    for entity in ("items", "score", "USER", "user:x", "", "x" * 300):
        with pytest.raises(ApiError) as err:
            check_entity(entity, ENTITIES)
        assert err.value.status == 404 and err.value.body.error == "unknown_entity"
        assert err.value.body.valid == ["user", "item"]
        assert "user, item" in err.value.body.message


ALLOWED_IN_ENTITY_IDS = ALLOWED | {"|"}


@given(st.text(max_size=300), st.sampled_from(["user", "item"]))
def test_an_accepted_entity_id_only_ever_names_its_entitys_key(entity_id: str,
                                                                entity: str) -> None:
    try:
        check_entity_id(entity_id)
    except ApiError as err:
        assert err.body.error == "invalid_id"
        return
    assert set(entity_id) <= ALLOWED_IN_ENTITY_IDS and 1 <= len(entity_id) <= 256
    key = entity_key("fs:", entity, entity_id)
    assert key == f"fs:{entity}:{entity_id}" and not key.startswith("fs:score:")
    # the entity is the text between the prefix and the first ":" -- no id can move it
    assert key[len("fs:"):].split(":", 1)[0] == entity


def test_entity_batch_bodies_are_checked_against_the_entitys_names() -> None:
    item = ENTITIES.entities["item"]
    batch = parse_entity_batch(b'{"ids": ["a|b", "c"], "names": ["last_buyer"]}', item, 3)
    assert batch.ids == ["a|b", "c"] and batch.names == ["last_buyer"]
    with pytest.raises(ApiError) as err:
        parse_entity_batch(b'{"ids": ["a"], "names": ["clicks_1h"]}', item, 3)  # a user's
    assert err.value.body.error == "unknown_feature" and err.value.body.valid == list(ITEM_NAMES)


@pytest.mark.parametrize(("body", "status", "error"), [
    (b"nope", 400, "invalid_json"),
    (b'{"user_ids": ["a"]}', 400, "invalid_body"),
    (b'{"ids": []}', 400, "invalid_body"),
    (b'{"ids": ["a", 1]}', 400, "invalid_id"),
    (b'{"ids": ["a", "b c"]}', 400, "invalid_id"),
    (b'{"ids": ["a", "b", "c", "d"]}', 413, "batch_too_large"),
])
def test_bad_entity_batch_bodies(body: bytes, status: int, error: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_entity_batch(body, ENTITIES.entities["item"], 3)
    assert (err.value.status, err.value.body.error) == (status, error)
    if error == "invalid_id":
        assert err.value.body.message.startswith("ids[1] ")


def test_entity_body_types_values_and_surfaces_warming_up() -> None:
    body = msgspec.json.encode(entity_body("item", "sku-1", ITEM_ROW, None, 12_000))
    assert orjson.loads(body) == {
        "entity": "item", "id": "sku-1", "as_of": 10_000, "updated_at": 10_100,
        "staleness_ms": 2_000, "seconds_since_last_event": None,
        "features": {"views_1h": 3, "last_buyer": "u-1", "recent_buyers": ["u-1", "u|2"]},
        "warming_up": {"views_1h": 13_000}}
    batch = msgspec.to_builtins(entity_batch_body("item", ["x", "sku-1"], fresh(None, ITEM_ROW),
                                                  ("last_buyer",), 12_000))
    assert batch["results"][0] == {"entity": "item", "id": "x", "found": False}
    assert batch["results"][1]["features"] == {"last_buyer": "u-1"}
    assert batch["results"][1]["found"] is True


def test_a_users_warming_up_is_a_field_only_when_present() -> None:
    assert "warming_up" not in msgspec.to_builtins(features_body("u", ROW, None, 12_000))
    warming: dict[str, RowValue] = {**ROW, "warming_up": {"clicks_1h": None}}
    body = msgspec.to_builtins(features_body("u", warming, None, 12_000))
    assert body["warming_up"] == {"clicks_1h": None} and "warming_up" not in body["features"]


def test_an_entity_is_read_from_its_own_keys() -> None:
    redis = FakeRedis({"fs:item:sku-1": {k: encode_value(v) for k, v in ITEM_ROW.items()}})
    store = FeatureStore(redis, "fs:", None, Metrics())  # type: ignore[arg-type]
    rows = [s.row for s in asyncio.run(store.rows_with_fallback("item", ["sku-1", "nope"],
                                                                None))]
    assert rows == [ITEM_ROW, None]
    assert redis.round_trips == [[("HGETALL", "fs:item:sku-1"), ("HGETALL", "fs:item:nope")]]


def test_the_document_has_the_entity_routes_with_the_declared_entities() -> None:
    doc = openapi_document(ROUTES, ENTITIES, False)
    get = doc["paths"]["/v1/features/{entity}/{id}"]["get"]
    [entity, entity_id, names, staleness] = get["parameters"]
    assert (entity["name"], entity_id["name"], names["name"], staleness["name"]) == (
        "entity", "id", "names", "max_staleness_ms")
    assert (staleness["schema"]["minimum"], staleness["in"]) == (0, "query")
    assert sorted(entity["schema"]["enum"]) == ["item", "user"]
    post = doc["paths"]["/v1/features/{entity}/batch"]["post"]
    assert set(post["responses"]) == {"200", "400", "401", "404", "413", "503"}
    schema = doc["components"]["schemas"]["EntityBatchRequest"]
    assert schema["properties"]["ids"]["maxItems"] == 3


def test_definitions_without_users_leave_the_user_routes_a_404() -> None:
    items_only = ReaderContract({"item": ITEM_NAMES}, 3)
    assert items_only.feature_names == () and items_only.entity_names == ("item",)
    with pytest.raises(ApiError) as err:
        check_entity("user", items_only)
    assert (err.value.status, err.value.body.valid) == (404, ["item"])
    doc = openapi_document(ROUTES, items_only, False)  # still a valid document
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
