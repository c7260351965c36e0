"""Training data: point-in-time rows of every entity equal the independent oracle (the rule:
the entity's earlier events in the log); the model's features follow the definitions; the
planted signal is real and learnable; the AUC is the textbook one."""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from featurestream.backfill.records import NO_TIMESTAMP, HistoryRecord, Position, json_value
from featurestream.cli.train import TrainingRun, model_features, replay_history, train
from featurestream.devstack.generator import StreamConfig, generate_labelled_events, make_users
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.records import is_builtin
from featurestream.udfs.definitions.defaults import (
    ITEM,
    USER,
    default_definitions,
    events_source,
    user_features,
)
from featurestream.udfs.definitions.filters import eq
from featurestream.udfs.definitions.model import (
    Definitions,
    Entity,
    Feature,
    FeatureGroup,
    Source,
    validate,
)
from featurestream.udfs.offline.training import Dataset, roc_auc
from featurestream.udfs.offline.training_set import TrainingTable, read_training_set
from featurestream.udfs.scoring.vector import FeatureCatalog
from tests.oracle import expected_row

WINDOWS = ("1m", "5m", "1h", "24h")
EVENTS = events_source("events")
DAY = 86_400_000


def user_and_item_definitions() -> Definitions:
    """Today's user features, and the same features of each item (so one oracle checks both)."""
    return validate([FeatureGroup("user_activity", USER, EVENTS, user_features(WINDOWS)),
                     FeatureGroup("item_activity", ITEM, EVENTS, user_features(WINDOWS))])


def history(n: int, seed: int, out_of_order: float = 0.02) -> list[tuple[Event, bool]]:
    config = StreamConfig(users=60, events_per_second=1.0, seed=seed,
                          out_of_order_fraction=out_of_order)
    return list(itertools.islice(generate_labelled_events(config), n))


def training_set(events: list[tuple[Event, bool]], definitions: Definitions,
                 directory: Path) -> TrainingTable:
    """The training set `featurestream train` and `backfill` write for ``events`` (a log)."""
    source = next(s for s in definitions.sources if is_builtin(s)).name
    records = [HistoryRecord(source, json_value(e._asdict()), Position("test", None, i),
                             NO_TIMESTAMP) for i, (e, _) in enumerate(events)]
    settings = Settings(home=directory, windows=WINDOWS, events_topic="events")
    names, _ = model_features(definitions)
    path = replay_history(settings, definitions, records,
                          {e.event_id: label for e, label in events}, directory)
    return read_training_set(path, names)


def test_each_row_sees_exactly_each_entitys_earlier_events_in_the_log(tmp_path: Path) -> None:
    """The rule (docs/point-in-time.md): the entity's events before it in the log, as of its
    time (or of a later event that came first), never itself -- through the whole chain:
    replay, captured rows, raw values, the Parquet file."""
    definitions = user_and_item_definitions()
    events = history(6_000, seed=3, out_of_order=0.2)
    table = training_set(events, definitions, tmp_path)
    purchases = [(i, e, label) for i, (e, label) in enumerate(events)
                 if e.event_type == "purchase"]
    assert list(table.event_ids) == [e.event_id for _, e, _ in purchases] and len(purchases) > 50
    assert list(table.labels) == [label for _, _, label in purchases]
    names, _ = model_features(definitions)
    column = {name: j for j, name in enumerate(names)}
    by_entity: dict[tuple[str, str | None], list[tuple[int, Event]]] = defaultdict(list)
    for i, (e, _) in enumerate(events):
        by_entity[("user", e.user_id)].append((i, e))
        by_entity[("item", e.item_id)].append((i, e))
    checked = 0
    for row, (index, event, _) in enumerate(purchases):
        values = table.matrix[row]
        assert values[column["amount"]] == event.amount
        for entity, key, prefix in (("user", event.user_id, ""),
                                    ("item", event.item_id, "item.")):
            earlier = [e for i, e in by_entity[(entity, key)] if i < index]
            mine = {n: values[j] for n, j in column.items() if n.startswith(prefix)
                    and (prefix or "." not in n) and n not in ("amount", "hour_of_day")}
            if not earlier:
                assert all(math.isnan(v) for v in mine.values()), (entity, event)
                continue
            as_of = max(event.ts, *(e.ts for e in earlier))
            expected = expected_row(earlier, as_of, WINDOWS)
            for name, value in mine.items():
                want = expected[name.removeprefix(prefix)]
                assert (math.isnan(value) if want is None else
                        math.isclose(value, want, rel_tol=1e-9)), (entity, event, name)
            checked += 1
    assert checked > 100


