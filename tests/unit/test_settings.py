"""Settings: env parsing, defaults, and start-up errors that name the variable and the fix."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from featurestream.devstack.commands import status
from featurestream.settings import Settings, SettingsError
from featurestream.udfs.durations import parse_duration_ms


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.window_ms == (60_000, 300_000, 3_600_000, 86_400_000)
    assert settings.effective_allowed_lateness_ms(settings.load_definitions()) == 86_400_000
    assert settings.max_future_skew_ms == 3_600_000
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
    assert settings.effective_allowed_lateness_ms(settings.load_definitions()) == 600_000
    assert settings.parallelism == 2


@pytest.mark.parametrize(("variable", "value", "hint"), [
    ("FEATURESTREAM_WINDOWS", "1m,90s", "whole minutes"),
    ("FEATURESTREAM_WINDOWS", "1m,1m", "once"),
    ("FEATURESTREAM_PARALLELISM", "zero", "whole number"),
    ("FEATURESTREAM_PARALLELISM", "0", "positive"),
    ("FEATURESTREAM_ALLOWED_LATENESS_MS", "48h", "largest window"),
    ("FEATURESTREAM_MAX_FUTURE_SKEW_MS", "0", "positive, e.g. 1h"),
    ("FEATURESTREAM_REDIS_URL", "localhost:6379", "redis://"),
    ("FEATURESTREAM_KAFKA_BOOTSTRAP", "localhost", "host:port"),
    ("FEATURESTREAM_CHECKPOINT_DIR", "/tmp/ckpt", "file://"),
    ("FEATURESTREAM_FLINK_REST_URL", "127.0.0.1:8081", "http://"),
    ("FEATURESTREAM_STATE_SHARDS", "0", "positive"),
    ("FEATURESTREAM_STATE_SHARDS", "200", "FEATURESTREAM_MAX_PARALLELISM (128)"),
    ("FEATURESTREAM_SOURCE_BATCH_LINGER_MS", "0", "positive"),
    ("FEATURESTREAM_SCORING_CHECKPOINT_INTERVAL_MS", "0", "positive"),
    ("FEATURESTREAM_SCHEMA_REGISTRY_URL", "registry:8081", "http(s)://"),
    ("FEATURESTREAM_SCHEMA_REGISTRY_TIMEOUT_MS", "0", "positive"),
    ("FEATURESTREAM_SCHEMA_REGISTRY_TIMEOUT_MS", "soon", "not a duration"),
    ("FEATURESTREAM_SCHEMA_REGISTRY_RETRIES", "-1", "zero or positive"),
    ("FEATURESTREAM_SCHEMA_REGISTRY_RETRIES", "3.5", "whole number"),
    ("FEATURESTREAM_DRIFT_BUCKET_MS", "500ms", "at least 1s"),
    ("FEATURESTREAM_DRIFT_WINDOW_MS", "5s", "from FEATURESTREAM_DRIFT_BUCKET_MS (10000)"),
    ("FEATURESTREAM_DRIFT_WINDOW_MS", "30d", "up to 1000 buckets"),
    ("FEATURESTREAM_DRIFT_WINDOW_MS", "soon", "not a duration"),
])
def test_bad_values_fail_with_the_variable_and_the_fix(variable: str, value: str,
                                                       hint: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({variable: value})
    assert variable in str(error.value) and hint in str(error.value)


@pytest.mark.parametrize(("text", "ms"), [
    ("250ms", 250), ("10s", 10_000), ("5m", 300_000), ("24h", 86_400_000), ("2d", 172_800_000),
    ("1500", 1500),
])
def test_durations(text: str, ms: int) -> None:
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


SECRETS = ("t0ken-0123456789abcdef", "redis-pw", "sasl-pw", "registry-pw", "bearer-t0ken")


def every_secret(home: Path) -> dict[str, str]:
    """Settings with every secret set; a local stack in ``home`` (none runs there)."""
    return {
        "FEATURESTREAM_HOME": str(home),
        "FEATURESTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
        "FEATURESTREAM_REDIS_URL": "redis://reader:redis-pw@127.0.0.1:16379/0",
        "FEATURESTREAM_FLINK_REST_URL": "http://127.0.0.1:18081",
        "FEATURESTREAM_AUTH_TOKEN": "t0ken-0123456789abcdef",
        "FEATURESTREAM_KAFKA_PROPERTIES": "security.protocol=SASL_SSL,sasl.mechanism=PLAIN,"
                                          "sasl.username=key,sasl.password=sasl-pw",
        "FEATURESTREAM_SCHEMA_REGISTRY_URL": "https://registry.example:8081",
        "FEATURESTREAM_SCHEMA_REGISTRY_USER_INFO": "reader:registry-pw",
    }


def test_secrets_never_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environ = every_secret(tmp_path)
    settings = Settings.from_env(environ)
    bearer = Settings.from_env({**environ, "FEATURESTREAM_SCHEMA_REGISTRY_USER_INFO": "",
                                "FEATURESTREAM_SCHEMA_REGISTRY_BEARER_TOKEN": "bearer-t0ken"})
    shown = [repr(settings), str(settings), repr(bearer), str(bearer),
             repr(settings.schema_registry), repr(bearer.schema_registry)]
    for variable, value in [("SERVE_PORT", "0"), ("REDIS_URL", "http://:redis-pw@host"),
                            ("AUTH_TOKEN", "t0ken short"), ("KAFKA_PROPERTIES", "sasl-pw"),
                            ("SCHEMA_REGISTRY_USER_INFO", "registry-pw"),
                            ("SCHEMA_REGISTRY_URL", "https://u:registry-pw@registry:8081")]:
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**environ, f"FEATURESTREAM_{variable}": value})
        assert f"FEATURESTREAM_{variable}" in str(raised.value)
        shown.append(str(raised.value))
    assert status(settings, argparse.Namespace()) == 0
    shown.append(capsys.readouterr().out)
    assert "redis   down  127.0.0.1:16379" in shown[-1]
    assert "redis://reader:***@127.0.0.1:16379/0" in repr(settings)
    for secret in SECRETS:
        assert not [text for text in shown if secret in text], secret


def test_secrets_travel_to_the_job_in_its_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(every_secret(tmp_path))
    assert settings.to_env()["FEATURESTREAM_AUTH_TOKEN"] == "t0ken-0123456789abcdef"
    assert Settings.from_env(settings.to_env()) == settings
    assert settings.schema_registry.user_info.get_secret_value() == "reader:registry-pw"


def test_registry_credentials_need_a_url_and_one_kind() -> None:
    url = {"FEATURESTREAM_SCHEMA_REGISTRY_URL": "https://registry:8081"}
    with pytest.raises(SettingsError, match="SCHEMA_REGISTRY_USER_INFO: set FEATURESTREAM_SCH"):
        Settings.from_env({"FEATURESTREAM_SCHEMA_REGISTRY_USER_INFO": "u:p"})
    with pytest.raises(SettingsError, match="BEARER_TOKEN: use basic auth"):
        Settings.from_env({**url, "FEATURESTREAM_SCHEMA_REGISTRY_USER_INFO": "u:p",
                           "FEATURESTREAM_SCHEMA_REGISTRY_BEARER_TOKEN": "t"})
    with pytest.raises(SettingsError, match=r"KEY_LOCATION='/k.pem': set .*CERT_LOCATION"):
        Settings.from_env({**url, "FEATURESTREAM_SCHEMA_REGISTRY_KEY_LOCATION": "/k.pem"})


def test_settings_ignore_the_process_environment_unless_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURESTREAM_PARALLELISM", "3")
    assert Settings().parallelism == 1
    assert Settings.from_env().parallelism == 3
