"""``featurestream train --from``: a model trained on a training set file is published with the
data's source and time range; labels come from the file or --labels (rows without one are left
out and counted); nulls take the model's defaults; missing columns are one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featurestream.cli import main
from featurestream.cli.train import TrainingRun, model_features, train_from
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.offline.training_set import LabelsWriter, TrainingSetWriter

ROWS = 4_000
START = 1_700_000_000_000
RUN = TrainingRun(rounds=15, seed=3)


def planted(settings: Settings, path: Path, labelled: bool = True,
            defaults_as_nulls: bool = False) -> dict[str, bool]:
    """A training set whose label follows ``amount`` (noisy), rows out of time order; every
    other feature random, or null where ``defaults_as_nulls`` and the value is the default."""
    names, defaults = model_features(settings.load_definitions())
    rng = np.random.default_rng(7)
    labels: dict[str, bool] = {}
    with TrainingSetWriter(path, names) as writer:
        for i in rng.permutation(ROWS):
            amount = float(rng.lognormal(3, 1))
            label = bool(amount > 40) != bool(rng.random() < 0.1)
            values: dict[str, float | None] = {"amount": amount, "hour_of_day": float(i % 24)}
            for name in names[2:]:
                value = defaults[name] if rng.random() < 0.3 else float(rng.integers(0, 9))
                values[name] = None if defaults_as_nulls and value == defaults[name] else value
            event_id = f"e{i}"
            labels[event_id] = label
            writer.add(event_id, START + int(i) * 1_000, "purchase", f"u{i % 50}",
                       label if labelled else None, values)
    return labels


def test_train_from_publishes_a_model_with_the_datas_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEATURESTREAM_HOME", str(tmp_path))
    source = tmp_path / "train.parquet"
    planted(Settings.from_env(), source)
    assert main(["train", "--from", str(source), "--rounds", "15"]) == 0
    settings = Settings.from_env()
    sidecar = json.loads(next(settings.effective_models_dir.glob("*.json")).read_text())
    assert sidecar["version"] == 1
    assert sidecar["training"]["data"] == {"source": str(source), "rows": ROWS,
                                           "ts_min": START, "ts_max": START + (ROWS - 1) * 1_000}
    assert sidecar["training"]["definitions"] == settings.load_definitions().fingerprint()
    assert sidecar["metrics"]["auc_holdout"] > 0.8
    assert sidecar["metrics"]["holdout_examples"] == ROWS // 5
    distribution = sidecar["training_distribution"]
    assert list(distribution["features"]) == list(sidecar["features"])
    assert len(distribution["score"]["edges"]) == 9, "score deciles"
    out = capsys.readouterr().out
    assert f"{ROWS:,} labelled rows (0 without a label and 0 repeated event_ids left out)" in out
    assert "published" in out


def test_unlabelled_rows_take_labels_by_event_id_or_are_left_out(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    source = tmp_path / "scores.parquet"
    labels = planted(settings, source, labelled=False)
    with pytest.raises(UserFacingError, match=r"has no labels.*--labels FILE"):
        train_from(settings, str(source), None, RUN)
    with LabelsWriter(tmp_path / "labels.csv") as out:
        for event_id, label in list(labels.items())[: ROWS - 100]:
            out.add(event_id, label)
    result = train_from(settings, str(source), str(tmp_path / "labels.csv"), RUN)
    assert result.unlabelled == 100
    assert result.metadata.training["data"]["rows"] == ROWS - 100
    assert result.metadata.metrics["examples"] + result.metadata.metrics[
        "holdout_examples"] == ROWS - 100


def test_nulls_take_the_models_defaults(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    planted(settings, tmp_path / "filled.parquet")
    planted(settings, tmp_path / "nulls.parquet", defaults_as_nulls=True)
    filled = train_from(settings, str(tmp_path / "filled.parquet"), None, RUN)
    nulls = train_from(settings, str(tmp_path / "nulls.parquet"), None, RUN)
    assert nulls.model_text == filled.model_text
    assert nulls.metadata.metrics == filled.metadata.metrics
    # Drift counts a defaulted value as a null, so the training distribution does too.
    with_nulls = nulls.metadata.training_distribution
    without = filled.metadata.training_distribution
    assert with_nulls is not None and without is not None
    assert with_nulls.score == without.score, "the same model scores the same rows"
    assert with_nulls.features["amount"] == without.features["amount"]
    names, _ = model_features(settings.load_definitions())
    for name in names[2:]:
        assert without.features[name].null_rate == 0
        assert 0.25 < with_nulls.features[name].null_rate < 0.42  # 30%, + the 0s drawn
        assert with_nulls.features[name].minimum >= 0, "the defaults (-1) are not values"


def test_missing_feature_columns_and_values_without_default_are_one_clear_error(
    tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path)
    names, _ = model_features(settings.load_definitions())
    with TrainingSetWriter(tmp_path / "narrow.parquet", names[:3]) as writer:
        writer.add("e1", START, "purchase", "u1", True, {})
    with pytest.raises(UserFacingError, match=f"lacks columns {names[3]}, .*; build the "
                       "training set with the current definitions"):
        train_from(settings, str(tmp_path / "narrow.parquet"), None, RUN)
    with TrainingSetWriter(tmp_path / "no_hour.parquet", names) as writer:
        writer.add("e1", START, "purchase", "u1", True, {"amount": 1.0})
    with pytest.raises(UserFacingError, match="1 rows have no 'hour_of_day', which has no "
                       "default"):
        train_from(settings, str(tmp_path / "no_hour.parquet"), None, RUN)
