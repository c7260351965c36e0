"""``featurestream train``: train the scoring model; publish a version.

The rows come from ``--from PATH`` (a training set or exported scores, Parquet or CSV:
:mod:`udfs.offline.training_set`; labels completed by ``--labels`` event_id,label where the file
has none; nulls filled with the model's defaults, as the scoring job fills absent values), from
``--history INPUT...`` (an event log, ``kafka:TOPIC`` or files, plus ``--labels``), or else from
the synthetic generator (its planted fraud signal and labels). An event log -- generated or
not -- is first replayed into a training set by ``featurestream backfill``'s code, point in time
with the feature job's own engine (docs/point-in-time.md), so every path trains on such a file.
The model reads the record features and every numeric feature the definitions
(``FEATURESTREAM_DEFINITIONS``, by default the built-in user features) compute from the
built-in events -- the user's unqualified, any other entity's as ``<entity>.<feature>``. All
paths share one fit: the latest ``--holdout``
share of rows (by event time) is held out and its AUC is written to the sidecar with the data's
source and time range. The model is published as the registry's next version, which running
scoring jobs pick up by themselves when they serve the latest version.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import lightgbm as lgb
import numpy as np
from tqdm import tqdm

from featurestream.backfill.dead_letters import DeadLetterFile
from featurestream.backfill.inputs import InputOptions, open_inputs
from featurestream.backfill.records import NO_TIMESTAMP, HistoryRecord, Position, json_value
from featurestream.backfill.run import Backfill, Outputs, ReplayConfig
from featurestream.devstack.generator import StreamConfig, generate_labelled_events
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.records import is_builtin
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.offline.training import Dataset, roc_auc
from featurestream.udfs.offline.training_set import (
    TrainingSetError,
    TrainingSetWriter,
    read_labels,
    read_training_set,
)
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import ModelRegistry, VersionTaken
from featurestream.udfs.scoring.vector import RECORD_FEATURES, USER, FeatureCatalog, is_number
from featurestream.udfs.telemetry.drift import TrainingDistribution

# Value of a feature when the entity has no row (or no value): nothing happened. Counts and sums
# are 0 then; means, ratios, extremes and last values are undefined: -1 keeps "undefined" apart
# from a real 0.
_ZERO_KINDS = frozenset({"count", "sum", "distinct", "approx_distinct"})
_UNDEFINED = -1.0
_RECORD_DEFAULTS = {"amount": 0.0}
# Not a model input: an absolute event time says when, not what.
_NOT_INPUTS = frozenset({"last_event_ts"})


@dataclass(frozen=True)
class TrainingRun:
    """What to train on and how."""

    events: int = 300_000
    users: int = 2_000
    events_per_second: float = 5.0  # simulated: 300k events span about 17 hours
    seed: int = 1
    rounds: int = 200
    holdout: float = 0.2


def model_features(definitions: Definitions) -> tuple[tuple[str, ...], dict[str, float]]:
    """The model's feature names (record fields, then the numeric features of every entity
    the built-in events feed, in declaration order) and their defaults."""
    names: list[str] = list(RECORD_FEATURES)
    defaults = dict(_RECORD_DEFAULTS)
    for group in definitions.groups:
        if not is_builtin(group.source):
            continue
        entity = group.entity.name
        for feature in group.features:
            if feature.kind in _NOT_INPUTS or not is_number(feature, group.source):
                continue
            name = feature.name if entity == USER else f"{entity}.{feature.name}"
            names.append(name)
            defaults[name] = 0.0 if feature.kind in _ZERO_KINDS else _UNDEFINED
    if len(names) == len(RECORD_FEATURES):
        raise UserFacingError(
            "the definitions compute no feature from the built-in events contract "
            "(schemas/user_event.avsc), which `featurestream train` generates; declare a feature "
            "group on events_source(...) in FEATURESTREAM_DEFINITIONS, or leave it empty for the "
            "built-in user features")
    return tuple(names), defaults


def train(settings: Settings, run: TrainingRun) -> tuple[str, ModelMetadata]:
    """Train on a generated history; returns the model text and its sidecar (next version)."""
    definitions = settings.load_definitions()
    model_features(definitions)  # says what is wrong before anything is generated
    source = next(s for s in definitions.sources if is_builtin(s)).name
    config = StreamConfig(users=run.users, events_per_second=run.events_per_second,
                          seed=run.seed)
    labels: dict[str, bool] = {}

    def history() -> Iterator[HistoryRecord]:
        for number, (event, label) in enumerate(islice(generate_labelled_events(config),
                                                       run.events)):
            labels[event.event_id] = label
            yield HistoryRecord(source, json_value(event._asdict()),
                                Position("generator", None, number), NO_TIMESTAMP)

    generator = {"events": run.events, "users": run.users,
                 "events_per_second": run.events_per_second, "seed": run.seed}
    with tempfile.TemporaryDirectory(prefix="featurestream-train-") as tmp:
        path = replay_history(settings, definitions, history(), labels, Path(tmp))
        result = train_from(settings, str(path), None, run, provenance={"generator": generator})
    return result.model_text, result.metadata


def replay_history(settings: Settings, definitions: Definitions,
                   history: Iterable[HistoryRecord], labels: Mapping[str, bool],
                   directory: Path, total: int | None = None) -> Path:
    """The training set of ``history`` (every scored event, labels by event id) in
    ``directory``, as ``featurestream backfill`` writes it; its dead letters beside it."""
    names, _ = model_features(definitions)
    plan = FeatureCatalog.from_definitions(definitions).plan(names)
    path = directory / "training-set.parquet"
    with DeadLetterFile(directory / "dead-letters.jsonl") as dead, \
            tqdm(total=total, unit=" events", unit_scale=True, disable=None, file=sys.stderr,
                 desc="replay") as bar:
        writer = TrainingSetWriter(path, plan.names)
        try:
            Backfill(ReplayConfig.from_settings(settings, definitions),
                     Outputs(dead, writer, plan, labels), progress=bar.update).run(history)
        finally:
            writer.close()
        if dead.count:
            print(f"{dead.count:,} records of the history were dead letters "
                  f"({', '.join(f'{r} {n:,}' for r, n in dead.by_reason.most_common())})",
                  file=sys.stderr)
    return path


@dataclass(frozen=True)
class FromFile:
    """What ``train --from`` read: the model text, its sidecar, and the rows left out."""

    model_text: str
    metadata: ModelMetadata
    unlabelled: int  # rows without a label
    repeated: int  # rows of an event_id seen before (replayed scores)


def train_from(settings: Settings, source: str, labels: str | None, run: TrainingRun,
               provenance: dict[str, object] | None = None) -> FromFile:
    """Train on a training set (or exported scores) file, joined with ``labels`` by event_id
    where its own label is absent; rows still without a label, and repeats of an event_id, are
    left out (counted). ``provenance``: what the file was made from, for the sidecar."""
    definitions = settings.load_definitions()
    names, defaults = model_features(definitions)
    try:
        table = read_training_set(source, names)
        has_labels = any(label is not None for label in table.labels)
        if labels is not None:
            table = table.with_labels(read_labels(labels))
        elif not has_labels:
            raise UserFacingError(f"{source} has no labels (e.g. exported scores); give "
                                  "--labels FILE, a CSV of event_id,label")
    except TrainingSetError as exc:
        raise UserFacingError(str(exc)) from None
    distinct = table.first_per_event()
    labelled = distinct.labelled()
    order = np.argsort(labelled.ts, kind="stable")  # time-ordered, for the holdout split
    matrix = labelled.matrix[order]
    dataset = Dataset(_with_defaults(matrix, names, defaults, source),
                      np.array(labelled.labels, dtype=np.float64)[order], labelled.ts[order],
                      np.isnan(matrix))
    data = _data_range("generator" if provenance else source, dataset)
    model_text, metadata = _fit(settings, definitions, names, defaults, dataset, run, data,
                                provenance or {})
    return FromFile(model_text, metadata, unlabelled=len(distinct) - len(labelled),
                    repeated=len(table) - len(distinct))


def _with_defaults(matrix: np.ndarray, names: tuple[str, ...], defaults: dict[str, float],
                   source: str) -> np.ndarray:
    """Nulls (NaN) replaced by the model's defaults, as the scoring job fills absent values."""
    filled = matrix.copy()
    for j, name in enumerate(names):
        absent = np.isnan(filled[:, j])
        if not absent.any():
            continue
        if name not in defaults:
            raise UserFacingError(f"{source}: {int(absent.sum()):,} rows have no {name!r}, "
                                  "which has no default; fill the column or drop those rows")
        filled[absent, j] = defaults[name]
    return filled


