"""Settings: env parsing, defaults, and start-up errors that name the variable and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from featurestream.udfs.durations import parse_duration_ms

from featurestream.settings import Settings, SettingsError


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.window_ms == (60_000, 300_000, 3_600_000, 86_400_000)
    assert settings.effective_allowed_lateness_ms == 86_400_000
    assert settings.effective_checkpoint_dir.startswith("file://")


def test_env_vars_override_with_types() -> None:
    settings = Settings.from_env({
        "FEATURESTREAM_HOME": "/tmp/fs-home",
        "FEATURESTREAM_WINDOWS": "5m, 1h",
        "FEATURESTREAM_ALLOWED_LATENESS_MS": "10m",
        "FEATURESTREAM_PARALLELISM": "2",
        "UNRELATED": "x",
    })
    assert settings.home == Path("/tmp/fs-home")
    assert settings.windows == ("5m", "1h")
    assert settings.effective_allowed_lateness_ms == 600_000
    assert settings.parallelism == 2


@pytest.mark.parametrize(("variable", "value", "hint"), [
    ("FEATURESTREAM_WINDOWS", "1m,90s", "whole minutes"),
    ("FEATURESTREAM_WINDOWS", "1m,1m", "once"),
    ("FEATURESTREAM_PARALLELISM", "zero", "whole number"),
    ("FEATURESTREAM_PARALLELISM", "0", "positive"),
    ("FEATURESTREAM_ALLOWED_LATENESS_MS", "48h", "largest window"),
    ("FEATURESTREAM_REDIS_URL", "localhost:6379", "redis://"),
    ("FEATURESTREAM_KAFKA_BOOTSTRAP", "localhost", "host:port"),
    ("FEATURESTREAM_CHECKPOINT_DIR", "/tmp/ckpt", "file://"),
    ("FEATURESTREAM_FLINK_REST_URL", "127.0.0.1:8081", "http://"),
    ("FEATURESTREAM_STATE_SHARDS", "0", "positive"),
    ("FEATURESTREAM_STATE_SHARDS", "200", "FEATURESTREAM_MAX_PARALLELISM (128)"),
    ("FEATURESTREAM_SOURCE_BATCH_LINGER_MS", "0", "positive"),
    ("FEATURESTREAM_SCORING_CHECKPOINT_INTERVAL_MS", "0", "positive"),
])
def test_bad_values_fail_with_the_variable_and_the_fix(variable, value, hint) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({variable: value})
    assert variable in str(error.value) and hint in str(error.value)


@pytest.mark.parametrize(("text", "ms"), [
    ("250ms", 250), ("10s", 10_000), ("5m", 300_000), ("24h", 86_400_000), ("2d", 172_800_000),
    ("1500", 1500),
])
def test_durations(text, ms) -> None:
    assert parse_duration_ms(text) == ms


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms("soon")


def test_to_env_round_trips() -> None:
    settings = Settings().replace(home=Path("/tmp/x"), windows=("5m", "1h"),
                                  kafka_bootstrap="127.0.0.1:1234", parallelism=2)
    assert Settings.from_env(settings.to_env()) == settings


def test_shards_must_cover_the_parallelism() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"FEATURESTREAM_PARALLELISM": "8", "FEATURESTREAM_STATE_SHARDS": "4"})
    assert "FEATURESTREAM_STATE_SHARDS='4'" in str(error.value)
    assert "FEATURESTREAM_PARALLELISM (8)" in str(error.value)
