"""Experiment records in the registry: round trip, history and rollback, validation, the live-
version rule, and the scoring job's pick-up of a new record at its poll."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream.udfs.scoring.experiments import (
    Experiment,
    ExperimentError,
    History,
    Split,
    history_path,
    live_rollout,
    read_history,
    record,
    resolve,
    roll_back,
)
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import LoadedModel, ModelRegistry
from featurestream.udfs.scoring.variants import LATEST, Arm, VariantAssigner, parse_experiment
from testing.model_fixtures import NAME, publish
from tests.unit.test_model_registry import FakeClock, touch_later


def test_a_record_round_trips_through_the_registry_file(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, NAME)
    assert read_history(registry) == History(), "no file: an empty history"
    written = record(registry, (Arm(1, 90), Arm(2, 10)), 3, "canary v2 10", "ana", 1_234)
    assert written == Experiment("exp-1", (Arm(1, 90), Arm(2, 10)), 3, "ana", 1_234,
                                 "canary v2 10")
    assert read_history(registry).current == written
    on_disk = json.loads(history_path(registry).read_text())
    assert on_disk["records"][0]["arms"] == [{"version": 1, "weight": 90},
                                             {"version": 2, "weight": 10}]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"], "no temp file left"
    assert registry.versions() == [], "the record is not taken for a version"


def test_who_defaults_to_the_os_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "operator7")
    registry = ModelRegistry(tmp_path, NAME)
    assert record(registry, (Arm(1, 1),), None, "promote v1").who == "operator7"

    def no_passwd_entry() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr("getpass.getuser", no_passwd_entry)
    assert record(registry, (Arm(1, 1),), None, "promote v1").who == f"uid {os.getuid()}"


def test_concurrent_commands_lose_no_record(tmp_path: Path) -> None:
    """Eight ``featurestream models`` commands at once: each read-modify-write holds the lock,
    so the history ends with all eight records (without it, writers overwrite each other)."""
    registry = ModelRegistry(tmp_path, NAME)
    start = threading.Barrier(8)

    def canary(n: int) -> None:
        start.wait()
        record(registry, (Arm(1, 100 - n), Arm(2, n)), None, f"canary v2 {n}", "ops", n)

    threads = [threading.Thread(target=canary, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = read_history(registry)
    assert sorted(r.note for r in history.records) == sorted(f"canary v2 {n}" for n in range(1, 9))
    assert len({r.id for r in history.records}) == 8


def test_rollback_restores_the_previous_record_then_the_settings(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, NAME)
    first = record(registry, (Arm(1, 1),), None, "promote v1", "a", 1)
    second = record(registry, (Arm(1, 50), Arm(2, 50)), None, "canary v2 50", "a", 2)
    assert (first.id, second.id) == ("exp-1", "exp-2")
    assert roll_back(registry) == first
    third = record(registry, (Arm(2, 1),), 1, "promote v2", "a", 3)
    assert third.id == "exp-3", "ids only increase, also after a rollback"
    assert roll_back(registry) == first
    assert roll_back(registry) is None, "the first record rolled back: the settings decide"
    with pytest.raises(ExperimentError, match="nothing to roll back"):
        roll_back(registry)


@pytest.mark.parametrize(("arms", "shadow", "message"), [
    ((), None, "at least one arm"),
    ((Arm(0, 1),), None, "not >= 1"),
    ((Arm(1, 0),), None, "positive integer"),
    ((Arm(1, 1), Arm(1, 2)), None, "one arm only"),
    ((Arm(1, 1),), 0, "shadow"),
    ((Arm(1, 1),), 1, "also served"),
])
def test_validation_names_the_problem(tmp_path: Path, arms: tuple[Arm, ...], shadow: int | None,
                                      message: str) -> None:
    registry = ModelRegistry(tmp_path, NAME)
    with pytest.raises(ExperimentError, match=message):
        record(registry, arms, shadow, "x", "a", 1)
    assert not history_path(registry).exists(), "an invalid record is never written"


@pytest.mark.parametrize("text", [
    "not json",
    '{"next_id": 2, "records": [{"id": "exp-1", "arms": [], "shadow": null, "who": "a", '
    '"when": 1}]}',
    '{"next_id": 1, "records": [{"id": "exp-1", "arms": [{"version": 1, "weight": 1}], '
    '"shadow": null, "who": "a", "when": 1}]}',
    '{"next_id": 2, "records": [], "extra": 1}',
])
def test_an_unreadable_history_names_the_file_and_the_fix(tmp_path: Path, text: str) -> None:
    registry = ModelRegistry(tmp_path, NAME)
    history_path(registry).write_text(text)
    with pytest.raises(ExperimentError, match=r"experiments\.json: .*fix or remove the file"):
        read_history(registry)


def test_an_unreadable_history_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, NAME)
    history_path(registry).mkdir()  # read_bytes: IsADirectoryError
    with pytest.raises(ExperimentError, match="fix or remove"):
        read_history(registry)
    assert live_rollout(registry, Split()).problem is not None


def test_the_record_takes_precedence_over_the_settings(tmp_path: Path) -> None:
    settings_arms = parse_experiment("v1:90,v2:10")
    assert resolve(None, Split(settings_arms, 3), [1, 2, 3]).shares == {1: 0.9, 2: 0.1}
    assert resolve(None, Split(), [1, 2, 5]).live == {5}
    assert resolve(None, Split(), []).shares == {}
    current = Experiment("exp-4", (Arm(2, 1),), None, "a", 1)
    rollout = resolve(current, Split(settings_arms, 3), [1, 2, 3])
    assert (rollout.shares, rollout.live, rollout.experiment) == ({2: 1.0}, {2}, "exp-4")
    registry = publish(tmp_path, 1)
    assert live_rollout(registry, Split()).live == {1}
    record(registry, (Arm(1, 1),), 2, "shadow v2", "a", 1)
    assert live_rollout(registry, Split()).live == {1, 2}


@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 100)), min_size=1, max_size=5,
                unique_by=lambda a: a[0]),
       st.none() | st.integers(10, 12), st.lists(st.integers(1, 20), unique=True))
def test_shares_and_live_match_a_brute_force_count(arms_: list[tuple[int, int]],
                                                   shadow: int | None,
                                                   published: list[int]) -> None:
    arms = tuple(Arm(v, w) for v, w in arms_)
    rollout = resolve(Experiment("exp-1", arms, shadow, "a", 1), Split(), sorted(published))
    total = sum(w for _, w in arms_)
    assert rollout.shares == pytest.approx({v: w / total for v, w in arms_})
    assert rollout.live == {v for v, _ in arms_} | ({shadow} if shadow else set())
    plain = resolve(None, Split(), sorted(published))
    assert plain.live == ({max(published)} if published else set())


def test_serving_models_pick_up_a_record_at_the_next_poll(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    publish(tmp_path, 2, seed=1)
    clock = FakeClock()
    models = ServingModels(registry, parse_experiment("v1:100"), None, 1_000, clock)
    models.refresh()
    users = [f"u-{i}" for i in range(200)]
    assert {models.route(u).version for u in users} == {1}
    assert models.experiment is None and models.route("u-1").experiment is None
    record(registry, (Arm(1, 50), Arm(2, 50)), None, "canary v2 50", "a", 1)
    touch_later(tmp_path)
    assert models.route("u-1").experiment is None, "nothing changes before the next refresh"
    clock.now = 1.0
    models.refresh()
    assigner = VariantAssigner((Arm(1, 50), Arm(2, 50)))
    for user in users:
        route = models.route(user)
        assert (route.variant, route.version, route.experiment) == (
            assigner.assign(user).label, assigner.assign(user).version, "exp-1")
        assert isinstance(route.model, LoadedModel)
    record(registry, (Arm(2, 1),), 1, "promote v2", "a", 2)
    touch_later(tmp_path)
    clock.now = 2.0
    models.refresh()
    assert {(r.variant, r.version, r.experiment) for r in map(models.route, users)} == {
        ("v2", 2, "exp-2")}
    assert models.shadow is not None and models.shadow.version == 1
    roll_back(registry)
    roll_back(registry)
    touch_later(tmp_path)
    clock.now = 3.0
    models.refresh()
    assert {models.route(u).version for u in users} == {1}, "back to the settings' split"
    assert models.experiment is None and models.shadow is None


def test_a_broken_record_keeps_the_split_in_place(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    clock = FakeClock()
    models = ServingModels(registry, (), None, 1_000, clock)
    record(registry, (Arm(1, 1),), None, "promote v1", "a", 1)
    models.refresh()
    assert models.route("u-1")[::3] == ("v1", "exp-1")
    history_path(registry).write_text("{")
    publish(tmp_path, 2, seed=1)
    touch_later(tmp_path)
    clock.now = 1.0
    models.refresh()
    assert models.route("u-1")[::3] == ("v1", "exp-1")
    assert models.rollout.problem is not None and "fix or remove" in models.rollout.problem
    assert models.rollout.latest == 2


def test_without_a_record_the_latest_is_served(tmp_path: Path) -> None:
    models = ServingModels(publish(tmp_path, 1), (), None, 1_000)
    models.refresh()
    assert models.route("u-1")[:2] == (LATEST, 1)


def test_a_record_written_within_the_directory_mtime_tick_is_still_seen(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    publish(tmp_path, 2, seed=1)
    clock = FakeClock()
    models = ServingModels(registry, (), None, 1_000, clock)
    record(registry, (Arm(1, 1),), None, "promote v1", "a", 1)
    models.refresh()
    stamp = tmp_path.stat()
    record(registry, (Arm(2, 1),), None, "promote v2", "a", 2)
    os.utime(tmp_path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the same coarse tick
    clock.now = 1.0
    models.refresh()
    assert models.route("u-1")[::3] == ("v2", "exp-2")
