"""The scoring job on the real stack, with trained models.

1. Beside the feature job, with an experiment (v1:60,v2:40) and a shadow (v3): every purchase
   gets exactly one score equal to ``Booster.predict`` on its recorded vector, variants follow
   the hash split, and every bad record lands in ``scores.dlq`` exactly once with its stage and
   reason -- nothing else does.
2. Serving the latest version on topics of its own: a version published while the job runs
   serves the next records; through a Redis outage (the job fails and restarts from its last
   checkpoint) no record is lost, and any replayed score is identical by event_id.
3. Definitions with an item entity: a model trained on them reads the item's row beside the
   user's.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from featurestream.cli.submit import submit_job
from featurestream.cli.train import TrainingRun, train
from featurestream.devstack import LocalStack
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec
from featurestream.udfs.scoring.variants import VariantAssigner, parse_experiment
from featurestream.udfs.store.redis_layout import decode_scores, entity_key, score_key, user_key
from featurestream.udfs.wire.dead_letters import (
    HEADER_EXCEPTION_CLASS,
    HEADER_MODEL_VERSION,
    HEADER_STAGE,
    HEADER_TOPIC,
)
from tests.integration.conftest import (
    cancel_job,
    flink_get,
    job_diagnostics,
    job_exceptions,
    read_topic,
)
from tests.integration.test_feature_job import bad_records

pytestmark = pytest.mark.flink

HOUR = 3_600_000
EXPERIMENT = "v1:60,v2:40"
SMALL_RUN = TrainingRun(events=80_000, users=800, rounds=60)


def publish_trained(settings: Settings, seed: int, require_row: bool = False) -> None:
    """Train on a generated history and publish the next version.

    ``require_row``: keep defaults only for nullable features (means, ratios, amount): the
    version then refuses users without a feature row, like a model that needs online features.
    """
    model_text, metadata = train(settings, replace(SMALL_RUN, seed=seed))
    if require_row:
        kept = {k: v for k, v in metadata.defaults.items()
                if k == "amount" or k.startswith(("avg_", "ctr_"))}
        metadata = replace(metadata, defaults=kept)
    ModelRegistry(settings.effective_models_dir, settings.model_name).publish(model_text, metadata)


@pytest.fixture(scope="module")
def trained(stack: LocalStack) -> None:
    """v1 (defaults for unknown users), v2 (needs a feature row), v3 (the shadow)."""
    publish_trained(stack.settings, seed=1)
    publish_trained(stack.settings, seed=2, require_row=True)
    publish_trained(stack.settings, seed=3)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str,
             diagnostics: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}\n{diagnostics()}")


class Topics:
    """Reads the scores and DLQ topics (committed records) and decodes scores."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = ScoreCodec(registry_for(settings.schema_registry),
                                f"{settings.scores_topic}-value")
        self.scores: list[dict] = []
        self.dead: list = []

    def read(self) -> tuple[int, int]:
        s = self.settings
        self.scores = [self.codec.decode(m.value())
                       for m in read_topic(s, s.scores_topic, s.topic_partitions)]
        self.dead = read_topic(s, s.scores_dlq_topic, s.topic_partitions)
        return len(self.scores), len(self.dead)

    def settled(self, scores: int, dead: int) -> Callable[[], bool]:
        """True once the topics hold at least the expected counts and stop growing."""
        last: list[tuple[int, int]] = []

        def check() -> bool:
            counts = self.read()
            done = counts[0] >= scores and counts[1] >= dead and last == [counts]
            last[:] = [counts]
            return done

        return check


def headers(message: Any) -> dict[str, str]:
    """A consumed record's headers (confluent-kafka's Message), decoded."""
    return {k: v.decode() for k, v in message.headers()}


def operator_metric(settings: Settings, job_id: str, suffix: str) -> float | None:
    """The sum over subtasks of the job's operator metric whose id ends with ``suffix``."""
    for vertex in flink_get(settings, f"/jobs/{job_id}")["vertices"]:
        path = f"/jobs/{job_id}/vertices/{vertex['id']}/metrics"
        ids = [m["id"] for m in flink_get(settings, path) if m["id"].endswith(suffix)]
        if ids:
            values = flink_get(settings, f"{path}?get={','.join(ids)}")
            return sum(float(v["value"]) for v in values)
    return None


