"""Secrets stay secret on their way to a job, and the reader's token compare is constant-time
(behaviour, not timing: :func:`hmac.compare_digest` alone decides)."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from featurestream.serving.app import create_app
from featurestream.settings import SECRETS_FILE, Settings, SettingsError
from featurestream.settings.handover import job_environment

pytestmark = pytest.mark.unit

TOKEN = "reader-token-5d1e0c8b7a6f"
SECRETS = {"redis": "redis-pw-0a9b8c", "sasl": "sasl-pw-7e6d5c", "token": TOKEN,
           "registry": "registry-pw-4f3e2d"}


def secret_settings() -> Settings:
    return Settings().replace(
        redis_url=f"redis://featurestream:{SECRETS['redis']}@redis.internal:6379/0",
        kafka_properties=SecretStr(f"sasl.mechanism=PLAIN,sasl.username=u,"
                                   f"sasl.password={SECRETS['sasl']}"),
        auth_token=SecretStr(TOKEN),
        schema_registry_url="https://registry.internal",
        schema_registry_user_info=SecretStr(f"u:{SECRETS['registry']}"))


def test_a_job_gets_its_secrets_from_a_private_file_not_its_environment() -> None:
    settings = secret_settings()
    base = {"PATH": "/usr/bin", "FEATURESTREAM_REDIS_URL": "redis://:stale-pw@old:6379/0"}
    with job_environment(settings, base) as env:
        shown = json.dumps(env)
        assert not [name for name, value in SECRETS.items() if value in shown]
        assert "stale-pw" not in shown and env["PATH"] == "/usr/bin"
        secrets_file = Path(env[SECRETS_FILE])
        assert secrets_file.parent.stat().st_mode & 0o077 == 0  # only this user can look in
        assert Settings.from_env(env) == settings  # what the job's main() reads
    assert not secrets_file.exists()


@pytest.mark.parametrize("content", [None, "not json", '["a list"]', '{"X": 1}'])
def test_an_unreadable_secrets_file_is_an_error_naming_it(tmp_path: Path,
                                                          content: str | None) -> None:
    path = tmp_path / "secrets.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError, match=SECRETS_FILE):
        Settings.from_env({SECRETS_FILE: str(path)})


def test_secret_env_holds_exactly_the_secret_values() -> None:
    secret = secret_settings().secret_env()
    assert set(secret) == {"FEATURESTREAM_REDIS_URL", "FEATURESTREAM_KAFKA_PROPERTIES",
                           "FEATURESTREAM_AUTH_TOKEN", "FEATURESTREAM_SCHEMA_REGISTRY_USER_INFO",
                           "FEATURESTREAM_SCHEMA_REGISTRY_BEARER_TOKEN"}
    assert Settings().replace(redis_url="redis://127.0.0.1:6379/0").secret_env().keys() == {
        "FEATURESTREAM_KAFKA_PROPERTIES", "FEATURESTREAM_AUTH_TOKEN",
        "FEATURESTREAM_SCHEMA_REGISTRY_USER_INFO", "FEATURESTREAM_SCHEMA_REGISTRY_BEARER_TOKEN"}


def status_of(authorization: str | None) -> int:
    """The status of ``GET /v1/features/u1`` on a reader with :data:`TOKEN` (no Redis: a
    request past the token check gets a 503, one refused by it a 401)."""
    app = create_app(Settings().replace(auth_token=SecretStr(TOKEN),
                                        redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=200))
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/v1/features/u1", "raw_path": b"/v1/features/u1",
             "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


@pytest.fixture()
def compare_digest(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[tuple]]:
    """Replace :func:`hmac.compare_digest` by ``answer`` (None: the real one), recording each
    call's arguments."""
    real = hmac.compare_digest

    def install(answer: bool | None) -> list[tuple]:
        calls: list[tuple] = []

        def spy(a: Any, b: Any) -> bool:
            calls.append((a, b))
            return real(a, b) if answer is None else answer
        monkeypatch.setattr(hmac, "compare_digest", spy)
        return calls
    return install


def test_the_token_is_compared_by_compare_digest_alone(
        compare_digest: Callable[[Any], list[tuple]]) -> None:
    right, expected = f"Bearer {TOKEN}", f"Bearer {TOKEN}".encode()
    wrong_first, wrong_last = "X" + right[1:], right[:-1] + "X"  # same length, early/late miss
    calls = compare_digest(None)
    assert status_of(right) == 503  # past the check (Redis is not there)
    for refused in (wrong_first, wrong_last, "Bearer", "", None):
        assert status_of(refused) == 401
    # Every request's header, whole, went to compare_digest with the expected value.
    assert calls == [(h.encode(), expected) for h in (right, wrong_first, wrong_last, "Bearer",
                                                      "", "")]
    compare_digest(False)
    assert status_of(right) == 401  # no other comparison lets the right token through
    compare_digest(True)
    assert status_of(wrong_first) == 503  # nor refuses a token compare_digest accepts
