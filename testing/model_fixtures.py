"""Small real LightGBM models published into a temporary registry, and the definitions they are
checked against (the built-in user features plus a few item features), for unit tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import lightgbm as lgb
import numpy as np

from featurestream.udfs.definitions.defaults import ITEM, USER, events_source, user_features
from featurestream.udfs.definitions.filters import eq
from featurestream.udfs.definitions.model import Definitions, Feature, FeatureGroup, validate
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.vector import FeatureCatalog
from featurestream.udfs.telemetry.drift import TrainingDistribution

NAME = "purchase_risk"
FEATURES = ("amount", "hour_of_day", "purchases_5m", "spend_1h")
DEFAULTS = {"amount": 0.0, "purchases_5m": 0.0, "spend_1h": 0.0}
WINDOWS = ("1m", "5m", "1h", "24h")
ITEM_FEATURES = (
    Feature("views_1h", "count", window="1h", where=eq("event_type", "view")),
    Feature("purchases_1h", "count", window="1h", where=eq("event_type", "purchase")),
)


def definitions(windows: Sequence[str] = WINDOWS) -> Definitions:
    """The built-in user features and :data:`ITEM_FEATURES`, both over the built-in events."""
    events = events_source("events")
    return validate([FeatureGroup("user_activity", USER, events, user_features(windows)),
                     FeatureGroup("item_activity", ITEM, events, ITEM_FEATURES)])


CATALOG = FeatureCatalog.from_definitions(definitions())


def metadata(version: int, features: Sequence[str] = FEATURES,
             defaults: Mapping[str, float] = DEFAULTS, seed: int = 0,
             with_distribution: bool = True) -> ModelMetadata:
    """A sidecar; ``with_distribution=False``: one written before training distributions were
    recorded."""
    return ModelMetadata(name=NAME, version=version, features=tuple(features),
                         defaults=dict(defaults), created_at="2026-01-01T00:00:00+00:00",
                         metrics={"auc_holdout": 0.9},
                         training_distribution=(training_distribution(features, seed)
                                                if with_distribution else None))


def _examples(features: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable toy target: the label follows the first feature."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, len(features))) * 10
    y = (x[:, 0] + rng.normal(size=400) > 0).astype(float)
    return x, y


@lru_cache(maxsize=32)
def _booster(features: tuple[str, ...], seed: int) -> lgb.Booster:
    x, y = _examples(features, seed)
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1,
              "seed": seed, "deterministic": True, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(x, y, feature_name=list(features)), 10)


def train_text(features: Sequence[str] = FEATURES, seed: int = 0) -> str:
    """A real booster on :func:`_examples`."""
    return _booster(tuple(features), seed).model_to_string()


def training_distribution(features: Sequence[str] = FEATURES, seed: int = 0
                          ) -> TrainingDistribution:
    """The distribution of :func:`train_text`'s training rows, a tenth of them missing every
    feature but the first, and of its scores on them."""
    x, _ = _examples(features, seed)
    with_nulls = x.copy()
    with_nulls[::10, 1:] = np.nan
    scores = np.asarray(_booster(tuple(features), seed).predict(x))
    return TrainingDistribution.from_training(tuple(features), with_nulls, scores)


def publish(directory: Path, version: int, features: Sequence[str] = FEATURES,
            defaults: Mapping[str, float] = DEFAULTS, seed: int = 0) -> ModelRegistry:
    registry = ModelRegistry(directory, NAME)
    registry.publish(train_text(features, seed), metadata(version, features, defaults, seed))
    return registry
