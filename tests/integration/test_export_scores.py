"""``featurestream export scores`` on the real stack: the committed scores of the topic, up to
its end at start, become Parquet rows equal to the records (records that are not scores left
out), readable as a training set; it ends even when an aborted transaction is last."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from featurestream.cli import export
from featurestream.cli.export import SCORE_SCHEMA, export_command
from featurestream.devstack import LocalStack
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.errors import UserFacingError
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.offline.training_set import read_training_set
from featurestream.udfs.scoring.score_codec import ScoreCodec, ScoreRecord

pytestmark = pytest.mark.flink

START = 1_700_000_000_000


def make_score(i: int) -> ScoreRecord:
    """Model ``a`` reads amount and views_1h; model ``b`` amount and item.views_1h (shadowed)."""
    features = ({"amount": float(i), "views_1h": float(i % 7)} if i % 3 else
                {"amount": float(i), "item.views_1h": float(i % 5)})
    return ScoreRecord(
        event_id=f"e{i}", user_id=f"u{i % 13}", event_type="purchase", ts=START + i,
        model="a" if i % 3 else "b", version=1 + i % 2, variant=f"v{1 + i % 2}",
        experiment=None if i % 4 else "exp-2", score=i / 1000, features=features,
        features_missing=False,
        as_of=None if i % 10 == 0 else START + i - 1, scored_at=START + 10_000 + i,
        shadow=None if i % 3 else {"version": 3, "score": None if i % 2 else 0.5})


def test_export_writes_every_committed_score_with_its_vector(stack: LocalStack,
                                                              tmp_path: Path) -> None:
    settings = isolated(stack, "export")
    topic = settings.scores_topic
    codec = ScoreCodec(registry_for(settings.schema_registry), f"{topic}-value")
    committed = [make_score(i) for i in range(500)]
    with EventProducer(settings, topic) as producer:
        for score in committed[:400]:
            producer.send(score["user_id"], codec.encode(score), score["ts"])
        producer.send("u0", b"not a score", START)
        assert producer.flush() == 0 and producer.failed == 0

    transactional = Producer(settings.kafka_config({"transactional.id": "export-test"}))
    transactional.init_transactions(30)
    transactional.begin_transaction()  # as the scoring job writes: commit markers come last
    for score in committed[400:]:
        transactional.produce(topic, codec.encode(score), score["user_id"])
    transactional.commit_transaction(30)

    out = tmp_path / "scores.parquet"
    args = argparse.Namespace(what="scores", out=str(out), topic=None)
    assert export_command(settings, args) == 1  # the record that is not a score

    table = pq.read_table(out)
    assert table.column_names == [*SCORE_SCHEMA.names, "amount", "item.views_1h", "views_1h"]
    rows = {row["event_id"]: row for row in table.to_pylist()}
    assert len(rows) == table.num_rows == len(committed)
    for score in committed:
        row = rows[score["event_id"]]
        shadow = score["shadow"]
        expected = {**{k: v for k, v in score.items() if k not in ("features", "shadow")},
                    "shadow_version": shadow and shadow["version"],
                    "shadow_score": shadow and shadow["score"]}
        assert {k: row[k] for k in expected} == expected
        for name in ("amount", "views_1h", "item.views_1h"):
            assert row[name] == score["features"].get(name)

    training = read_training_set(out, ("item.views_1h", "amount"))
    assert len(training) == len(committed)
    assert set(training.labels) == {None}
    b_rows = sum(not math.isnan(v) for v in training.matrix[:, 0])
    assert b_rows == sum(s["model"] == "b" for s in committed)


def test_export_reads_every_producer_batch_and_ends_while_scores_keep_coming(
        stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each partition's last producer batch is exported whole (tansu's end offset is its
    base + 1), and a score produced while exporting does not keep the export from ending."""
    settings = isolated(stack, "export-batches")
    topic = settings.scores_topic
    codec = ScoreCodec(registry_for(settings.schema_registry), f"{topic}-value")
    scores = [make_score(i) for i in range(600)]
    with EventProducer(settings, topic) as producer:
        for score in scores:
            producer.send(score["user_id"], codec.encode(score), score["ts"])
            if score["event_id"].endswith("99"):
                assert producer.flush() == 0  # one producer batch (or more) a partition
        assert producer.flush() == 0 and producer.failed == 0

    out = tmp_path / "scores.parquet"
    args = argparse.Namespace(what="scores", out=str(out), topic=None)
    assert export_command(settings, args) == 0
    assert sorted(pq.read_table(out).column("event_id").to_pylist()) == sorted(
        s["event_id"] for s in scores)

    late = make_score(1_000)
    add = export.ScoresParquet.add
    with EventProducer(settings, topic) as producer:
        def add_and_produce(writer: export.ScoresParquet, score: Mapping[str, Any]) -> None:
            if not writer.written and not producer.delivered:
                producer.send(late["user_id"], codec.encode(late), late["ts"])
                assert producer.flush() == 0
            add(writer, score)

        monkeypatch.setattr(export.ScoresParquet, "add", add_and_produce)
        started = time.monotonic()
        assert export_command(settings, args) == 0
    assert time.monotonic() - started < 20
    exported = pq.read_table(out).column("event_id").to_pylist()
    assert sorted(e for e in exported if e != late["event_id"]) == sorted(
        s["event_id"] for s in scores)


def test_export_ends_after_an_aborted_transaction_at_the_end(stack: LocalStack,
                                                             tmp_path: Path) -> None:
    """A scoring job that failed mid-transaction leaves aborted records (and the abort marker)
    last in the topic: the export still reaches the end offsets and stops."""
    settings = isolated(stack, "export-aborted")
    topic = settings.scores_topic
    codec = ScoreCodec(registry_for(settings.schema_registry), f"{topic}-value")
    transactional = Producer(settings.kafka_config({"transactional.id": "export-aborted"}))
    transactional.init_transactions(30)
    transactional.begin_transaction()
    for i in range(20):
        transactional.produce(topic, codec.encode(make_score(i)), f"u{i}")
    transactional.commit_transaction(30)
    transactional.begin_transaction()
    for i in range(20, 40):
        transactional.produce(topic, codec.encode(make_score(i)), f"u{i}")
    transactional.flush(30)
    transactional.abort_transaction(30)

    out = tmp_path / "scores.parquet"
    started = time.monotonic()
    assert export_command(settings, argparse.Namespace(what="scores", out=str(out),
                                                       topic=None)) == 0
    assert time.monotonic() - started < 20
    exported = set(pq.read_table(out).column("event_id").to_pylist())
    # Apache Kafka hides the aborted records from read_committed consumers; tansu, the local
    # broker, shows them (docs/operations.md).
    assert {f"e{i}" for i in range(20)} <= exported <= {f"e{i}" for i in range(40)}


def test_export_of_a_missing_topic_is_one_clear_error(stack: LocalStack, tmp_path: Path) -> None:
    args = argparse.Namespace(what="scores", out=str(tmp_path / "x.parquet"), topic="no-such")
    with pytest.raises(UserFacingError, match="topic 'no-such' does not exist"):
        export_command(stack.settings, args)
    assert not (tmp_path / "x.parquet").exists()