def predict(settings: Settings, version: int, features: dict[str, float]) -> float:
    model = ModelRegistry(settings.effective_models_dir, settings.model_name).load(version)
    vector = np.array([[features[name] for name in model.metadata.features]])
    return float(model.predict(vector)[0])


@pytest.mark.usefixtures("trained")
def test_every_purchase_scored_once_and_bad_records_dead_lettered(stack: LocalStack) -> None:
    base = isolated(stack, "scoring").replace(scoring_group="scoring-scorer")
    client = redis.Redis.from_url(base.redis_url)
    encoder = EventEncoder(registry_for(base.schema_registry))
    stream = generate_events(StreamConfig(users=30, items=200, events_per_second=5.0, seed=21,
                                          out_of_order_fraction=0.0))
    warmup = list(itertools.islice(stream, 2000))
    known = sorted({e.user_id for e in warmup})
    newest = max(e.ts for e in warmup)
    later = [e for e in itertools.islice(stream, 3000) if e.user_id in known]
    extra = [Event(f"buy-{u}-{i}", u, "purchase", "item-7", 10.0 + 90 * i, newest + 1000 * i,
                   None) for u in known for i in (1, 2)]
    # Unknown users: far behind the watermark, so the feature job rejects them (no row).
    ghosts = [Event(f"ghost-{i}", f"ghost-{i}", "purchase", "item-1", 30.0, newest - 48 * HOUR,
                    None) for i in range(20)]
    poisoned = Event("poisoned-1", "poisoned", "purchase", "item-1", 5.0, newest, None)
    assigner = VariantAssigner(parse_experiment(EXPERIMENT))

    features_job = submit_job(base, "features")
    scoring_job = None
    try:
        with EventProducer(base) as producer:
            for event in warmup:
                producer.send(event.user_id, encoder.avro(event), event.ts)
        wait_for(lambda: all(client.exists(user_key(base.redis_key_prefix, u)) for u in known),
                 240, "feature rows of the warm-up users",
                 lambda: job_diagnostics(base, features_job))
        row_fields = client.hgetall(user_key(base.redis_key_prefix, known[0]))
        poison_row = {k: "0" for k in row_fields} | {"as_of": str(2**52), "spend_1h": "inf"}
        client.hset(user_key(base.redis_key_prefix, "poisoned"), mapping=poison_row)

        settings = base.replace(experiment=EXPERIMENT, shadow_model="v3",
                                model_poll_interval_ms=1_000)
        scoring_job = submit_job(settings, "scoring")
        undecodable = bad_records()
        records = [(e, encoder.json(e) if i % 2 else encoder.avro(e))
                   for i, e in enumerate([*later, *extra, *ghosts, poisoned])]
        with EventProducer(settings) as producer:
            for event, value in records:
                producer.send(event.user_id, value, event.ts)
            for raw in undecodable:
                producer.send("bad", raw, newest)
        assert producer.failed == 0

        purchases = [e for e in [*warmup, *later, *extra] if e.event_type == "purchase"]
        unknown_served = [g for g in ghosts if assigner.assign(g.user_id).version == 1]
        unknown_refused = [g for g in ghosts if assigner.assign(g.user_id).version == 2]
        assert unknown_served and unknown_refused, "both arms need unknown users"
        expected_scores = {e.event_id: e for e in [*purchases, *unknown_served]}
        expected_dead = len(undecodable) + len(unknown_refused) + 1
        topics = Topics(settings)
        wait_for(topics.settled(len(expected_scores), expected_dead), 300,
                 "scores and dead letters", lambda: job_diagnostics(settings, scoring_job))

        # Every purchase exactly once; each score is predict() on its recorded vector.
        counts = Counter(s["event_id"] for s in topics.scores)
        assert sorted(counts) == sorted(expected_scores)
        assert set(counts.values()) == {1}
        for score in topics.scores:
            event = expected_scores[score["event_id"]]
            arm = assigner.assign(event.user_id)
            assert (score["variant"], score["version"]) == (arm.label, arm.version)
            assert score["user_id"] == event.user_id and score["ts"] == event.ts
            expected = predict(settings, score["version"], score["features"])
            assert score["score"] == pytest.approx(expected, abs=1e-9)
            shadow = predict(settings, 3, score["features"])
            assert score["shadow"]["version"] == 3
            assert score["shadow"]["score"] == pytest.approx(shadow, abs=1e-9)
            assert score["features_missing"] == event.user_id.startswith("ghost-")
            assert score["features"]["amount"] == event.amount
        versions = Counter(s["version"] for s in topics.scores)
        assert versions[1] and versions[2], versions

        # Each bad record exactly once, with its stage and reason; nothing else.
        dead_values = Counter(m.value() for m in topics.dead)
        value_of = {event.event_id: value for event, value in records}
        refused_values = {value_of[g.event_id] for g in unknown_refused}
        assert set(dead_values.values()) == {1}
        for message in topics.dead:
            h = headers(message)
            assert h[HEADER_TOPIC] == settings.events_topic
            if message.value() in undecodable:
                assert (h[HEADER_STAGE], h[HEADER_EXCEPTION_CLASS]) == (
                    "decode", undecodable[message.value()])
                assert HEADER_MODEL_VERSION not in h
            elif message.key() == b"poisoned":
                assert (h[HEADER_STAGE], h[HEADER_EXCEPTION_CLASS]) == ("features",
                                                                      "NonFiniteFeature")
                assert "spend_1h" in h["__connect.errors.exception.message"]
            else:
                assert message.value() in refused_values
                assert (h[HEADER_STAGE], h[HEADER_EXCEPTION_CLASS]) == ("features",
                                                                      "UnknownUser")
                assert h[HEADER_MODEL_VERSION] == "2"
        assert len(topics.dead) == expected_dead
        wait_for(lambda: operator_metric(settings, scoring_job, ".scores_dlq") == expected_dead,
                 60, "the scores_dlq metric")

        # The latest score per user is in Redis for the reader.
        by_user: defaultdict[str, dict[str, float]] = defaultdict(dict)
        for score in topics.scores:
            by_user[score["user_id"]][score["event_id"]] = score["score"]
        for user_id, scores in by_user.items():
            stored = decode_scores(client.hgetall(score_key(base.redis_key_prefix, user_id)))
            latest = stored[settings.model_name]
            assert scores[latest.event_id] == latest.score
    finally:
        for job in (scoring_job, features_job):
            if job is not None:
                cancel_job(base, job)


