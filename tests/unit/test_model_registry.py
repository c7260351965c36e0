"""Model sidecars, the file registry, and hot reload of the served versions."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import (
    LoadedModel,
    ModelError,
    ModelRegistry,
    VersionTaken,
)
from featurestream.udfs.scoring.variants import LATEST, parse_experiment
from testing.model_fixtures import FEATURES, NAME, metadata, publish, train_text


def test_sidecar_round_trips() -> None:
    original = metadata(3)
    assert ModelMetadata.from_json(original.to_json()) == original


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "bad name"}, "name"),
    ({"version": 0}, "version"),
    ({"version": "3"}, "version"),
    ({"features": []}, "features"),
    ({"features": ["a", "a"]}, "once"),
    ({"features": "amount"}, "list"),
    ({"defaults": {"nope": 1.0}}, "does not use"),
    ({"defaults": {"amount": "x"}}, "finite"),
    ({"metrics": {"auc_holdout": float("nan")}}, "finite"),
])
def test_sidecar_validation_names_the_problem(change: dict, message: str) -> None:
    record = json.loads(metadata(1).to_json()) | change
    with pytest.raises(ValueError, match=message):
        ModelMetadata.from_json(json.dumps(record))


@pytest.mark.parametrize("missing", ["features", "defaults", "created_at", "metrics"])
def test_sidecar_requires_every_field(missing: str) -> None:
    record = json.loads(metadata(1).to_json())
    del record[missing]
    with pytest.raises(ValueError, match=missing):
        ModelMetadata.from_json(json.dumps(record))


def test_publish_versions_and_load(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models", NAME)
    assert registry.versions() == [] and registry.next_version() == 1
    publish(registry.directory, 1)
    publish(registry.directory, 2, seed=1)
    assert registry.versions() == [1, 2] and registry.next_version() == 3
    assert not [p for p in registry.directory.iterdir() if p.name.startswith(".")]
    model = registry.load(2)
    assert model.metadata == registry.metadata(2)
    assert model.predict(np.zeros((3, len(FEATURES)))).shape == (3,)
    with pytest.raises(ValueError, match="never overwritten"):
        registry.publish(train_text(), metadata(2))


def test_of_concurrent_publishers_of_one_version_one_wins_whole(tmp_path: Path) -> None:
    """Eight publishers of v1 at once (two ``train`` runs that both saw v1 free): one publishes
    it, model file and sidecar both its own; the others get VersionTaken, nothing of theirs
    is left, and each takes the next version in turn."""
    registry = ModelRegistry(tmp_path, NAME, "off")
    texts = [train_text(seed=seed) for seed in range(8)]
    start, outcomes = threading.Barrier(len(texts)), {}

    def publish_v1(seed: int) -> None:
        start.wait()
        try:
            registry.publish(texts[seed], metadata(1, seed=seed))
            outcomes[seed] = "published"
        except VersionTaken:
            outcomes[seed] = "taken"

    threads = [threading.Thread(target=publish_v1, args=(seed,)) for seed in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [winner] = [seed for seed, outcome in outcomes.items() if outcome == "published"]
    assert registry.versions() == [1] and len(outcomes) == len(texts)
    assert registry.model_path(1).read_text() == texts[winner]
    assert registry.metadata(1) == metadata(1, seed=winner)
    assert oct(registry.model_path(1).stat().st_mode & 0o777) == "0o644"
    for seed in sorted(set(outcomes) - {winner}):  # as `train` retries
        registry.publish(texts[seed], metadata(registry.next_version(), seed=seed))
    assert registry.versions() == list(range(1, len(texts) + 1))


def test_a_version_claimed_without_a_sidecar_is_skipped_not_overwritten(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, NAME, "off")
    publish(tmp_path, 1)
    registry.model_path(2).write_text("half a model: its publish died")
    assert registry.versions() == [1] and registry.next_version() == 3
    with pytest.raises(VersionTaken, match="stopped half-way"):
        registry.publish(train_text(), metadata(2))
    assert registry.model_path(2).read_text() == "half a model: its publish died"


def test_load_refuses_inconsistent_or_missing_versions(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, NAME)
    with pytest.raises(ModelError, match="not in the registry"):
        registry.load(1)
    registry.publish(train_text(("a", "b")), metadata(1, ("a", "b"), {}))
    registry.sidecar_path(1).write_text(metadata(1, ("b", "a"), {}).to_json())
    with pytest.raises(ModelError, match="differ"):
        registry.load(1)
    registry.model_path(1).write_text("garbage")
    with pytest.raises(ModelError, match="not a LightGBM model"):
        registry.load(1)
    registry.sidecar_path(2).write_text(metadata(3).to_json())
    with pytest.raises(ModelError, match="describes"):
        registry.load(2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def touch_later(directory: Path) -> None:
    """Make sure the directory's mtime moves even on coarse file systems."""
    stat = directory.stat()
    os.utime(directory, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_latest_version_is_picked_up_after_the_poll_interval(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    clock = FakeClock()
    models = ServingModels(registry, (), None, poll_interval_ms=5_000, clock=clock)
    models.refresh()
    variant, version, model, experiment = models.route("u-1")
    assert (variant, version, isinstance(model, LoadedModel)) == (LATEST, 1, True)
    assert experiment is None, "no experiment record: the split comes from the settings"
    publish(tmp_path, 2, seed=1)
    touch_later(tmp_path)
    clock.now = 4.9
    models.refresh()
    assert models.route("u-1").version == 1, "no look before the poll interval"
    clock.now = 5.0
    models.refresh()
    assert models.route("u-1").version == 2
    assert models.reloads == 2


def test_missing_versions_are_errors_until_they_appear(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    clock = FakeClock()
    models = ServingModels(registry, parse_experiment("v1:50,v2:50"), 3, 1_000, clock)
    models.refresh()
    routed = {models.route(f"u-{i}").version: models.route(f"u-{i}").model for i in range(50)}
    assert isinstance(routed[1], LoadedModel)
    assert isinstance(routed[2], ModelError) and "v2 is not in the registry" in str(routed[2])
    assert models.shadow is not None
    assert models.shadow.version == 3 and isinstance(models.shadow.model, ModelError)
    on_v1 = next(f"u-{i}" for i in range(50) if models.route(f"u-{i}").version == 1)
    kept = models.route(on_v1).model
    publish(tmp_path, 2, seed=1)
    publish(tmp_path, 3, seed=2)
    touch_later(tmp_path)
    clock.now = 1.0
    models.refresh()
    assert all(isinstance(models.route(f"u-{i}").model, LoadedModel) for i in range(50))
    assert models.shadow is not None and isinstance(models.shadow.model, LoadedModel)
    assert models.route(on_v1).model is kept, "a loaded version is never loaded again"


def test_no_model_at_all_routes_to_an_error(tmp_path: Path) -> None:
    models = ServingModels(ModelRegistry(tmp_path / "none", NAME), (), None, 1_000)
    models.refresh()
    variant, version, model, experiment = models.route("u-1")
    assert (variant, version, experiment) == (LATEST, None, None)
    assert models.shadow is None, "no shadow configured"
    assert isinstance(model, ModelError) and "no purchase_risk model" in str(model)


def test_a_version_that_cannot_be_read_is_an_error_and_routing_stays_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = publish(tmp_path, 1)
    publish(tmp_path, 2, seed=1)
    assert os.stat(registry.sidecar_path(2)).st_mode & 0o777 == 0o644, "readable by the jobs"
    original = registry.load

    def load(version: int) -> LoadedModel:
        if version == 2:
            raise PermissionError(13, "Permission denied", str(registry.sidecar_path(2)))
        return original(version)

    monkeypatch.setattr(registry, "load", load)
    models = ServingModels(registry, parse_experiment("v1:50,v2:50"), None, 1_000, FakeClock())
    models.refresh()
    routed = {models.route(f"u-{i}").version: models.route(f"u-{i}").model for i in range(50)}
    assert isinstance(routed[1], LoadedModel)
    assert isinstance(routed[2], ModelError) and "PermissionError" in str(routed[2])


def test_a_version_published_within_the_polls_clock_tick_is_still_picked_up(
        tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    clock = FakeClock()
    models = ServingModels(registry, (), None, poll_interval_ms=1_000, clock=clock)
    models.refresh()
    before = tmp_path.stat()
    publish(tmp_path, 2, seed=1)
    os.utime(tmp_path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same tick
    clock.now = 1.0
    models.refresh()
    assert models.route("u-1").version == 2