def _data_range(source: str, dataset: Dataset) -> dict[str, object]:
    """The sidecar's ``training.data``: where the rows came from and their event-time range."""
    if not len(dataset.ts):
        raise UserFacingError(f"{source}: no labelled rows to train on")
    return {"source": source, "rows": len(dataset.ts), "ts_min": int(dataset.ts.min()),
            "ts_max": int(dataset.ts.max())}


def _fit(settings: Settings, definitions: Definitions, names: tuple[str, ...],
         defaults: dict[str, float], dataset: Dataset, run: TrainingRun,
         data: dict[str, object], provenance: dict[str, object]) -> tuple[str, ModelMetadata]:
    """The one training step of every path: time-ordered holdout, LightGBM, the sidecar (with
    each feature's definition, which the scoring job checks the definitions it runs against)."""
    catalog = FeatureCatalog.from_definitions(definitions)
    train_set, holdout = dataset.split(run.holdout)
    params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 15,
              "min_data_in_leaf": 40, "feature_fraction": 0.9, "seed": run.seed,
              "deterministic": True, "num_threads": 1, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(train_set.vectors, train_set.labels,
                                            feature_name=list(names)),
                        num_boost_round=run.rounds)
    try:
        auc_holdout = roc_auc(holdout.labels, np.asarray(booster.predict(holdout.vectors)))
        train_scores = np.asarray(booster.predict(train_set.vectors))
        auc_train = roc_auc(train_set.labels, train_scores)
    except ValueError:
        raise UserFacingError(
            f"{data['source']}: the training rows and the latest {run.holdout:.0%} held out "
            "each need positive and negative labels; train on more (or more varied) data"
        ) from None
    # What drift is measured against: the training rows as the scoring job counts them (a
    # missing value is a null, not its default) and the model's scores on them.
    distribution = TrainingDistribution.from_training(
        names, train_set.with_nulls(), train_scores)
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    metadata = ModelMetadata(
        name=settings.model_name,
        version=registry.next_version(),
        features=names,
        defaults=defaults,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        metrics={
            "auc_holdout": auc_holdout,
            "auc_train": auc_train,
            "examples": len(train_set.labels),
            "holdout_examples": len(holdout.labels),
            "positive_rate": float(train_set.labels.mean()),
        },
        training={**provenance, "data": data,
                  "feature_definitions": {name: catalog.signatures[name] for name in names
                                          if name in catalog.signatures},
                  "scored_event_types": list(settings.scored_event_types),
                  "windows": list(settings.windows),
                  "definitions": definitions.fingerprint(), "params": params,
                  "rounds": run.rounds, "holdout": run.holdout},
        training_distribution=distribution,
    )
    return booster.model_to_string(), metadata


