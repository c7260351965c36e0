"""``featurestream train``: train the scoring model on a generated history; publish a version.

The history comes from the synthetic generator (its planted fraud signal and labels) in the
built-in events contract; the model reads the record features and every numeric feature the
definitions (``FEATURESTREAM_DEFINITIONS``, by default the built-in user features) compute
from that source -- the user's unqualified, any other entity's as ``<entity>.<feature>``.
Training features are computed point in time with the feature job's own engine
(:mod:`udfs.offline.training`); the
latest ``--holdout`` share of examples (by event time) is held out and its AUC is written to the
sidecar. The model is published as the registry's next version, which running scoring jobs pick
up by themselves when they serve the latest version.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice

import lightgbm as lgb
import numpy as np

from featurestream.devstack.generator import StreamConfig, generate_labelled_events
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.records import is_builtin
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.offline.training import build_dataset, point_in_time_rows, roc_auc
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.vector import RECORD_FEATURES, USER, FeatureCatalog, is_number

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
    names, defaults = model_features(definitions)
    plan = FeatureCatalog.from_definitions(definitions).plan(names)
    config = StreamConfig(users=run.users, events_per_second=run.events_per_second,
                          seed=run.seed)
    history = islice(generate_labelled_events(config), run.events)
    examples = point_in_time_rows(history, definitions, settings.scored_event_types,
                                  plan.entities)
    train_set, holdout = build_dataset(examples, plan, defaults).split(run.holdout)
    params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 15,
              "min_data_in_leaf": 40, "feature_fraction": 0.9, "seed": run.seed,
              "deterministic": True, "num_threads": 1, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(train_set.vectors, train_set.labels,
                                            feature_name=list(names)),
                        num_boost_round=run.rounds)
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    metadata = ModelMetadata(
        name=settings.model_name,
        version=registry.next_version(),
        features=names,
        defaults=defaults,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        metrics={
            "auc_holdout": roc_auc(holdout.labels, np.asarray(booster.predict(holdout.vectors))),
            "auc_train": roc_auc(train_set.labels, np.asarray(booster.predict(train_set.vectors))),
            "examples": len(train_set.labels),
            "holdout_examples": len(holdout.labels),
            "positive_rate": float(train_set.labels.mean()),
        },
        training={"generator": {"events": run.events, "users": run.users,
                                "events_per_second": run.events_per_second,
                                "seed": run.seed},
                  "scored_event_types": list(settings.scored_event_types),
                  "windows": list(settings.windows),
                  "definitions": definitions.fingerprint(), "params": params,
                  "rounds": run.rounds, "holdout": run.holdout},
    )
    return booster.model_to_string(), metadata


def train_command(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: train, publish the next version, print its metrics."""
    given = {name: getattr(args, name) for name in ("events", "users", "seed", "rounds")}
    run = replace(TrainingRun(), **{k: v for k, v in given.items() if v is not None})
    started = time.monotonic()
    print(f"training {settings.model_name} on {run.events:,} generated events "
          f"({run.users:,} users, seed {run.seed}) ...", flush=True)
    model_text, metadata = train(settings, run)
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    sidecar = registry.publish(model_text, metadata)
    m = metadata.metrics
    print(f"{metadata.name} v{metadata.version}: held-out AUC {m['auc_holdout']:.3f} "
          f"(train {m['auc_train']:.3f}) on {int(m['holdout_examples']):,} held-out examples, "
          f"{m['positive_rate']:.1%} positive; {time.monotonic() - started:.0f} s")
    print(f"published {sidecar}")
    return 0
