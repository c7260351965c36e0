"""Training data: point-in-time rows equal the independent oracle; the planted signal is real
and learnable; the AUC is the textbook one."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from featurestream.cli.train import TrainingRun, model_features, train
from featurestream.devstack.generator import StreamConfig, generate_labelled_events, make_users
from featurestream.settings import Settings
from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.definitions import default_features
from featurestream.udfs.offline.training import build_dataset, point_in_time_rows, roc_auc
from tests.oracle import assert_row_matches, expected_row

WINDOWS = ("1m", "5m", "1h", "24h")


def history(n: int, seed: int) -> list[tuple[Event, bool]]:
    config = StreamConfig(users=60, events_per_second=1.0, seed=seed)
    return list(itertools.islice(generate_labelled_events(config), n))


def test_each_example_sees_exactly_the_users_earlier_events_as_of_its_ts() -> None:
    events = history(6_000, seed=3)
    examples = list(point_in_time_rows(events, default_features(WINDOWS), {"purchase"}))
    assert len(examples) == sum(e.event_type == "purchase" for e, _ in events) > 50
    ordered = sorted((e for e, _ in events), key=lambda e: e.ts)
    position = {e.event_id: i for i, e in enumerate(ordered)}
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in ordered:
        by_user[e.user_id].append(e)
    for event, row, label in examples:
        earlier = [e for e in by_user[event.user_id] if position[e.event_id] <
                   position[event.event_id]]
        if not earlier:
            assert row is None
            continue
        assert row is not None
        assert row["as_of"] == event.ts
        assert_row_matches(row, expected_row(earlier, event.ts, WINDOWS), event.event_id)
        assert label in (True, False)


def test_labels_mark_purchases_of_risky_users_only() -> None:
    events = history(60_000, seed=5)
    risky = {u.user_id for u in make_users(60, random.Random(5)) if u.risk}
    positives = [e for e, label in events if label]
    assert positives, "the planted signal needs positives"
    assert all(e.event_type == "purchase" and e.user_id in risky for e in positives)


def test_dataset_vectors_follow_the_model_features() -> None:
    features = default_features(WINDOWS)
    names, defaults = model_features(features)
    assert names[:2] == ("amount", "hour_of_day") and "last_event_ts" not in names
    assert set(defaults) == set(names) - {"hour_of_day"}
    examples = list(point_in_time_rows(history(3_000, seed=4), features, {"purchase"}))
    data = build_dataset(examples, names, defaults)
    assert data.vectors.shape == (len(examples), len(names))
    assert list(data.ts) == sorted(data.ts)
    train_part, holdout = data.split(0.25)
    assert len(holdout.labels) == len(examples) - int(len(examples) * 0.75)
    assert train_part.ts.max() <= holdout.ts.min()


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