def purchases(prefix: str, count: int, ts: int) -> list[Event]:
    return [Event(f"{prefix}-{i}", f"r-{i % 25}", "purchase", "item-3", 5.0 + i, ts + i, None)
            for i in range(count)]


@pytest.mark.usefixtures("trained")
def test_hot_reload_and_restart_lose_nothing(stack: LocalStack) -> None:
    settings = isolated(stack, "reload").replace(scoring_group="reload-scorer",
                                                 model_poll_interval_ms=1_000)
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    first = registry.versions()[-1]
    encoder = EventEncoder(registry_for(settings.schema_registry))
    reader = Topics(settings)
    sent: list[Event] = []

    def produce(events: list[Event]) -> None:
        with EventProducer(settings) as producer:
            for event in events:
                producer.send(event.user_id, encoder.avro(event), event.ts)
        assert producer.failed == 0
        sent.extend(events)

    job = submit_job(settings, "scoring")
    try:
        def diagnostics() -> str:
            return job_diagnostics(settings, job)

        before = purchases("a", 40, 1_700_000_000_000)
        produce(before)
        wait_for(reader.settled(len(sent), 0), 240, "scores of batch a", diagnostics)
        publish_trained(settings, seed=4)
        time.sleep(2.5)  # > the poll interval
        after = purchases("b", 40, 1_700_000_100_000)
        produce(after)
        wait_for(reader.settled(len(sent), 0), 120, "scores of batch b", diagnostics)
        version = {s["event_id"]: s["version"] for s in reader.scores}
        assert {version[e.event_id] for e in before} == {first}
        assert {version[e.event_id] for e in after} == {first + 1}
        assert Counter(s["event_id"] for s in reader.scores) == Counter(
            e.event_id for e in sent), "hot reload lost or repeated a record"

        # Redis down: the batch fails, the job restarts from its last checkpoint and replays.
        stack.redis.stop(print)
        produce(purchases("c", 40, 1_700_000_200_000))
        time.sleep(8)
        stack.redis.start(print)
        wait_for(reader.settled(len(sent), 0), 240, "scores after the restart", diagnostics)
        failures = job_exceptions(settings, job)
        assert any("redis" in trace.lower() for trace in failures), "the job never failed"
        scores_by_event: dict[str, set] = defaultdict(set)
        for s in reader.scores:
            scores_by_event[s["event_id"]].add((s["version"], s["variant"], s["score"]))
        assert sorted(scores_by_event) == sorted(e.event_id for e in sent), "a record was lost"
        assert all(len(v) == 1 for v in scores_by_event.values()), "replays differ"
        replayed = len(reader.scores) - len(sent)
        print(f"restart: {replayed} replayed duplicate(s) visible (tansu shows aborted "
              "transactions; Apache Kafka hides them)")
        assert not reader.dead
    finally:
        cancel_job(settings, job)


