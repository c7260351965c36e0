"""Backfill speed: one process replaying generated events through the feature job's code.

Writes 200k generated events (the default definitions' built-in events) as a JSON-lines file
and as an Avro container file, then times ``featurestream backfill``'s engine over each
(:class:`featurestream.backfill.run.Backfill`: read, frame, decode, route, count, capture every
scored event's rows and write the training set), and, beside them, the ceilings: decoding the
same events as framed Avro with the job's decoder (``bench/raw_limits.py``'s Avro decode
figure, measured here without a stack) and only reading the Avro file. No stack is needed.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

import fastavro

from featurestream.backfill.dead_letters import DeadLetterFile
from featurestream.backfill.files import read_file
from featurestream.backfill.run import Backfill, Outputs, ReplayConfig
from featurestream.cli.train import model_features
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.schemas import load_schema
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.records import decoder_for
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
from featurestream.udfs.features.point_in_time import scored_events
from featurestream.udfs.offline.training_set import TrainingSetWriter
from featurestream.udfs.scoring.vector import FeatureCatalog

EVENTS = 200_000
USERS = 10_000
TARGET_PER_S = 50_000


@dataclasses.dataclass(frozen=True)
class BackfillFigures:
    """Events/s of each measurement."""

    events: int
    scored: int
    jsonl_per_s: float
    avro_file_per_s: float
    avro_decode_per_s: float  # the ceiling: EventDecoder over framed Avro values
    avro_file_read_per_s: float  # reading the Avro file to JSON values, nothing else


def measure_backfill(events: int = EVENTS) -> BackfillFigures:
    """Write the files, time the backfills and the ceilings (best of two runs each)."""
    settings = Settings.from_env({})
    generated = list(islice(generate_events(StreamConfig(users=USERS, seed=11)), events))
    with tempfile.TemporaryDirectory(prefix="featurestream-bench-backfill-") as tmp:
        jsonl, avro = Path(tmp) / "events.jsonl", Path(tmp) / "events.avro"
        encoder = EventEncoder(FileSchemaRegistry())
        with jsonl.open("wb") as f:
            f.writelines(encoder.json(e) + b"\n" for e in generated)
        with avro.open("wb") as f:
            fastavro.writer(f, fastavro.parse_schema(load_schema("user_event")),
                            (e._asdict() for e in generated))
        runs = {path: [_backfill_rate(settings, path, Path(tmp)) for _ in range(2)]
                for path in (jsonl, avro)}
        read_rates = []
        for _ in range(2):
            started = time.perf_counter()
            for _ in read_file(avro, "events", "avro"):
                pass
            read_rates.append(events / (time.perf_counter() - started))
    framed = [encoder.avro(e) for e in generated[:50_000]]
    decoder = EventDecoder(FileSchemaRegistry())
    decode_rates = []
    for _ in range(2):
        started = time.perf_counter()
        for raw in framed:
            decoder.decode(raw)
        decode_rates.append(len(framed) / (time.perf_counter() - started))
    return BackfillFigures(events, max(s for _, s in runs[jsonl]),
                           max(r for r, _ in runs[jsonl]), max(r for r, _ in runs[avro]),
                           max(decode_rates), max(read_rates))


def _backfill_rate(settings: Settings, path: Path, tmp: Path) -> tuple[float, int]:
    """Events/s of one backfill of ``path`` to a training set, and the scored events."""
    definitions = settings.load_definitions()
    registry = FileSchemaRegistry()
    names, _ = model_features(definitions)
    plan = FeatureCatalog.from_definitions(definitions).plan(names)
    config = ReplayConfig(definitions, {s.name: decoder_for(s, registry)
                                        for s in definitions.sources},
                          scored_events(definitions, settings.scored_event_types),
                          settings.max_out_of_orderness_ms,
                          settings.effective_allowed_lateness_ms(definitions),
                          settings.source_batch_size)
    fmt = "avro" if path.suffix == ".avro" else "jsonl"
    with DeadLetterFile(tmp / "dead.jsonl") as dead, \
            TrainingSetWriter(tmp / "training.parquet", plan.names) as training:
        run = Backfill(config, Outputs(dead, training, plan))
        run.run(read_file(path, "events", fmt))
    return run.counts.events_per_s, run.counts.scored


def backfill_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Table rows ``(what, figure, versus)`` for ``python -m bench``."""
    ceiling = figures["avro_decode_per_s"]
    rows = []
    for what, key in (("JSON-lines file", "jsonl_per_s"), ("Avro file", "avro_file_per_s")):
        rate = figures[key]
        rows.append((f"backfill, {figures['events']:,} events, {what} -> training set",
                     f"{rate:,.0f}/s", f"{rate / ceiling:.0%} of avro decode; target "
                     f"{TARGET_PER_S:,}"))
    rows.append(("  avro decode ceiling (EventDecoder, framed Avro)", f"{ceiling:,.0f}/s", ""))
    rows.append(("  reading the Avro file to JSON values only",
                 f"{figures['avro_file_read_per_s']:,.0f}/s", ""))
    return rows
