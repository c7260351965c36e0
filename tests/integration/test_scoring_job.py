"""The scoring job on the real stack, with trained models.

Every score must be computed from the rows the feature job captured for its event
(``{prefix}_pit:<entity>:<event_id>``, :mod:`udfs.features.point_in_time`), assembled with the
model's defaults: each scenario reads those keys back and checks every recorded vector against
them (:func:`assert_scored_from_captures`, written without the scorer's code).

1. Beside the feature job, with an experiment (v1:60,v2:40) and a shadow (v3): every purchase
   gets exactly one score equal to ``Booster.predict`` on its recorded vector, variants follow
   the hash split, and every bad record lands in ``scores.dlq`` exactly once with its stage and
   reason -- nothing else does. A purchase that is its user's first event has no row (v1 serves
   it with defaults, v2 refuses it), as have users far behind the watermark (late for the feature
   job, still captured); a captured row poisoned before its event is produced is what is read.
2. Serving the latest version on topics of its own, with the feature job far ahead (each event's
   captured row written before the event is produced): a version published while the job runs
   serves the next records; through a Redis outage (the job fails and restarts from its last
   checkpoint; Redis keeps its data) no record is lost, and any replayed score is identical --
   score and vector -- by event_id.
3. Definitions with an item entity: a model trained on them reads the item's row beside the
   user's.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from featurestream.cli.submit import submit_job
from featurestream.cli.train import TrainingRun, train
from featurestream.devstack import LocalStack
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.jobs.redis_target import RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.features.shard import CapturedRow
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec
from featurestream.udfs.scoring.variants import VariantAssigner, parse_experiment
from featurestream.udfs.store.redis_layout import (
    RowValue,
    decode_point_in_time,
    decode_scores,
    encode_point_in_time,
    entity_key,
    point_in_time_key,
    score_key,
    user_key,
)
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
    wait_for,
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


Captured = tuple[str, dict[str, RowValue] | None]  # the entity id and its row (None: no row)


def captured_rows(client: redis.Redis | RedisCluster, prefix: str, entity: str,
                  event_ids: Sequence[str]) -> dict[str, Captured]:
    """The rows of ``entity`` captured for ``event_ids``, by event id (absent: not captured)."""
    keys = [point_in_time_key(prefix, entity, e) for e in event_ids]
    values = client.mget_nonatomic(keys) if isinstance(client, RedisCluster) else \
        client.mget(keys)
    return {event_id: decode_point_in_time(value)
            for event_id, value in zip(event_ids, values, strict=True) if value is not None}


def expected_vector(metadata: ModelMetadata, event: Event,
                    rows: Mapping[str, Mapping[str, RowValue] | None]) -> dict[str, float]:
    """The vector a score of ``event`` must record, written out here rather than with the
    scorer's code: the event's amount and hour, each other feature from the row captured for
    the event of its entity (``item.views_1h``: the item's; unqualified: the user's), the
    model's default where that row is absent or has no value."""
    vector = {}
    for name in metadata.features:
        value: RowValue
        if name == "amount":
            value = event.amount
        elif name == "hour_of_day":
            value = event.ts // HOUR % 24
        else:
            entity, _, feature = name.rpartition(".")
            row = rows.get(entity or "user")
            value = None if row is None else row.get(feature)
        if value is None:
            value = metadata.defaults[name]
        assert isinstance(value, int | float), (name, value)
        vector[name] = float(value)
    return vector


def assert_scored_from_captures(settings: Settings, client: redis.Redis | RedisCluster,
                                scores: list[dict], events: Mapping[str, Event],
                                entities: Sequence[str] = ("user",)) -> None:
    """Every score's recorded vector (and ``as_of``, ``features_missing``) is the one of the
    rows the feature job captured for its event, of each of ``entities`` (those the models
    read), with the model's defaults; an event without an entity's id has no capture of it."""
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    event_ids = sorted({s["event_id"] for s in scores})
    captures = {entity: captured_rows(client, settings.redis_key_prefix, entity, event_ids)
                for entity in entities}
    models: dict[int, ModelMetadata] = {}
    for score in scores:
        event = events[score["event_id"]]
        rows: dict[str, dict[str, RowValue] | None] = {}
        for entity in entities:
            entity_id = getattr(event, f"{entity}_id")
            found = captures[entity].get(event.event_id)
            if entity_id is None:
                assert found is None, (entity, event)
                rows[entity] = None
                continue
            assert found is not None, f"no {entity} row captured for {event.event_id}"
            assert found[0] == entity_id, (found, event)
            rows[entity] = found[1]
        version = score["version"]
        if version not in models:
            models[version] = registry.load(version).metadata
        assert score["features"] == expected_vector(models[version], event, rows), score
        as_of: int | None = None  # of the oldest row read
        for row in rows.values():
            if row is not None:
                row_as_of = row["as_of"]
                assert isinstance(row_as_of, int), row
                as_of = row_as_of if as_of is None else min(as_of, row_as_of)
        assert score["as_of"] == as_of, score
        assert score["features_missing"] == (None in rows.values()), score


