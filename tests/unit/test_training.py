"""Training data: point-in-time rows of every entity equal the independent oracle (the rule:
the entity's earlier events in the log); the model's features follow the definitions; the
planted signal is real and learnable; the AUC is the textbook one."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from featurestream.cli.train import TrainingRun, model_features, train
from featurestream.devstack.generator import StreamConfig, generate_labelled_events, make_users
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import FileSchemaRegistry
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
from featurestream.udfs.offline.training import (
    Example,
    Timing,
    build_dataset,
    point_in_time_rows,
    roc_auc,
)
from featurestream.udfs.scoring.vector import FeatureCatalog
from tests.oracle import assert_row_matches, expected_row

WINDOWS = ("1m", "5m", "1h", "24h")
EVENTS = events_source("events")
DAY = 86_400_000
TIMING = Timing(out_of_orderness_ms=5_000, allowed_lateness_ms=DAY)
SCHEMAS = FileSchemaRegistry()


def user_and_item_definitions() -> Definitions:
    """Today's user features, and the same features of each item (so one oracle checks both)."""
    return validate([FeatureGroup("user_activity", USER, EVENTS, user_features(WINDOWS)),
                     FeatureGroup("item_activity", ITEM, EVENTS, user_features(WINDOWS))])


def history(n: int, seed: int, out_of_order: float = 0.02) -> list[tuple[Event, bool]]:
    config = StreamConfig(users=60, events_per_second=1.0, seed=seed,
                          out_of_order_fraction=out_of_order)
    return list(itertools.islice(generate_labelled_events(config), n))


def examples_of(events: list[tuple[Event, bool]], definitions: Definitions) -> list[Example]:
    return list(point_in_time_rows(events, definitions, {"purchase"}, TIMING, SCHEMAS))


def test_each_example_sees_exactly_each_entitys_earlier_events_in_the_log() -> None:
    """The rule (udfs/features/point_in_time.py): the entity's events before it in the log,
    as of its time (or of a later event that came first), never itself."""
    events = history(6_000, seed=3, out_of_order=0.2)
    assert max(e.ts for e, _ in events) - min(e.ts for e, _ in events) < DAY, \
        "no entity idles past its largest window here"
    examples = examples_of(events, user_and_item_definitions())
    assert len(examples) == sum(e.event_type == "purchase" for e, _ in events) > 50
    position = {e.event_id: i for i, (e, _) in enumerate(events)}
    by_entity: dict[tuple[str, str | None], list[Event]] = defaultdict(list)
    for e, _ in events:
        by_entity[("user", e.user_id)].append(e)
        by_entity[("item", e.item_id)].append(e)
    with_item_rows = out_of_order = 0
    for event, rows, label in examples:
        assert label in (True, False)
        for entity, key in (("user", event.user_id), ("item", event.item_id)):
            earlier = [e for e in by_entity[(entity, key)]
                       if position[e.event_id] < position[event.event_id]]
            row = rows.get(entity)
            if not earlier:
                assert row is None, (entity, event)
                continue
            assert row is not None
            as_of = max(event.ts, *(e.ts for e in earlier))
            out_of_order += as_of > event.ts
            assert row["as_of"] == as_of
            assert_row_matches(row, expected_row(earlier, as_of, WINDOWS),
                               f"{entity} {event.event_id}")
            with_item_rows += entity == "item"
    assert with_item_rows > 50, "items are bought again: their rows are checked too"
    assert out_of_order > 0, "some purchases came after later events: rows say so"


def test_a_replay_of_the_same_log_gives_the_same_examples() -> None:
    events = history(3_000, seed=7)
    assert examples_of(events, user_and_item_definitions()) == \
        examples_of(events, user_and_item_definitions())


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
    plan = FeatureCatalog.from_definitions(definitions).plan(names)
    examples = examples_of(history(3_000, seed=4), definitions)
    data = build_dataset(examples, plan, defaults)
    assert data.vectors.shape == (len(examples), len(names))
    assert list(data.ts) == sorted(data.ts)
    train_part, holdout = data.split(0.25)
    assert len(holdout.labels) == len(examples) - int(len(examples) * 0.75)
    assert train_part.ts.max() <= holdout.ts.min()


def test_other_entities_features_are_qualified_and_strings_left_out() -> None:
    definitions = validate([
        FeatureGroup("user_activity", USER, EVENTS, user_features(("1h",))),
        FeatureGroup("item_activity", ITEM, EVENTS, (
            Feature("views_1h", "count", window="1h", where=eq("event_type", "view")),
            Feature("avg_price_1h", "mean", field="amount", window="1h"),
            Feature("last_type", "last", field="event_type", window="1h")))])
    names, defaults = model_features(definitions)
    assert names[-2:] == ("item.views_1h", "item.avg_price_1h")
    assert (defaults["item.views_1h"], defaults["item.avg_price_1h"]) == (0.0, -1.0)
    plan = FeatureCatalog.from_definitions(definitions).plan(names)
    examples = examples_of(history(3_000, seed=4), definitions)
    data = build_dataset(examples, plan, defaults)
    column = names.index("item.views_1h")
    assert data.vectors[:, column].max() > 0, "item rows reach the vectors"


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
    assert 0.01 < metadata.metrics["positive_rate"] < 0.2
