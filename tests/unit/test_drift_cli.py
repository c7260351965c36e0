"""``featurestream drift``: its tables, its options' errors, and a run against fake Redis
buckets filled by the scoring job's counter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from featurestream.cli import drift as drift_cli
from featurestream.cli import main
from featurestream.serving.drift import FeatureDrift, ModelDrift, ScoreBins, VersionDrift
from featurestream.udfs.telemetry.drift import DriftCounts, bucket_start, drift_key
from testing import model_fixtures

NO_SCORES = ScoreBins([0.5], [0.0, 0.0], [0.5, 0.5])


def version(number: int, samples: int, live: bool = True, message: str | None = None,
            psi: float | None = 0.01) -> VersionDrift:
    features = [FeatureDrift("amount", 0.4123, 0.0, 0.031),
                FeatureDrift("purchases_5m", psi, 0.1, 0.0)]
    if not samples:
        features = [FeatureDrift(f.feature, None, None, None) for f in features]
    return VersionDrift(number, live, samples, 0.05 if samples else None, features,
                        NO_SCORES, message)


def test_the_tables_flag_drift_and_say_why_a_version_has_none() -> None:
    drift = ModelDrift("purchase_risk", 300_000, 0, [
        version(2, 0, message="no training distribution recorded for version 2; retrain with "
                "featurestream train"),
        version(3, 1_234),
        version(4, 0, message="no scored samples in the last 5m yet"),
        version(5, 17, live=False, psi=None)])
    assert drift_cli.render(drift) == """\
purchase_risk: drift against training over the last 5m (PSI > 0.2: drift)

v2 (live): no training distribution recorded for version 2; retrain with featurestream train

v3 (live): 1,234 samples, score PSI 0.050
  feature           PSI  null rate  out of range
  amount          0.412       0.0%          3.1%  <- drift
  purchases_5m    0.010      10.0%          0.0%

v4 (live): no scored samples in the last 5m yet

v5: 17 samples, score PSI 0.050
  feature           PSI  null rate  out of range
  amount          0.412       0.0%          3.1%  <- drift
  purchases_5m        -      10.0%          0.0%
"""


def test_a_model_without_versions_to_show_says_so() -> None:
    text = drift_cli.render(ModelDrift("m", 90_000, 0, []))
    assert text.splitlines() == ["m: drift against training over the last 90s (PSI > 0.2: drift)",
                                 "no live version and no samples in the window"]


class FakePipeline:
    def __init__(self, hashes: dict[str, dict[bytes, bytes]]) -> None:
        self.hashes = hashes
        self.keys: list[str] = []

    def hgetall(self, key: str) -> None:
        self.keys.append(key)

    def execute(self) -> list[dict[bytes, bytes]]:
        return [self.hashes.get(key, {}) for key in self.keys]


class FakeClient:
    def __init__(self, hashes: dict[str, dict[bytes, bytes]]) -> None:
        self.hashes = hashes

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        assert not transaction
        return FakePipeline(self.hashes)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[bytes, bytes]]:
    """A registry with v1 (live), and Redis buckets the test fills."""
    model_fixtures.publish(tmp_path, 1)
    monkeypatch.setenv("FEATURESTREAM_MODELS_DIR", str(tmp_path))
    hashes: dict[str, dict[bytes, bytes]] = {}

    @contextmanager
    def client(settings: object) -> Iterator[FakeClient]:
        yield FakeClient(hashes)

    monkeypatch.setattr(drift_cli, "redis_client", client)
    return hashes


def test_drift_reads_the_windows_buckets_and_prints_them(
        env: dict[str, dict[bytes, bytes]], capsys: pytest.CaptureFixture[str]) -> None:
    vectors = np.random.default_rng(0).normal(size=(400, len(model_fixtures.FEATURES))) * 10
    vectors[:, 0] *= 3  # amount drifted
    counts = DriftCounts(model_fixtures.FEATURES, model_fixtures.training_distribution())
    counts.add(vectors, np.full(400, 0.5))
    key = drift_key("fs:", model_fixtures.NAME, 1, bucket_start(int(time.time() * 1000), 10_000))
    env[key] = {name.encode(): str(value).encode() for name, value in counts.take().items()}
    assert main(["drift", "--window", "1m"]) == 0
    out = capsys.readouterr().out
    assert "over the last 1m" in out
    assert "v1 (live): 400 samples" in out
    [amount] = [line for line in out.splitlines() if line.startswith("  amount")]
    assert amount.endswith("<- drift")


@pytest.mark.parametrize(("options", "message"), [
    (["--model", "nope"], "no model 'nope' in the registry"),
    (["--model", "../x"], "choose another with --model"),
    (["--window", "5s"], "--window 5s: use from 10s (one drift bucket) up to 1000 buckets"),
    (["--window", "soon"], "--window soon: use a duration such as 90s or 5m"),
])
def test_bad_options_are_one_line_naming_the_fix(
        env: dict[str, dict[bytes, bytes]], capsys: pytest.CaptureFixture[str],
        options: list[str], message: str) -> None:
    assert main(["drift", *options]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1
