"""``featurestream train``: train the scoring model on a generated history; publish a version.

The history comes from the synthetic generator (its planted fraud signal and labels); training
features are computed point in time with the feature job's own code (:mod:`udfs.training`); the
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
from featurestream.settings import Settings
from featurestream.udfs.features.definitions import Feature, default_features
from featurestream.udfs.offline.training import build_dataset, point_in_time_rows, roc_auc
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.vector import RECORD_FEATURES

# Value of a feature when the user has no row (or no value): nothing happened. Means and ratios
# are undefined then; -1 keeps "undefined" apart from a real 0.
_DEFAULT_BY_KIND = {"count": 0.0, "sum_amount": 0.0, "distinct_items": 0.0,
                    "mean_amount": -1.0, "ratio": -1.0}
_RECORD_DEFAULTS = {"amount": 0.0}


@dataclass(frozen=True)
class TrainingRun:
    """What to train on and how."""

    events: int = 300_000
    users: int = 2_000
    events_per_second: float = 5.0  # simulated: 300k events span about 17 hours
    seed: int = 1
    rounds: int = 200
    holdout: float = 0.2


def model_features(features: tuple[Feature, ...]) -> tuple[tuple[str, ...], dict[str, float]]:
    """The model's feature names (record fields, then windowed row features) and defaults."""
    windowed = [f for f in features if f.window is not None]
    names = (*RECORD_FEATURES, *(f.name for f in windowed))
    defaults = {**_RECORD_DEFAULTS, **{f.name: _DEFAULT_BY_KIND[f.kind] for f in windowed}}
    return names, defaults


def train(settings: Settings, run: TrainingRun) -> tuple[str, ModelMetadata]:
    """Train on a generated history; returns the model text and its sidecar (next version)."""
    features = default_features(settings.windows)
    names, defaults = model_features(features)
    config = StreamConfig(users=run.users, events_per_second=run.events_per_second,
                          seed=run.seed)
    history = islice(generate_labelled_events(config), run.events)
    examples = point_in_time_rows(history, features, settings.scored_event_types)
    train_set, holdout = build_dataset(examples, names, defaults).split(run.holdout)
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
                  "windows": list(settings.windows), "params": params,
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
