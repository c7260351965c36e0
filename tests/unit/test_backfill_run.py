"""``featurestream backfill`` end to end on files, in one process: the same training set from
JSON lines, Avro and Parquet; every bad record a dead letter with the job's reason and its
position, the good ones unaffected; ``--order time``; examples probed at their time equal the
scored events' captured rows; labels joined; the online store as of the end."""

from __future__ import annotations

import base64
import json
import random
from itertools import islice
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestream.cli import backfill as backfill_cli
from featurestream.cli import build_parser
from featurestream.cli.backfill import backfill_command
from featurestream.devstack.generator import StreamConfig, generate_labelled_events
from featurestream.errors import UserFacingError
from featurestream.schemas import load_schema
from featurestream.settings import Settings
from featurestream.udfs.contract.events import Event

EVENTS = 3_000
HISTORY = list(islice(generate_labelled_events(StreamConfig(users=40, seed=5)), EVENTS))


def records(events: list[Event]) -> list[dict]:
    return [e._asdict() for e in events]


def write_jsonl(path: Path, events: list[Event]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records(events)))
    return path


def backfill(tmp_path: Path, *argv: str) -> pa.Table:
    """Run the command; the training set it wrote."""
    out = tmp_path / f"training-{len(list(tmp_path.glob('training-*')))}.parquet"
    args = build_parser().parse_args(["backfill", *argv, "--training-set", str(out),
                                      "--dead-letters", str(tmp_path / "dead.jsonl")])
    settings = Settings.from_env({"FEATURESTREAM_HOME": str(tmp_path / "home")})
    assert backfill_command(settings, args) == 0
    return pq.read_table(out)


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return [event for event, _ in HISTORY]


def test_the_same_training_set_from_json_lines_avro_and_parquet(tmp_path: Path,
                                                                events: list[Event]) -> None:
    from_json = backfill(tmp_path, str(write_jsonl(tmp_path / "events.jsonl", events)))
    avro = tmp_path / "events.avro"
    with avro.open("wb") as f:
        fastavro.writer(f, fastavro.parse_schema(load_schema("user_event")), records(events))
    parquet = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(records(events)), parquet, row_group_size=500)
    assert from_json.num_rows == sum(e.event_type == "purchase" for e in events) > 20
    assert backfill(tmp_path, str(avro)).equals(from_json)
    assert backfill(tmp_path, str(parquet)).equals(from_json)
    assert backfill(tmp_path, "--format", "jsonl", str(tmp_path / "events.jsonl")).equals(
        from_json)


def test_bad_records_are_dead_letters_and_the_rest_is_unaffected(tmp_path: Path,
                                                                  events: list[Event]) -> None:
    clean = backfill(tmp_path, str(write_jsonl(tmp_path / "clean.jsonl", events)))
    lines = [json.dumps(r) for r in records(events)]
    bad = {10: "{not json", 20: json.dumps({**records(events)[0], "user_id": ""}),
           30: json.dumps({**records(events)[0], "event_type": "refund"})}
    for line, text in sorted(bad.items()):
        lines.insert(line - 1, text)
    dirty = tmp_path / "dirty.jsonl"
    dirty.write_text("\n".join(lines) + "\n")
    assert backfill(tmp_path, str(dirty)).equals(clean)
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["position"], d["stage"], d["error_class"]) for d in letters] == [
        (f"{dirty}:10", "decode", "MalformedRecord"), (f"{dirty}:20", "decode", "InvalidValue"),
        (f"{dirty}:30", "decode", "SchemaViolation")]
    assert [base64.b64decode(d["value"]).decode() for d in letters] == [
        bad[10], bad[20], bad[30]]
    assert letters[0]["offset"] == 9 and letters[0]["partition"] is None


def test_order_time_sorts_a_shuffled_file(tmp_path: Path, events: list[Event],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backfill_cli, "SORT_RUN_RECORDS", 400)  # runs spilled to disk
    in_order = sorted(events, key=lambda e: e.ts)
    expected = backfill(tmp_path, str(write_jsonl(tmp_path / "sorted.jsonl", in_order)))
    shuffled = in_order[:]
    random.Random(3).shuffle(shuffled)
    path = write_jsonl(tmp_path / "shuffled.jsonl", shuffled)
    # Ties in event time keep the input order, which the shuffle changed: compare by event.
    got = backfill(tmp_path, "--order", "time", str(path)).sort_by("event_id")
    assert got.equals(expected.sort_by("event_id"))