def train_command(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: train (on --from FILE, else a generated history), publish the next
    version, print its metrics."""
    given = {name: getattr(args, name) for name in ("events", "users", "seed", "rounds")}
    run = replace(TrainingRun(), **{k: v for k, v in given.items() if v is not None})
    started = time.monotonic()
    if args.history:
        if args.source is not None or args.events is not None or args.users is not None:
            raise UserFacingError("--history INPUT... is the event log to train on: leave out "
                                  "--from, --events and --users")
        if args.labels is None:
            raise UserFacingError("--history needs --labels FILE (event_id,label): which scored "
                                  "events were positive")
        print(f"training {settings.model_name} on {', '.join(args.history)} ...", flush=True)
        definitions = settings.load_definitions()
        history = open_inputs(settings, definitions, args.history, InputOptions())
        with tempfile.TemporaryDirectory(prefix="featurestream-train-") as tmp:
            path = replay_history(settings, definitions, history.records, {}, Path(tmp),
                                  history.count)
            result = train_from(settings, str(path), args.labels, run,
                                provenance={"history": list(args.history)})
        model_text, metadata = result.model_text, result.metadata
        print(f"{metadata.training['data']['rows']:,} labelled scored events "
              f"({result.unlabelled:,} without a label left out)")
    elif args.source is None:
        if args.labels is not None:
            raise UserFacingError("--labels goes with --from PATH (a training set or exported "
                                  "scores) or --history INPUT...; without them, train uses the "
                                  "generator's labels")
        print(f"training {settings.model_name} on {run.events:,} generated events "
              f"({run.users:,} users, seed {run.seed}) ...", flush=True)
        model_text, metadata = train(settings, run)
    else:
        if args.events is not None or args.users is not None:
            raise UserFacingError("--events and --users shape the generated history; leave "
                                  "them out with --from PATH")
        print(f"training {settings.model_name} on {args.source} ...", flush=True)
        result = train_from(settings, args.source, args.labels, run)
        model_text, metadata = result.model_text, result.metadata
        data = metadata.training["data"]
        print(f"{data['rows']:,} labelled rows ({result.unlabelled:,} without a label and "
              f"{result.repeated:,} repeated event_ids left out), event times "
              f"{_iso(data['ts_min'])} .. {_iso(data['ts_max'])}")
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name,
                             settings.compiled_predictor)  # compiled at publish: no load waits
    sidecar = None
    while sidecar is None:
        try:
            sidecar = registry.publish(model_text, metadata)
        except VersionTaken:  # another train published or is publishing it: take the next
            metadata = replace(metadata, version=registry.next_version())
    m = metadata.metrics
    print(f"{metadata.name} v{metadata.version}: held-out AUC {m['auc_holdout']:.3f} "
          f"(train {m['auc_train']:.3f}) on {int(m['holdout_examples']):,} held-out examples, "
          f"{m['positive_rate']:.1%} positive; {time.monotonic() - started:.0f} s")
    print(f"published {sidecar}")
    return 0


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="seconds")
