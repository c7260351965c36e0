"""One micro-batch through the scorer: scores equal predict on the recorded vector; the rows the
feature job captured for each event, of every entity the batch's models read, come in one
lookup (waiting for rows not captured yet); every bad record becomes exactly one dead letter with
its stage, reason, model version and bytes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec, ScoreRecord
from featurestream.udfs.scoring.scorer import (
    SCORER_DEAD_LETTERS,
    BatchScorer,
    CapturedKey,
    Waiting,
)
from featurestream.udfs.scoring.variants import VariantAssigner, parse_experiment
from featurestream.udfs.scoring.vector import Row
from featurestream.udfs.wire.dead_letters import (
    HEADER_EXCEPTION_CLASS,
    HEADER_EXCEPTION_MESSAGE,
    HEADER_MODEL_VERSION,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_STAGE,
    HEADER_TOPIC,
    ErrorClass,
    Problem,
    Stage,
)
from featurestream.udfs.wire.frames import decode_sink_frame as decode_frame
from featurestream.udfs.wire.frames import encode_source_frame
from testing.model_fixtures import CATALOG, FEATURES, NAME, publish

SCHEMAS = FileSchemaRegistry()
ENCODER = EventEncoder(SCHEMAS)
CODEC = ScoreCodec(SCHEMAS, "scores-value")
NOW = 1_800_000_000_000


def event(event_id: str, user_id: str, event_type: str = "purchase",
          amount: float | None = 20.0, item_id: str | None = "item-1") -> Event:
    return Event(event_id, user_id, event_type, item_id, amount, 1_700_000_000_000, None)


def frame(value: bytes, offset: int) -> bytes:
    return encode_source_frame("events", 1, offset, 0, value)


RowKey = tuple[str, str]  # (entity, id)


class FakeStore:
    """The scorer's two Redis ports. The feature job's captures: every event of an entity was
    captured with its row in ``rows`` (by ``(entity, id)``; a user id alone is a user's), an
    entity not in it had no row; the events in ``late`` are captured only from the
    ``late_call``-th lookup on. Records each call."""

    def __init__(self, rows: Mapping[str | RowKey, Row | Problem],
                 late: Sequence[str] = (), late_call: int = 1_000_000) -> None:
        self._rows = {key if isinstance(key, tuple) else ("user", key): row
                      for key, row in rows.items()}
        self._late, self._late_call = frozenset(late), late_call
        self.calls: list[list[CapturedKey]] = []
        self.written: list[list[ScoreRecord]] = []

    def captured(self, keys: Sequence[CapturedKey]) -> dict[CapturedKey, Row | Problem | None]:
        self.calls.append(list(keys))
        ready = len(self.calls) >= self._late_call
        return {k: self._rows.get(k[:2]) for k in keys if ready or k[2] not in self._late}

    def write_latest(self, scores: Sequence[ScoreRecord]) -> None:
        self.written.append(list(scores))


def decode_sink_frame(output: bytes | None) -> tuple[str, bytes | None, list, bytes]:
    """The sink frame an input became (None only for an event type that is not scored)."""
    assert output is not None
    return decode_frame(output)


class FakeTime:
    """A monotonic clock that only sleeps move."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def scorer(directory: Path, experiment: str = "", shadow: int | None = None,
           store: FakeStore | None = None, clock: FakeTime | None = None) -> BatchScorer:
    models = ServingModels(ModelRegistry(directory, NAME), parse_experiment(experiment), shadow,
                           1_000)
    store = store or FakeStore({})
    clock = clock or FakeTime()
    return BatchScorer(models, EventDecoder(SCHEMAS), CODEC, {"purchase"}, "scores",
                       "scores.dlq", CATALOG, rows=store, latest_scores=store,
                       waiting=Waiting(2_000, clock.sleep, lambda: clock.now),
                       max_future_skew_ms=3_600_000, clock_ms=lambda: NOW)


ROWS: dict[str | RowKey, Row | Problem] = {
    "u-known": {"as_of": 1_699_999_999_000, "version": 4, "purchases_5m": 2, "spend_1h": 55.5}}