def first_events(events: Sequence[Event]) -> set[str]:
    """The ids of the events that are their user's first in ``events`` (in log order: a
    user's events share a partition): scored, they have no row -- nothing came before."""
    seen: set[str] = set()
    first = set()
    for event in events:
        if event.user_id not in seen:
            seen.add(event.user_id)
            first.add(event.event_id)
    return first


@pytest.mark.usefixtures("trained")
def test_every_purchase_scored_once_and_bad_records_dead_lettered(stack: LocalStack) -> None:
    base = isolated(stack, "scoring").replace(scoring_group="scoring-scorer")
    prefix = base.redis_key_prefix
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
        warmup_buys = [e.event_id for e in warmup if e.event_type == "purchase"]
        wait_for(lambda: client.exists(*(point_in_time_key(prefix, "user", e)
                                         for e in warmup_buys)) == len(warmup_buys),
                 240, "the rows captured for the warm-up purchases",
                 lambda: job_diagnostics(base, features_job))
        # The feature job writes a captured row once (SET NX): this one stays what it is read.
        real = next(row for _, row in captured_rows(client, prefix, "user", warmup_buys).values()
                    if row is not None)
        client.set(point_in_time_key(prefix, "user", poisoned.event_id),
                   encode_point_in_time(poisoned.user_id, {**real, "spend_1h": math.inf}),
                   px=base.point_in_time_ttl_ms)

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

        first = first_events([*warmup, *later, *extra, *ghosts, poisoned])
        purchases = [e for e in [*warmup, *later, *extra] if e.event_type == "purchase"]
        candidates = [*purchases, *ghosts]  # the poisoned one aside
        served = [e for e in candidates
                  if e.event_id not in first or assigner.assign(e.user_id).version == 1]
        refused = [e for e in candidates
                   if e.event_id in first and assigner.assign(e.user_id).version == 2]
        assert {g.event_id for g in ghosts} <= first
        ghost_ids = {g.event_id for g in ghosts}
        assert ghost_ids & {e.event_id for e in served} and ghost_ids & {
            e.event_id for e in refused}, "both arms need unknown users"
        expected_scores = {e.event_id: e for e in served}
        expected_dead = len(undecodable) + len(refused) + 1
        topics = Topics(settings)
        wait_for(topics.settled(len(expected_scores), expected_dead), 300,
                 "scores and dead letters", lambda: job_diagnostics(settings, scoring_job))

        # Every purchase exactly once; each score is predict() on its recorded vector, and that
        # vector is the one of the rows captured for its event.
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
            assert score["features_missing"] == (event.event_id in first)
            assert score["features"]["amount"] == event.amount
        versions = Counter(s["version"] for s in topics.scores)
        assert versions[1] and versions[2], versions
        assert_scored_from_captures(settings, client, topics.scores, expected_scores)
        refused_rows = captured_rows(client, prefix, "user", [e.event_id for e in refused])
        assert refused_rows == {e.event_id: (e.user_id, None) for e in refused}, (
            "refused for no row, not for a row not captured")

        # Each bad record exactly once, with its stage and reason; nothing else.
        dead_values = Counter(m.value() for m in topics.dead)
        value_of = {event.event_id: encoder.avro(event) for event in warmup}
        value_of |= {event.event_id: value for event, value in records}
        refused_values = {value_of[e.event_id] for e in refused}
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
            stored = decode_scores(client.hgetall(score_key(prefix, user_id)))
            latest = stored[settings.model_name]
            assert scores[latest.event_id] == latest.score
    finally:
        for job in (scoring_job, features_job):
            if job is not None:
                cancel_job(base, job)