def test_labels_mark_purchases_of_risky_users_only() -> None:
    events = history(60_000, seed=5)
    risky = {u.user_id for u in make_users(60, random.Random(5)) if u.risk}
    positives = [e for e, label in events if label]
    assert positives, "the planted signal needs positives"
    assert all(e.event_type == "purchase" and e.user_id in risky for e in positives)


def test_dataset_vectors_follow_the_model_features() -> None:
    definitions = default_definitions(WINDOWS, "events")
    names, defaults = model_features(definitions)
    assert names[:2] == ("amount", "hour_of_day") and "last_event_ts" not in names
    assert "ctr_1h" in names and defaults["ctr_1h"] == -1.0 and defaults["views_1h"] == 0.0
    assert set(defaults) == set(names) - {"hour_of_day"}
    data = Dataset(np.zeros((40, len(names))), np.zeros(40), np.arange(40))
    train_part, holdout = data.split(0.25)
    assert len(holdout.labels) == 10 and train_part.ts.max() < holdout.ts.min()


def test_other_entities_features_are_qualified_and_strings_left_out(tmp_path: Path) -> None:
    definitions = validate([
        FeatureGroup("user_activity", USER, EVENTS, user_features(("1h",))),
        FeatureGroup("item_activity", ITEM, EVENTS, (
            Feature("views_1h", "count", window="1h", where=eq("event_type", "view")),
            Feature("avg_price_1h", "mean", field="amount", window="1h"),
            Feature("last_type", "last", field="event_type", window="1h")))])
    names, defaults = model_features(definitions)
    assert names[-2:] == ("item.views_1h", "item.avg_price_1h")
    assert (defaults["item.views_1h"], defaults["item.avg_price_1h"]) == (0.0, -1.0)
    table = training_set(history(3_000, seed=4), definitions, tmp_path)
    column = names.index("item.views_1h")
    assert np.nanmax(table.matrix[:, column]) > 0, "item rows reach the training set"


def test_definitions_without_the_builtin_events_cannot_train() -> None:
    payments = Source("payments", topic="payments", fields={"merchant_id": "string",
                                                             "amount": "double", "ts": "long"})
    definitions = validate([FeatureGroup("merchant_activity", Entity("merchant", ("merchant_id",)),
                                         payments, (Feature("payments_1h", "count",
                                                            window="1h"),))])
    with pytest.raises(UserFacingError, match="no feature from the built-in events"):
        model_features(definitions)


def test_roc_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.3).astype(float)
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(labels, scores) == pytest.approx(pairwise, abs=1e-12)
    with pytest.raises(ValueError):
        roc_auc(np.zeros(3), np.zeros(3))


def test_the_planted_signal_is_learnable(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    _, metadata = train(settings, TrainingRun(events=80_000, users=800, rounds=60))
    assert metadata.version == 1
    assert metadata.metrics["auc_holdout"] > 0.85, metadata.metrics
    catalog = FeatureCatalog.from_definitions(settings.load_definitions())
    recorded = metadata.feature_definitions
    assert recorded and recorded == {n: catalog.signatures[n] for n in metadata.features
                                     if n not in ("amount", "hour_of_day")}
    assert 0.01 < metadata.metrics["positive_rate"] < 0.2