def test_scores_equal_predict_on_the_recorded_vector(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    good = [event("e1", "u-known"), event("e2", "u-new"), event("e3", "u-known", amount=99.0)]
    frames = [frame(ENCODER.avro(e), i) for i, e in enumerate(good)]
    frames.append(frame(ENCODER.json(event("e4", "u-known", "view", None)), 3))
    fetch = FakeStore(ROWS)
    batch = scorer(tmp_path, store=fetch).score(frames)
    assert fetch.calls == [[("user", "u-known", "e1"), ("user", "u-new", "e2"),
                            ("user", "u-known", "e3")]], "one lookup per batch: each event's rows"
    assert fetch.written == [batch.scores], "the batch's scores go to the latest-scores port"
    assert batch.outputs[3] is None, "views are not scored"
    model = registry.load(1)
    for i, source in enumerate(good):
        topic, key, headers, value = decode_sink_frame(batch.outputs[i])
        assert (topic, key, headers) == ("scores", source.user_id.encode(), [])
        score = CODEC.decode(value)
        assert score == batch.scores[i]
        assert list(score["features"]) == list(FEATURES)
        vector = np.array([list(score["features"].values())])
        assert score["score"] == pytest.approx(model.predict(vector)[0], abs=1e-12)
        assert (score["model"], score["version"], score["variant"]) == (NAME, 1, "latest")
        assert score["event_id"] == source.event_id and score["scored_at"] == NOW
        assert score["shadow"] is None
    first, new_user = batch.scores[0], batch.scores[1]
    assert first["features"] == {"amount": 20.0, "hour_of_day": 22.0, "purchases_5m": 2.0,
                                 "spend_1h": 55.5}
    assert (first["features_missing"], first["as_of"]) == (False, 1_699_999_999_000)
    assert (new_user["features_missing"], new_user["as_of"]) == (True, None)
    assert new_user["features"]["purchases_5m"] == 0.0
    assert not batch.dead


def headers_of(output: bytes | None) -> dict[str, str]:
    return {k: v.decode() for k, v in decode_sink_frame(output)[2]}


def test_bad_records_become_dead_letters_with_their_reason(tmp_path: Path) -> None:
    publish(tmp_path, 1, defaults={})  # a model that needs every feature
    rows: dict[str | RowKey, Row | Problem] = {
        **ROWS, "u-inf": {"as_of": 1, "purchases_5m": float("inf"), "spend_1h": 1.0},
        "u-corrupt": Problem(Stage.FEATURES, ErrorClass.CORRUPT_FEATURE_ROW, "unreadable")}
    values = [
        b"not an event",
        ENCODER.json(event("e1", "u-new")),
        ENCODER.json(event("e2", "u-inf")),
        ENCODER.json(event("e3", "u-corrupt")),
        ENCODER.json(event("e4", "u-known")),
    ]
    batch = scorer(tmp_path, store=FakeStore(rows)).score(
        [frame(v, 10 + i) for i, v in enumerate(values)])
    expected = [(None, "decode", "MalformedRecord", None),
                (b"u-new", "features", "UnknownUser", "1"),
                (b"u-inf", "features", "NonFiniteFeature", "1"),
                (b"u-corrupt", "features", "CorruptFeatureRow", "1")]
    for i, (user_key, stage, error_class, version) in enumerate(expected):
        topic, key, _, value = decode_sink_frame(batch.outputs[i])
        headers = headers_of(batch.outputs[i])
        assert (topic, key, value) == ("scores.dlq", user_key, values[i])
        assert headers[HEADER_STAGE] == stage
        assert headers[HEADER_EXCEPTION_CLASS] == error_class
        assert headers[HEADER_EXCEPTION_MESSAGE]
        assert (headers[HEADER_TOPIC], headers[HEADER_PARTITION]) == ("events", "1")
        assert headers[HEADER_OFFSET] == str(10 + i)
        assert headers.get(HEADER_MODEL_VERSION) == version
    assert decode_sink_frame(batch.outputs[4])[0] == "scores"
    assert batch.dead == {(s, c): 1 for _, s, c, _ in expected}
    assert batch.dead_by_stage() == {"decode": 1, "features": 3}


def test_model_errors_dead_letter_only_that_models_records(tmp_path: Path) -> None:
    publish(tmp_path, 1)
    publish(tmp_path, 2, seed=1)
    scorer_ = scorer(tmp_path, "v1:50,v2:50")
    scorer_.models.refresh()

    def broken(vectors: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    for route in (scorer_.models.route(f"u-{i}") for i in range(20)):
        if route.version == 2:
            object.__setattr__(route.model, "predict", broken)
    users = [f"u-{i}" for i in range(20)]
    frames = [frame(ENCODER.avro(event(f"e{i}", u)), i) for i, u in enumerate(users)]
    batch = scorer_.score(frames)
    assigner = VariantAssigner(parse_experiment("v1:50,v2:50"))
    for user, output in zip(users, batch.outputs, strict=True):
        if assigner.assign(user).version == 2:
            headers = headers_of(output)
            assert headers[HEADER_STAGE] == "model"
            assert headers[HEADER_EXCEPTION_CLASS] == "RuntimeError"
            assert headers[HEADER_EXCEPTION_MESSAGE] == "boom"
            assert headers[HEADER_MODEL_VERSION] == "2"
        else:
            assert CODEC.decode(decode_sink_frame(output)[3])["variant"] == "v1"
    assert 0 < batch.dead_by_stage()[Stage.MODEL] < 20


def test_unavailable_model_dead_letters_and_shadow_is_never_served(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    publish(tmp_path, 2, seed=1)
    frames = [frame(ENCODER.avro(event("e1", "u-known")), 0)]
    batch = scorer(tmp_path, "v1:100", shadow=2, store=FakeStore(ROWS)).score(frames)
    score = batch.scores[0]
    shadow = registry.load(2).predict(np.array([list(score["features"].values())]))[0]
    assert score["version"] == 1
    assert score["shadow"] is not None
    assert score["shadow"]["version"] == 2
    assert score["shadow"]["score"] == pytest.approx(shadow, abs=1e-12)
    missing = scorer(tmp_path, "v7:100", shadow=9, store=FakeStore(ROWS)).score(frames)
    headers = headers_of(missing.outputs[0])
    assert (headers[HEADER_STAGE], headers[HEADER_EXCEPTION_CLASS]) == ("model",
                                                                      "ModelUnavailable")
    assert headers[HEADER_MODEL_VERSION] == "7"
    with_bad_shadow = scorer(tmp_path, "v1:100", shadow=9, store=FakeStore(ROWS)).score(frames)
    assert with_bad_shadow.scores[0]["shadow"] == {"version": 9, "score": None}
    assert with_bad_shadow.shadow_failures == 1


ITEM_MODEL = ("amount", "purchases_5m", "item.views_1h", "user.spend_1h")
ENTITY_ROWS: dict[str | RowKey, Row | Problem] = {
    **ROWS,
    ("item", "item-1"): {"as_of": 1_699_999_998_000, "version": 9, "views_1h": 120},
    ("item", "item-bad"): Problem(Stage.FEATURES, ErrorClass.CORRUPT_FEATURE_ROW, "unreadable"),
}


def test_a_model_reads_the_rows_of_several_entities_in_one_lookup(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1, ITEM_MODEL, defaults={"purchases_5m": 0.0,
                                                          "user.spend_1h": 0.0})
    events = [event("e1", "u-known"), event("e2", "u-new"), event("e3", "u-known", item_id="x"),
              event("e4", "u-known", item_id=None), event("e5", "u-known", item_id="item-bad")]
    store = FakeStore(ENTITY_ROWS)
    batch = scorer(tmp_path, store=store).score(
        [frame(ENCODER.avro(e), i) for i, e in enumerate(events)])
    assert store.calls == [[("user", "u-known", "e1"), ("item", "item-1", "e1"),
                            ("user", "u-new", "e2"), ("item", "item-1", "e2"),
                            ("user", "u-known", "e3"), ("item", "x", "e3"),
                            ("user", "u-known", "e4"),
                            ("user", "u-known", "e5"), ("item", "item-bad", "e5")]]
    known, new_user = batch.scores
    assert known["features"] == {"amount": 20.0, "purchases_5m": 2.0, "item.views_1h": 120.0,
                                 "user.spend_1h": 55.5}
    assert known["score"] == pytest.approx(
        registry.load(1).predict(np.array([list(known["features"].values())]))[0], abs=1e-12)
    assert (known["as_of"], known["features_missing"]) == (1_699_999_998_000, False)
    assert new_user["features"]["purchases_5m"] == 0.0
    assert (new_user["as_of"], new_user["features_missing"]) == (1_699_999_998_000, True)
    expected = [("MissingFeature", "item 'x' has no feature row"),
                ("MissingFeature", "the event names no item (key item_id null or absent)"),
                ("CorruptFeatureRow", "unreadable")]
    for output, (error_class, message) in zip(batch.outputs[2:], expected, strict=True):
        headers = headers_of(output)
        assert (headers[HEADER_STAGE], headers[HEADER_EXCEPTION_CLASS]) == ("features",
                                                                          error_class)
        assert message in headers[HEADER_EXCEPTION_MESSAGE]
    assert batch.dead_by_stage() == {"features": 3}


def test_the_shadows_entities_are_read_in_the_same_lookup(tmp_path: Path) -> None:
    publish(tmp_path, 1)
    shadow = publish(tmp_path, 2, ITEM_MODEL, defaults={"item.views_1h": -1.0}, seed=1)
    store = FakeStore(ENTITY_ROWS)
    batch = scorer(tmp_path, "v1:100", shadow=2, store=store).score(
        [frame(ENCODER.avro(event("e1", "u-known")), 0)])
    assert store.calls == [[("user", "u-known", "e1"), ("item", "item-1", "e1")]]
    score = batch.scores[0]
    assert (score["version"], score["as_of"]) == (1, 1_699_999_999_000), "v1 reads users only"
    vector = np.array([[20.0, 2.0, 120.0, 55.5]])
    assert score["shadow"] == {"version": 2,
                               "score": pytest.approx(shadow.load(2).predict(vector)[0])}


def test_a_version_naming_features_the_definitions_lack_is_refused(tmp_path: Path) -> None:
    publish(tmp_path, 1, ("amount", "item.clicks_1h"), defaults={})
    store = FakeStore(ENTITY_ROWS)
    batch = scorer(tmp_path, store=store).score([frame(ENCODER.avro(event("e1", "u-known")), 0)])
    headers = headers_of(batch.outputs[0])
    assert (headers[HEADER_STAGE], headers[HEADER_EXCEPTION_CLASS]) == ("model",
                                                                      "ModelUnavailable")
    assert headers[HEADER_EXCEPTION_MESSAGE].startswith(
        f"{NAME} v1 names features the definitions do not provide: 'item.clicks_1h': entity "
        "'item' has no feature 'clicks_1h'")
    assert headers[HEADER_MODEL_VERSION] == "1"
    assert store.calls == [], "nothing to read for a refused version"


def test_rows_not_captured_yet_are_waited_for_then_dead_lettered(tmp_path: Path) -> None:
    publish(tmp_path, 1)
    frames = [frame(ENCODER.avro(event(f"e{i}", "u-known")), i) for i in range(3)]
    clock = FakeTime()
    store = FakeStore(ROWS, late=["e1"], late_call=4)
    batch = scorer(tmp_path, store=store, clock=clock).score(frames)
    assert [s["event_id"] for s in batch.scores] == ["e0", "e1", "e2"], "e1 was waited for"
    assert batch.scores[1]["features"] == batch.scores[0]["features"]
    assert store.calls[1:] == [[("user", "u-known", "e1")]] * 3, "only the missing are asked again"
    assert clock.sleeps == [0.002, 0.004, 0.008]
    never = FakeStore(ROWS, late=["e1"])
    clock = FakeTime()
    batch = scorer(tmp_path, store=never, clock=clock).score(frames)
    assert [s["event_id"] for s in batch.scores] == ["e0", "e2"]
    headers = headers_of(batch.outputs[1])
    assert (headers[HEADER_STAGE], headers[HEADER_EXCEPTION_CLASS]) == ("features",
                                                                      "FeaturesNotReady")
    assert "FEATURESTREAM_POINT_IN_TIME_WAIT_MS (2000 ms)" in headers[HEADER_EXCEPTION_MESSAGE]
    assert 2.0 <= clock.now < 2.0 + 0.02, "waited the configured time, then gave up"


def test_an_event_stamped_in_the_future_is_refused_as_the_feature_job_refuses_it(
        tmp_path: Path) -> None:
    publish(tmp_path, 1)
    future = event("e1", "u-known")._replace(ts=NOW + 3_600_001)
    store = FakeStore(ROWS)
    batch = scorer(tmp_path, store=store).score([frame(ENCODER.avro(future), 0)])
    headers = headers_of(batch.outputs[0])
    assert (headers[HEADER_STAGE], headers[HEADER_EXCEPTION_CLASS]) == ("window", "FutureEvent")
    assert store.calls == [] and batch.dead_by_stage() == {"window": 1}


def test_scoring_dead_letter_names_are_stable() -> None:
    """Users alert on these exact strings (the DLQ's stage and exception class headers)."""
    assert [Stage.DECODE, Stage.FEATURES, Stage.MODEL] == ["decode", "features", "model"]
    assert [ErrorClass.UNKNOWN_USER, ErrorClass.MISSING_FEATURE, ErrorClass.NON_FINITE_FEATURE,
            ErrorClass.CORRUPT_FEATURE_ROW, ErrorClass.FEATURES_NOT_READY,
            ErrorClass.MODEL_UNAVAILABLE, ErrorClass.NON_FINITE_SCORE] == [
        "UnknownUser", "MissingFeature", "NonFiniteFeature", "CorruptFeatureRow",
        "FeaturesNotReady", "ModelUnavailable", "NonFiniteScore"]


class MetricGroup:
    """Flink's metric group as the scoring function uses it: groups by name or key/value,
    counters by their full path (``featurestream/model=.../scores``)."""

    def __init__(self, counters: dict[str, int] | None = None, path: str = "") -> None:
        self.counters = {} if counters is None else counters
        self._path = path

    def add_group(self, name: str, extra: str | None = None) -> MetricGroup:
        part = name if extra is None else f"{name}={extra}"
        return MetricGroup(self.counters, f"{self._path}{part}/")

    def counter(self, name: str) -> SimpleNamespace:
        path = self._path + name
        self.counters[path] = 0

        def inc(n: int = 1) -> None:
            self.counters[path] += n
        return SimpleNamespace(inc=inc)


def test_each_batch_hands_out_its_vectors_with_nulls_and_its_metrics(tmp_path: Path) -> None:
    from featurestream.jobs.scoring.function import ScoringMetrics  # PyFlink: only here

    publish(tmp_path, 1)
    publish(tmp_path, 2, seed=1)
    scorer_ = scorer(tmp_path, "v1:100", shadow=9, store=FakeStore(ROWS))
    values = [ENCODER.avro(event("e1", "u-known")), ENCODER.avro(event("e2", "u-new")),
              b"not an event"]
    batch = scorer_.score([frame(v, i) for i, v in enumerate(values)])
    (scored,) = batch.scored
    assert (scored.metadata.version, scored.variant) == (1, "v1")
    assert scored.scores.tolist() == [s["score"] for s in batch.scores]
    hour = 22.0  # 1_700_000_000_000 is 22:13 UTC
    np.testing.assert_array_equal(scored.vectors, np.array(
        [[20.0, hour, 2.0, 55.5], [20.0, hour, math.nan, math.nan]]))
    assert batch.scores[1]["features"] == {"amount": 20.0, "hour_of_day": hour,
                                           "purchases_5m": 0.0, "spend_1h": 0.0}, \
        "a score shows the defaults the model saw"
    assert scored.fallbacks() == 1

    group = MetricGroup()
    metrics = ScoringMetrics(group, scorer_.models, NAME)
    metrics.count(batch)
    metrics.count(batch)
    labels = f"model={NAME}/version=1"
    registered = {path for path in group.counters if path.endswith("/dead_letters")}
    assert registered == {f"featurestream/stage={stage}/reason={reason}/dead_letters"
                          for stage, reason in SCORER_DEAD_LETTERS}, "each exists from the start"
    assert {path: n for path, n in group.counters.items() if n} == {
        "scored_events": 4, "scores_dlq": 2,
        f"featurestream/{labels}/variant=v1/scores": 4,
        f"featurestream/{labels}/fallbacks": 2,
        "featurestream/stage=decode/reason=MalformedRecord/dead_letters": 2,
        f"featurestream/model={NAME}/version=9/shadow_failures": 4,
        f"featurestream/model={NAME}/reloads": 1}
