"""One micro-batch through the scorer: scores equal predict on the recorded vector; every bad
record becomes exactly one dead letter with its stage, reason, model version and bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec
from featurestream.udfs.scoring.scorer import BatchScorer
from featurestream.udfs.scoring.variants import VariantAssigner, parse_experiment
from featurestream.udfs.scoring.vector import FeatureProblem
from featurestream.udfs.wire.dead_letters import (
    HEADER_EXCEPTION_CLASS,
    HEADER_EXCEPTION_MESSAGE,
    HEADER_MODEL_VERSION,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_STAGE,
    HEADER_TOPIC,
)
from featurestream.udfs.wire.frames import decode_sink_frame, encode_source_frame

from testing.model_fixtures import FEATURES, NAME, publish

SCHEMAS = FileSchemaRegistry()
ENCODER = EventEncoder(SCHEMAS)
CODEC = ScoreCodec(SCHEMAS, "scores-value")
NOW = 1_800_000_000_000


def event(event_id: str, user_id: str, event_type: str = "purchase",
          amount: float | None = 20.0) -> Event:
    return Event(event_id, user_id, event_type, "item-1", amount, 1_700_000_000_000, None)


def frame(value: bytes, offset: int) -> bytes:
    return encode_source_frame("events", 1, offset, 0, value)


def scorer(directory: Path, experiment: str = "", shadow: int | None = None) -> BatchScorer:
    models = ServingModels(ModelRegistry(directory, NAME), parse_experiment(experiment), shadow,
                           1_000)
    return BatchScorer(models, EventDecoder(SCHEMAS), CODEC, {"purchase"}, "scores",
                       "scores.dlq", clock_ms=lambda: NOW)


ROWS = {"u-known": {"as_of": 1_699_999_999_000, "version": 4, "purchases_5m": 2,
                    "spend_1h": 55.5}}


def lookup(rows: dict) -> object:
    calls: list[list[str]] = []

    def fetch(user_ids: list[str]) -> dict:
        calls.append(list(user_ids))
        return {u: rows[u] for u in user_ids if u in rows}

    fetch.calls = calls  # type: ignore[attr-defined]
    return fetch


def test_scores_equal_predict_on_the_recorded_vector(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    good = [event("e1", "u-known"), event("e2", "u-new"), event("e3", "u-known", amount=99.0)]
    frames = [frame(ENCODER.avro(e), i) for i, e in enumerate(good)]
    frames.append(frame(ENCODER.json(event("e4", "u-known", "view", None)), 3))
    fetch = lookup(ROWS)
    batch = scorer(tmp_path).score(frames, fetch)
    assert fetch.calls == [["u-known", "u-new"]], "one lookup per batch, each user once"
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


def headers_of(output: bytes) -> dict[str, str]:
    return {k: v.decode() for k, v in decode_sink_frame(output)[2]}


def test_bad_records_become_dead_letters_with_their_reason(tmp_path: Path) -> None:
    publish(tmp_path, 1, defaults={})  # a model that needs every feature
    rows = {**ROWS, "u-inf": {"as_of": 1, "purchases_5m": float("inf"), "spend_1h": 1.0},
            "u-corrupt": FeatureProblem("CorruptFeatureRow", "unreadable")}
    values = [
        b"not an event",
        ENCODER.json(event("e1", "u-new")),
        ENCODER.json(event("e2", "u-inf")),
        ENCODER.json(event("e3", "u-corrupt")),
        ENCODER.json(event("e4", "u-known")),
    ]
    batch = scorer(tmp_path).score([frame(v, 10 + i) for i, v in enumerate(values)],
                                   lookup(rows))
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
    assert batch.dead == {"decode": 1, "features": 3}


def test_model_errors_dead_letter_only_that_models_records(tmp_path: Path) -> None:
    publish(tmp_path, 1)
    publish(tmp_path, 2, seed=1)
    scorer_ = scorer(tmp_path, "v1:50,v2:50")
    scorer_.models.refresh()

    def broken(vectors: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    for _, version, model in (scorer_.models.route(f"u-{i}") for i in range(20)):
        if version == 2:
            object.__setattr__(model, "predict", broken)
    users = [f"u-{i}" for i in range(20)]
    frames = [frame(ENCODER.avro(event(f"e{i}", u)), i) for i, u in enumerate(users)]
    batch = scorer_.score(frames, lookup({}))
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
    assert 0 < batch.dead["model"] < 20


def test_unavailable_model_dead_letters_and_shadow_is_never_served(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    publish(tmp_path, 2, seed=1)
    frames = [frame(ENCODER.avro(event("e1", "u-known")), 0)]
    batch = scorer(tmp_path, "v1:100", shadow=2).score(frames, lookup(ROWS))
    score = batch.scores[0]
    shadow = registry.load(2).predict(np.array([list(score["features"].values())]))[0]
    assert score["version"] == 1
    assert score["shadow"]["version"] == 2
    assert score["shadow"]["score"] == pytest.approx(shadow, abs=1e-12)
    missing = scorer(tmp_path, "v7:100", shadow=9).score(frames, lookup(ROWS))
    headers = headers_of(missing.outputs[0])
    assert (headers[HEADER_STAGE], headers[HEADER_EXCEPTION_CLASS]) == ("model",
                                                                      "ModelUnavailable")
    assert headers[HEADER_MODEL_VERSION] == "7"
    with_bad_shadow = scorer(tmp_path, "v1:100", shadow=9).score(frames, lookup(ROWS))
    assert with_bad_shadow.scores[0]["shadow"] == {"version": 9, "score": None}
    assert with_bad_shadow.shadow_failures == 1