def test_examples_at_the_scored_events_get_their_captured_rows(tmp_path: Path,
                                                               events: list[Event]) -> None:
    in_order = sorted(events, key=lambda e: e.ts)
    history = str(write_jsonl(tmp_path / "sorted.jsonl", in_order))
    scored = backfill(tmp_path, history)
    times = [e.ts for e in in_order]
    unique = [e for e in in_order  # an example at a shared time would also see its twins
              if e.event_type == "purchase" and times.count(e.ts) == 1]
    examples = tmp_path / "examples.csv"
    examples.write_text("event_id,user_id,ts,amount,label\n" + "".join(
        f"{e.event_id},{e.user_id},{e.ts},{e.amount},{'true' if i % 2 else 'false'}\n"
        for i, e in enumerate(reversed(unique))))  # any order: examples are sorted by ts
    probed = backfill(tmp_path, history, "--examples", str(examples))
    assert probed.num_rows == len(unique)
    ids = pa.array([e.event_id for e in unique])
    wanted = scored.filter(pa.compute.is_in(scored.column("event_id"), ids))
    features = [n for n in scored.column_names if n not in ("label", "event_type")]
    assert probed.select(features).equals(wanted.select(features))
    assert probed.column("label").null_count == 0


def test_labels_are_joined_by_event_id(tmp_path: Path, events: list[Event]) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("event_id,label\n" + "".join(
        f"{e.event_id},{'true' if fraud else 'false'}\n" for e, fraud in HISTORY))
    table = backfill(tmp_path, str(write_jsonl(tmp_path / "events.jsonl", events)),
                     "--labels", str(labels))
    expected = {e.event_id: fraud for e, fraud in HISTORY}
    assert table.column("label").to_pylist() == [
        expected[i] for i in table.column("event_id").to_pylist()]


def test_examples_need_a_training_set(tmp_path: Path) -> None:
    args = build_parser().parse_args(["backfill", "x.jsonl", "--examples", "e.csv"])
    with pytest.raises(UserFacingError, match="--training-set"):
        backfill_command(Settings.from_env({"FEATURESTREAM_HOME": str(tmp_path)}), args)


def test_examples_from_parquet_with_a_timestamp_column(tmp_path: Path,
                                                       events: list[Event]) -> None:
    history = str(write_jsonl(tmp_path / "events.jsonl", events))
    purchases = [e for e in events if e.event_type == "purchase"][:10]
    csv = tmp_path / "examples.csv"
    csv.write_text("user_id,ts\n" + "".join(f"{e.user_id},{e.ts}\n" for e in purchases))
    parquet = tmp_path / "examples.parquet"
    pq.write_table(pa.table({
        "user_id": [e.user_id for e in purchases],
        "ts": pa.array([e.ts for e in purchases], pa.timestamp("ms", "UTC"))}), parquet)
    from_csv = backfill(tmp_path, history, "--examples", str(csv))
    assert from_csv.num_rows == 10 and from_csv.column("label").null_count == 10
    assert from_csv.column("event_id").to_pylist()[0] == "example-1"
    assert backfill(tmp_path, history, "--examples", str(parquet)).equals(from_csv)


def test_examples_without_a_time_are_one_clear_error(tmp_path: Path) -> None:
    history = str(write_jsonl(tmp_path / "events.jsonl", [e for e, _ in HISTORY[:10]]))
    examples = tmp_path / "examples.csv"
    examples.write_text("user_id,when\nu1,1\n")
    with pytest.raises(UserFacingError, match="needs a ts column"):
        backfill(tmp_path, history, "--examples", str(examples))
    examples.write_text("user_id,ts\nu1,1\nu2,\n")
    with pytest.raises(UserFacingError, match="row 2: ts is None"):
        backfill(tmp_path, history, "--examples", str(examples))
