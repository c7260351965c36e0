"""Compiled predictors: equal to Booster.predict, compiled once per version and cached beside it,
and never the reason scoring fails (corrupt or wrong artefacts, no lleaves, the off switch)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from featurestream.settings import Settings, SettingsError
from featurestream.udfs.scoring import compiled
from featurestream.udfs.scoring.model_registry import LoadedModel, ModelRegistry
from testing.model_fixtures import FEATURES, NAME, metadata, publish, train_text

COUNTS = ("events_5m", "purchases_1h", "spend_24h")  # many zeros: splits at 1e-35
ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold


def _rich_text(zero_as_missing: bool) -> str:
    """A model with the splits compiled trees most easily get wrong: around zero (counts; a
    signed feature, half zeros: -1e-35 too), with missing values (NaN in training), and
    zero-as-missing when asked."""
    rng = np.random.default_rng(3)
    rows = 2_000
    counts = rng.poisson(0.7, size=(rows, len(COUNTS))).astype(float)
    amount = rng.lognormal(3, 1, size=rows)
    amount[rng.random(rows) < 0.2] = np.nan
    signed = rng.normal(size=rows) * (rng.random(rows) < 0.5)
    x = np.column_stack([amount, signed, counts])
    y = ((np.nan_to_num(amount) > 30) ^ (counts[:, 0] == 0) ^ (signed < 0)).astype(float)
    params = {"objective": "binary", "num_leaves": 8, "min_data_in_leaf": 5, "verbose": -1,
              "deterministic": True, "num_threads": 1, "zero_as_missing": zero_as_missing}
    names = ["amount", "signed", *COUNTS]
    return lgb.train(params, lgb.Dataset(x, y, feature_name=names), 40).model_to_string()


@dataclass(frozen=True)
class Published:
    model: LoadedModel
    text: str  # the model file
    thresholds: list[float]


@pytest.fixture(scope="module", params=[False, True], ids=["nan-missing", "zero-as-missing"])
def rich(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Published:
    text = _rich_text(request.param)
    registry = ModelRegistry(tmp_path_factory.mktemp("models"), NAME)
    features = ("amount", "signed", *COUNTS)
    registry.publish(text, metadata(1, features, {}, with_distribution=False))
    model = registry.load(1)
    assert model.predictor is not None and model.predictor.backend == "lleaves"
    thresholds = sorted({float(v) for line in text.splitlines() if line.startswith("threshold=")
                         for v in line.split("=", 1)[1].split()})
    return Published(model, text, thresholds)


def _values(thresholds: list[float]) -> st.SearchStrategy[float]:
    at = st.sampled_from(thresholds)
    return st.one_of(
        at, at.map(lambda t: float(np.nextafter(t, np.inf))),
        at.map(lambda t: float(np.nextafter(t, -np.inf))),
        st.sampled_from([np.nan, 0.0, -0.0, ZERO, -ZERO, 1e-36, -1e-36, np.inf, -np.inf]),
        st.floats(allow_nan=True, allow_infinity=True, width=64))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), rows=st.integers(1, 20), fortran=st.booleans())
def test_compiled_equals_booster_predict(rich: Published, data: st.DataObject, rows: int,
                                         fortran: bool) -> None:
    matrix = data.draw(arrays(np.float64, (rows, 5), elements=_values(rich.thresholds)))
    if fortran:  # a strided matrix must not reach lleaves as one
        matrix = np.asfortranarray(matrix)
    expected = np.asarray(rich.model.booster.predict(matrix, num_threads=1))
    assert np.max(np.abs(rich.model.predict(matrix) - expected)) <= compiled.TOLERANCE


def test_lleaves_alone_differs_where_lightgbm_zeroes_tiny_values(rich: Published) -> None:
    """Why the predictor zeroes |x| <= 1e-35 first: LightGBM reads -1e-35 as 0, which is
    right of a split at -1e-35; lleaves alone goes left (the property test would then fail)."""
    assert isinstance(rich.model.predictor, compiled.LleavesPredictor)
    assert -ZERO in rich.thresholds
    probes = compiled.probe_vectors(rich.text, 5, rows=1_000)
    probes[:, 1] = -ZERO
    raw = rich.model.predictor.model.predict(probes, n_jobs=1)
    expected = rich.model.booster.predict(probes, num_threads=1)
    assert np.max(np.abs(raw - expected)) > compiled.TOLERANCE
    assert np.max(np.abs(rich.model.predict(probes) - expected)) <= compiled.TOLERANCE


def test_lleaves_is_handed_a_c_contiguous_float64_matrix() -> None:
    """lleaves ravels any other layout into a temporary and reads through a pointer into it
    after the temporary is gone: whether that reads garbage is luck, so no score test shows it."""
    handed: list[np.ndarray] = []

    class Recorder:
        def predict(self, data: np.ndarray, n_jobs: int) -> np.ndarray:
            handed.append(data)
            return np.zeros(len(data))

    for matrix in (np.asfortranarray(np.ones((4, 3))), np.ones((8, 3))[::2],
                   np.ones((4, 3), dtype=np.float32)):
        compiled.LleavesPredictor(Recorder()).predict(matrix)
    assert all(m.flags.c_contiguous and m.dtype == np.float64 for m in handed)


def test_compiled_at_publish_and_reused_by_later_loads(tmp_path: Path) -> None:
    registry = publish(tmp_path, 1)
    model_path = registry.model_path(1)
    [artefact] = compiled.artefacts(model_path)
    before = (sorted(p.name for p in tmp_path.iterdir()), artefact.stat().st_mtime_ns,
              artefact.stat().st_ino, tmp_path.stat().st_mtime_ns)
    for loader in (registry, ModelRegistry(tmp_path, NAME)):  # this process, or "another"
        model = loader.load(1)
        assert isinstance(model.predictor, compiled.LleavesPredictor)
    after = (sorted(p.name for p in tmp_path.iterdir()), artefact.stat().st_mtime_ns,
             artefact.stat().st_ino, tmp_path.stat().st_mtime_ns)
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_compiled_at_first_load_when_published_without(tmp_path: Path) -> None:
    ModelRegistry(tmp_path, NAME, "off").publish(train_text(), metadata(1))
    assert compiled.artefacts(tmp_path / f"{NAME}-v1.txt") == []
    model = ModelRegistry(tmp_path, NAME).load(1)
    assert isinstance(model.predictor, compiled.LleavesPredictor)
    assert len(compiled.artefacts(tmp_path / f"{NAME}-v1.txt")) == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "flipped"])
def test_a_corrupt_artefact_is_rebuilt_with_a_log_line(tmp_path: Path, damage: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """LLVM aborts the process on a malformed object file: the checksum keeps it from one."""
    registry = publish(tmp_path, 1)
    [artefact] = compiled.artefacts(registry.model_path(1))
    good = artefact.read_bytes()
    artefact.write_bytes({"garbage": bytes(range(256)) * 20, "truncated": good[:len(good) // 2],
                          "empty": b"",
                          "flipped": good[:200] + bytes(200) + good[400:]}[damage])
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        model = registry.load(1)
    assert isinstance(model.predictor, compiled.LleavesPredictor)
    assert [r.message for r in caplog.records if "corrupt" in r.message]
    [rebuilt] = compiled.artefacts(registry.model_path(1))
    assert rebuilt.read_bytes() == good  # the same model compiles to the same code
    vectors = np.random.default_rng(1).normal(size=(50, len(FEATURES))) * 10
    assert np.array_equal(model.predict(vectors), model.booster.predict(vectors))


def test_an_artefact_of_another_model_is_caught_and_booster_scores(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Intact bytes, wrong trees (e.g. a registry directory copied over another): the probe
    check against Booster.predict catches them; scoring goes on, on the booster."""
    registry = publish(tmp_path, 1)
    publish(tmp_path, 2, seed=1)
    [mine] = compiled.artefacts(registry.model_path(1))
    [theirs] = compiled.artefacts(registry.model_path(2))
    mine.write_bytes(theirs.read_bytes())
    mine.rename(mine.with_name(mine.name.replace(mine.stem.rsplit(".", 1)[-1],
                                                 theirs.stem.rsplit(".", 1)[-1])))
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        model = registry.load(1)
        again = registry.load(1)
    assert isinstance(model.predictor, compiled.BoosterPredictor)
    assert isinstance(again.predictor, compiled.BoosterPredictor)
    [line] = [r.message for r in caplog.records if r.name == compiled.__name__]  # once
    assert "differs from Booster.predict" in line


def test_without_lleaves_the_booster_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "lleaves", None)  # import lleaves -> ImportError
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        model = publish(tmp_path, 1).load(1)
    assert isinstance(model.predictor, compiled.BoosterPredictor)
    assert any("not installed" in r.message for r in caplog.records)
    assert model.predict(np.zeros((2, len(FEATURES)))).shape == (2,)


def test_off_switch_scores_with_the_booster_and_compiles_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, NAME, "off")
    registry.publish(train_text(), metadata(1))
    model = registry.load(1)
    assert isinstance(model.predictor, compiled.BoosterPredictor)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".txt"]


def test_the_setting_is_checked_and_names_the_choices() -> None:
    assert Settings.from_env({}).compiled_predictor == "auto"
    assert Settings.from_env({"FEATURESTREAM_COMPILED_PREDICTOR": "off"}
                             ).compiled_predictor == "off"
    with pytest.raises(SettingsError, match=r"COMPILED_PREDICTOR.*auto, off, lleaves"):
        Settings.from_env({"FEATURESTREAM_COMPILED_PREDICTOR": "onnx"})
    with pytest.raises(ValueError, match="auto, off, lleaves"):
        ModelRegistry(Path("."), NAME, "treelite")