def purchases(prefix: str, count: int, ts: int) -> list[Event]:
    return [Event(f"{prefix}-{i}", f"r-{i % 25}", "purchase", "item-3", 5.0 + i, ts + i, None)
            for i in range(count)]


def capture_ahead(settings: Settings, events: Sequence[Event]) -> None:
    """Write each event's captured user row before the event is produced, as a feature job far
    ahead would (its writer: once, with the TTL): values that differ per event, some null (the
    model's default applies), and every fifth event's user without a row."""
    names = [f.name for group in settings.load_definitions().groups for f in group.features]
    writer = RedisRowWriter(RedisTarget.from_settings(settings))
    try:
        for i, event in enumerate(events):
            row: dict[str, RowValue] | None = None
            if i % 5 != 4:
                row = {"as_of": event.ts - 1, "version": i + 1}
                for j, name in enumerate(names):
                    row[name] = None if name.startswith("avg_") and i % 2 else (i * 7 + j) % 13 / 2
            writer.add_captured(CapturedRow(f"user:{event.user_id}", event.event_id, event.ts,
                                            row))
    finally:
        writer.close()


@pytest.mark.usefixtures("trained")
def test_hot_reload_and_restart_lose_nothing(stack: LocalStack) -> None:
    settings = isolated(stack, "reload").replace(scoring_group="reload-scorer",
                                                 model_poll_interval_ms=1_000)
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    first = registry.versions()[-1]
    encoder = EventEncoder(registry_for(settings.schema_registry))
    client = redis.Redis.from_url(settings.redis_url)
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
        capture_ahead(settings, before)
        produce(before)
        wait_for(reader.settled(len(sent), 0), 240, "scores of batch a", diagnostics)
        publish_trained(settings, seed=4)
        time.sleep(2.5)  # > the poll interval
        after = purchases("b", 40, 1_700_000_100_000)
        capture_ahead(settings, after)
        produce(after)
        wait_for(reader.settled(len(sent), 0), 120, "scores of batch b", diagnostics)
        version = {s["event_id"]: s["version"] for s in reader.scores}
        assert {version[e.event_id] for e in before} == {first}
        assert {version[e.event_id] for e in after} == {first + 1}
        assert Counter(s["event_id"] for s in reader.scores) == Counter(
            e.event_id for e in sent), "hot reload lost or repeated a record"

        # Redis down: the batch fails, the job restarts from its last checkpoint and replays.
        # Redis comes back with its data (the captured rows a replay reads), as a deployment's
        # persistent Redis does; the stack's runs without persistence, so it is saved here.
        after_outage = purchases("c", 40, 1_700_000_200_000)
        capture_ahead(settings, after_outage)
        dump = Path(client.config_get("dir")["dir"]) / client.config_get("dbfilename")[
            "dbfilename"]
        client.save()
        stack.redis.stop(print)
        try:
            produce(after_outage)
            time.sleep(8)
        finally:
            stack.redis.start(print)
            dump.unlink(missing_ok=True)
        wait_for(reader.settled(len(sent), 0), 240, "scores after the restart", diagnostics)
        failures = job_exceptions(settings, job)
        assert any("redis" in trace.lower() for trace in failures), "the job never failed"
        scores_by_event: dict[str, set] = defaultdict(set)
        for s in reader.scores:
            scores_by_event[s["event_id"]].add(
                (s["version"], s["variant"], s["score"], tuple(sorted(s["features"].items())),
                 s["features_missing"], s["as_of"]))
        assert sorted(scores_by_event) == sorted(e.event_id for e in sent), "a record was lost"
        assert all(len(v) == 1 for v in scores_by_event.values()), "replays differ"
        replayed = len(reader.scores) - len(sent)
        print(f"restart: {replayed} replayed duplicate(s) visible (tansu shows aborted "
              "transactions; Apache Kafka hides them)")
        assert not reader.dead
        assert_scored_from_captures(settings, client, reader.scores,
                                    {e.event_id: e for e in sent})
        assert any(s["features_missing"] for s in reader.scores)
        assert not all(s["features_missing"] for s in reader.scores)
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
        assert_scored_from_captures(settings, client, topics.scores,
                                    {e.event_id: e for e in scored}, ("user", "item"))
    finally:
        for job in (scoring_job, features_job):
            if job is not None:
                cancel_job(settings, job)
