"""``featurestream models``: the rollout commands write the records the job reads, bad input is
exit code 2 with a message naming the fix, and ``compare``'s per-arm statistics."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from featurestream.cli import main
from featurestream.cli.models import arm_scores, compare_lines
from featurestream.udfs.scoring.experiments import read_history
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.variants import Arm
from testing.model_fixtures import NAME, publish


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    for name in ("FEATURESTREAM_EXPERIMENT", "FEATURESTREAM_SHADOW_MODEL",
                 "FEATURESTREAM_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FEATURESTREAM_HOME", str(tmp_path))
    monkeypatch.setenv("FEATURESTREAM_MODEL_NAME", NAME)
    for version in (1, 2, 3):
        publish(tmp_path / "models", version, seed=version)
    return ModelRegistry(tmp_path / "models", NAME)


def models(*args: str) -> int:
    return main(["models", *args])


def current(registry: ModelRegistry) -> tuple[tuple[Arm, ...], int | None] | None:
    record = read_history(registry).current
    return None if record is None else (record.arms, record.shadow)


def test_concurrent_commands_each_decide_from_the_others_record(
        registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    """`canary v2 10` and `shadow v1` at once, ten times: whichever writes second decides from
    the first's record, so the end has both the canary split and the shadow (deciding outside
    the lock, one command's change could be overwritten by the other's stale split)."""
    for _ in range(10):
        assert models("promote", "3") == 0 and models("shadow", "--off") == 0
        start = threading.Barrier(2)
        outcomes: list[int] = []

        def run(*args: str, start: threading.Barrier = start,
                outcomes: list[int] = outcomes) -> None:
            start.wait()
            outcomes.append(models(*args))

        threads = [threading.Thread(target=run, args=a)
                   for a in (("canary", "v2", "10"), ("shadow", "v1"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outcomes == [0, 0]
        assert current(registry) == ((Arm(3, 90), Arm(2, 10)), 1)
    capsys.readouterr()


def test_canary_promote_shadow_and_rollback_write_the_records(
        registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert models("canary", "v2", "10") == 0
    assert current(registry) == ((Arm(3, 90), Arm(2, 10)), None), "the latest is the base"
    assert models("shadow", "v1") == 0
    assert current(registry) == ((Arm(3, 90), Arm(2, 10)), 1)
    assert models("canary", "v2", "50") == 0
    assert current(registry) == ((Arm(3, 50), Arm(2, 50)), 1), "the shadow stays"
    assert models("promote", "2") == 0
    assert current(registry) == ((Arm(2, 100),), 1)
    assert models("shadow", "--off") == 0
    assert current(registry) == ((Arm(2, 100),), None)
    assert models("rollback") == 0
    assert current(registry) == ((Arm(2, 100),), 1)
    assert [r.id for r in read_history(registry).records] == ["exp-1", "exp-2", "exp-3", "exp-4"]
    capsys.readouterr()
    assert models("list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].endswith("live v2 100%, shadow v1 (exp-4)")
    assert [line.split()[0] + " " + line.split()[-1] for line in listed[2:]] == [
        "v1 shadow", "v2 100%", "v3 0.900"]
    assert models("show") == 0
    shown = capsys.readouterr().out
    assert "current   exp-4" in shown and "previous  exp-3" in shown


def test_the_settings_split_is_the_base_until_a_record_exists(
        registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURESTREAM_EXPERIMENT", "v1:80,v3:20")
    assert models("canary", "v2", "5") == 0
    assert current(registry) == ((Arm(1, 95), Arm(2, 5)), None), "the largest live share"
    assert models("rollback") == 0
    assert read_history(registry).current is None


@pytest.mark.parametrize(("args", "message"), [
    (("canary", "v2", "0"), "out of range: give 1 to 99"),
    (("canary", "v2", "100"), "promote VERSION"),
    (("canary", "v9", "10"), r"v9 is not in the registry .* \(published: v1, v2, v3\)"),
    (("canary", "v3", "10"), "only live version"),
    (("promote", "vx"), "not a model version"),
    (("promote", "v4"), "publish it with featurestream train"),
    (("shadow", "v3"), "is served"),
    (("shadow",), "VERSION to shadow or --off"),
    (("shadow", "v1", "--off"), "not both"),
    (("rollback",), "nothing to roll back"),
    (("compare", "--limit", "-1"), "give a count >= 0"),
    (("compare", "--labels", "/no/such/labels.csv"), "labels file"),
])
def test_bad_input_is_exit_2_with_the_fix(registry: ModelRegistry,
                                         capsys: pytest.CaptureFixture[str],
                                         args: tuple[str, ...], message: str) -> None:
    assert models(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("featurestream: error: ")
    assert re.search(message, err), err
    assert read_history(registry).current is None, "nothing written"


def test_an_unreadable_record_is_an_error_naming_the_file(
        registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    (registry.directory / f"{NAME}-experiments.json").write_text("{")
    assert models("promote", "v2") == 2
    assert "fix or remove the file" in capsys.readouterr().err


def score(event_id: str, variant: str, value: float, experiment: str | None = "exp-1",
          shadow: float | None = None) -> dict:
    return {"event_id": event_id, "variant": variant, "score": value, "experiment": experiment,
            "shadow": None if shadow is None else {"version": 3, "score": shadow}}


def test_compare_groups_by_arm_with_quantiles_and_auc() -> None:
    rng = np.random.default_rng(0)
    scores = [score(f"e{i}", "v1" if i % 4 else "v2", float(rng.random()), shadow=0.5)
              for i in range(400)]
    scores.append(score("old", "latest", 0.9, experiment=None))
    labels = {s["event_id"]: s["score"] > 0.7 for s in scores if s["variant"] == "v1"}
    arms = arm_scores(scores, labels, "exp-1")
    assert sorted(arms) == ["shadow v3", "v1", "v2"]
    assert (len(arms["v1"].scores), len(arms["v2"].scores)) == (300, 100)
    assert arms["v1"].auc() == 1.0, "the labels follow v1's scores exactly"
    assert arms["v2"].auc() is None, "no labelled v2 score"
    assert arms["shadow v3"].auc() == 0.5, "a constant shadow ranks nothing"
    assert sorted(arm_scores(scores, {}, "none")) == ["latest"]
    lines = compare_lines(arms)
    assert lines[0].split() == ["arm", "count", "mean", "p10", "p50", "p90", "p99", "auc",
                                "labelled"]
    v1 = next(line for line in lines if line.startswith("v1 ")).split()
    values = np.array(arms["v1"].scores)
    assert v1[1] == "300" and float(v1[4]) == pytest.approx(np.median(values), abs=1e-4)
    assert v1[-2:] == ["1.000", "300"]


def test_an_unwritable_registry_is_exit_2_naming_the_directory(
        registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("featurestream.cli.models.record", denied)
    assert models("promote", "v2") == 2
    err = capsys.readouterr().err
    assert str(registry.directory) in err and "Permission denied" in err