ITEM_DEFINITIONS = '''
from featurestream.definitions import Feature, FeatureGroup, eq
from featurestream.udfs.definitions.defaults import ITEM, USER, events_source, user_features

events = events_source({topic!r})
user_activity = FeatureGroup("user_activity", USER, events, user_features({windows!r}))
item_activity = FeatureGroup("item_activity", ITEM, events, [
    Feature("views_1h", "count", window="1h", where=eq("event_type", "view")),
    Feature("purchases_24h", "count", window="24h", where=eq("event_type", "purchase")),
])
'''


def test_a_model_reads_item_features(stack: LocalStack, tmp_path: Path) -> None:
    """Definitions with an item entity: `featurestream train` gives the model item.* features,
    the feature job writes item rows, and the scorer reads them beside the user's."""
    base = isolated(stack, "items").replace(scoring_group="items-scorer")
    definitions = tmp_path / "item_definitions.py"
    definitions.write_text(ITEM_DEFINITIONS.format(topic=base.events_topic,
                                                   windows=base.windows))
    settings = base.replace(definitions=str(definitions), models_dir=str(tmp_path / "models"))
    model_text, metadata = train(settings, replace(SMALL_RUN, rounds=30))
    assert metadata.features[-2:] == ("item.views_1h", "item.purchases_24h")
    ModelRegistry(settings.effective_models_dir, settings.model_name).publish(model_text, metadata)
    client = redis.Redis.from_url(settings.redis_url)
    encoder = EventEncoder(registry_for(settings.schema_registry))
    warmup = list(itertools.islice(generate_events(StreamConfig(
        users=20, items=30, events_per_second=5.0, seed=31, out_of_order_fraction=0.0)), 600))
    viewed = sorted({e.item_id for e in warmup if e.event_type == "view" and e.item_id})[:5]
    newest = max(e.ts for e in warmup)
    buys = [Event(f"item-buy-{i}", warmup[0].user_id, "purchase", item, 25.0,
                  newest + 1000 * (i + 1), None) for i, item in enumerate([*viewed, None])]
    features_job = submit_job(settings, "features")
    scoring_job = None
    try:
        with EventProducer(settings) as producer:
            for event in warmup:
                producer.send(event.user_id, encoder.avro(event), event.ts)
        keys = [entity_key(settings.redis_key_prefix, "item", i) for i in viewed]
        keys.append(user_key(settings.redis_key_prefix, buys[0].user_id))
        wait_for(lambda: all(client.exists(key) for key in keys), 240, "item and user rows",
                 lambda: job_diagnostics(settings, features_job))
        scoring_job = submit_job(settings, "scoring")
        with EventProducer(settings) as producer:
            for event in buys:
                producer.send(event.user_id, encoder.avro(event), event.ts)
        scored = [e for e in [*warmup, *buys] if e.event_type == "purchase"]  # from the start
        topics = Topics(settings)
        wait_for(topics.settled(len(scored), 0), 240, "scores of the purchases",
                 lambda: job_diagnostics(settings, scoring_job))
        scores = {s["event_id"]: s for s in topics.scores}
        assert sorted(scores) == sorted(e.event_id for e in scored) and not topics.dead
        for event in buys:
            score = scores[event.event_id]
            assert score["score"] == pytest.approx(predict(settings, 1, score["features"]),
                                                   abs=1e-9)
            assert score["features_missing"] == (event.item_id is None), score
        assert all(scores[e.event_id]["features"]["item.views_1h"] >= 1 for e in buys[:-1])
    finally:
        for job in (scoring_job, features_job):
            if job is not None:
                cancel_job(settings, job)
