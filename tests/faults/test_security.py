"""Security basics on real servers (issue 13): Redis with a password and an ACL user confined to
the key prefix (the jobs' writers, the CLI and the reader run as that user; it cannot touch a
key outside the prefix; a wrong password is a clear error naming the setting); the feature job
and the reader as that user on the real stack with every secret set, none of which shows in
Flink's REST answers, the stack's logs or ``featurestream status``; and hostile ids that never
reach a key outside the reader's prefix."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from pydantic import SecretStr
from redis.client import Monitor

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.private import isolated
from featurestream.flink_rest import FlinkRest
from featurestream.jobs.redis_target import RedisLoginError, RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.jobs.score_store import ScoreStore
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.store.redis_layout import (
    UPSERT_ROWS_LUA,
    RowValue,
    upsert_rows_args,
)
from testing.chaos import ChaosRow
from testing.reader_fixtures import (
    FEATURESTREAM,
    REPO,
    RedisProcess,
    ServeProcess,
    feature_row,
    free_port,
    http,
    reader_in_thread,
    seed_rows,
    start_serve,
    wait_until,
    write_item_definitions,
)
from tests.integration.conftest import cancel_job, job_diagnostics, job_exceptions
from tests.integration.test_feature_job import (
    assert_rows_equal_oracle,
    encoded,
    good_events,
    produce,
    wait_until_stable,
)

USER = "featurestream"
PASSWORD = "acl-pw-5f0c2e9d41b7a3"
ADMIN_PASSWORD = "admin-pw-93be71c0d2"
TOKEN = "reader-token-0b8e4f27a9c1d6"
SASL_PASSWORD = "sasl-pw-c47d19e2f05a"
NOW_MS = 1_700_000_000_000


def acl_rules(prefix: str, password: str) -> list[str]:
    """The ACL of the user the jobs, the CLI and the reader log in as (docs/security.md):
    keys under the prefix only; reads, writes and the upsert scripts (EVALSHA, SCRIPT
    LOAD/EXISTS, as redis-py runs them); PING, CLIENT ID and CLIENT TRACKING and the
    invalidation channel for the reader's cache; nothing @dangerous (KEYS, FLUSHALL, INFO,
    CONFIG, ...)."""
    return ["reset", "on", f">{password}", f"~{prefix}*", "&__redis__:invalidate",
            "+@read", "+@write", "-@dangerous", "+evalsha", "+script|load", "+script|exists",
            "+ping", "+client|id", "+client|tracking", "+subscribe"]


def user_url(port: int, password: str = PASSWORD) -> str:
    return f"redis://{USER}:{quote(password)}@127.0.0.1:{port}/0"


def no_secret_in(texts: dict[str, str], secrets: list[str]) -> None:
    """Fail naming where a secret value shows, with the line it is in (the value masked)."""
    leaks = []
    for where, text in texts.items():
        for i, secret in enumerate(secrets):
            if secret in text:
                line = next(line for line in text.splitlines() if secret in line)
                leaks.append(f"{where}: {line.replace(secret, f'<secret #{i}>')[:1000]}")
    assert not leaks, "secret values found in:\n" + "\n".join(leaks)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``featurestream ARGS`` with only these ``FEATURESTREAM_*`` variables."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTREAM_")}
    return subprocess.run([str(FEATURESTREAM), *args], cwd=REPO, env={**full, **env},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture()
def acl_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server with ``requirepass`` (the default user's password) and the ACL user on
    the prefix ``fs:``; ``.url`` is the administrator's."""
    port = free_port()
    process = RedisProcess(tmp_path, ("--requirepass", ADMIN_PASSWORD), port,
                           f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{port}/0")
    process.start()
    try:
        process.client().execute_command("ACL", "SETUSER", USER, *acl_rules("fs:", PASSWORD))
        yield process
    finally:
        process.stop()


@pytest.mark.redis
def test_acl_user_runs_the_writers_cli_and_reader_and_nothing_outside_its_prefix(
        acl_redis: RedisProcess, tmp_path: Path, chaos: Callable[[ChaosRow], None]) -> None:
    documented = "ACL SETUSER featurestream " + " ".join(acl_rules("fs:", "PASSWORD"))
    assert documented in (REPO / "docs" / "security.md").read_text(), "docs/security.md's ACL"
    url = user_url(acl_redis.port)
    admin = acl_redis.client()
    admin.hset("other:user:u1", mapping={"events_1m": 99})

    # The jobs' writers, as the feature and scoring jobs use them.
    writer = RedisRowWriter(RedisTarget(url, "fs:", 3600, 10))
    writer.publish_layout({"version": 1})
    for user_id in ("u1", "u2"):
        written: dict[str, RowValue] = {**feature_row(NOW_MS, events_1m=3)}
        writer.add(f"user:{user_id}", written)
    writer.close()
    store = ScoreStore(RedisTarget(url, "fs:", 3600, 10))
    store.write_latest([{"event_id": "e1", "user_id": "u1", "event_type": "purchase",
                         "ts": NOW_MS, "model": "fraud", "version": 1, "variant": "live",
                         "score": 0.25, "features": {}, "features_missing": False,
                         "scored_at": NOW_MS, "as_of": NOW_MS, "shadow": None}])
    store.close()
    assert admin.exists("fs:user:u1", "fs:user:u2", "fs:score:u1") == 3

    # Outside the prefix, whatever the command: NOPERM.
    user = redis.Redis.from_url(url)
    upsert = user.register_script(UPSERT_ROWS_LUA)
    refused: list[Callable[[], object]] = [
        lambda: user.hgetall("other:user:u1"), lambda: user.set("other:x", 1),
        lambda: user.delete("other:user:u1"),
        lambda: upsert(keys=["other:user:u9"],
                       args=upsert_rows_args([feature_row(NOW_MS)], NOW_MS, 60)),
        lambda: user.keys("*"), lambda: user.flushall(), lambda: user.config_get("*"),
        lambda: user.info(), lambda: user.execute_command("SCRIPT", "FLUSH")]
    for command in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            command()
    assert user.hgetall("fs:user:u1")[b"events_1m"] == b"3"
    user.close()

    env = {"FEATURESTREAM_REDIS_URL": url, "FEATURESTREAM_REDIS_KEY_PREFIX": "fs:",
           "FEATURESTREAM_HOME": str(tmp_path / "home")}
    shown = cli(env, "features", "u1", "u2")
    assert shown.returncode == 0 and '"events_1m": 3' in shown.stdout.replace("'", '"'), (
        shown.stdout + shown.stderr)
    listed = cli(env, "features")  # no ids: a SCAN of the prefix
    assert listed.returncode == 0 and "u2" in listed.stdout, listed.stdout + listed.stderr

    reader = start_serve({**env, "FEATURESTREAM_AUTH_TOKEN": TOKEN}, tmp_path / "serve.log")
    try:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert http("GET", reader.url + "/readyz").status == 200
        row = http("GET", reader.url + "/v1/features/u1", headers=bearer)
        assert row.status == 200 and row.body["features"]["events_1m"] == 3, row.body
        assert http("GET", reader.url + "/v1/scores/u1", headers=bearer).status == 200
        # The cache's CLIENT TRACKING and SUBSCRIBE pass the ACL too.
        wait_until(lambda: "client-side caching on" in reader.log(), 10,
                   "the reader's cache to be invalidated by Redis:\n" + reader.log())
    finally:
        reader.stop()
    chaos(ChaosRow("redis ACL user: writers, CLI, reader", 0, 3, 0, 0, 0, None,
                   f"jobs' writers, CLI and reader as user {USER} on ~fs:*; "
                   f"{len(refused)} commands outside it NOPERM"))


@pytest.mark.redis
def test_a_wrong_password_is_an_error_naming_the_setting(
        acl_redis: RedisProcess, tmp_path: Path, chaos: Callable[[ChaosRow], None]) -> None:
    wrong = "wrong-pw-e3a90c17"
    url = user_url(acl_redis.port, wrong)
    env = {"FEATURESTREAM_REDIS_URL": url, "FEATURESTREAM_HOME": str(tmp_path / "home")}

    with pytest.raises(RedisLoginError) as refused:  # what the jobs' open() raises
        RedisRowWriter(RedisTarget(url, "fs:", 3600, 10))
    job_error = str(refused.value)

    shown = cli(env, "features", "u1")
    assert shown.returncode != 0

    reader: ServeProcess = start_serve(env, tmp_path / "serve.log")
    try:
        ready = http("GET", reader.url + "/readyz")
        assert ready.status == 503
    finally:
        reader.stop()
    messages = {"job": job_error, "cli": shown.stdout + shown.stderr, "reader log": reader.log(),
                "readyz": str(ready.body)}
    for where, text in messages.items():
        assert "FEATURESTREAM_REDIS_URL" in text, f"{where} does not name the setting:\n{text}"
        assert "WRONGPASS" in text or "invalid username-password" in text, f"{where}:\n{text}"
    no_secret_in(messages, [wrong, PASSWORD, ADMIN_PASSWORD])
    chaos(ChaosRow("redis wrong password", 0, 0, 0, 0, 0, None,
                   "job writer, CLI, reader (log, /readyz): WRONGPASS naming "
                   "FEATURESTREAM_REDIS_URL, no password shown"))


OUTSIDE_MARKER = 987_654_321  # a feature value stored only under keys outside the prefix
HOSTILE_IDS = [
    "*", "u1*", "u?", "[u]1", "u1:*", "../other:user:u1", "..%2fother", "{u1}", "u1\n",
    "u1\r\nFLUSHALL", "other:user:u1", "fs-other:user:u1", "user:u1", "u1\x00", "u1 ", "",
    "u" * 5000, "%ff%fe", "%c0%ae%c0%ae", "\udcff", "ü", "u1%00x", "u1/../../x",
]


@pytest.mark.redis
def test_hostile_ids_never_read_outside_the_prefix(
        tmp_path: Path, chaos: Callable[[ChaosRow], None]) -> None:
    process = RedisProcess(tmp_path)
    process.start()
    try:
        client = process.client()
        seed_rows(client, "fs:", {"u1": feature_row(NOW_MS)}, NOW_MS)
        outside = {"u1": feature_row(NOW_MS, events_1m=OUTSIDE_MARKER)}
        for prefix in ("other:", "fs-other:", "", "f", "fs"):  # other tenants, a shorter prefix
            seed_rows(client, prefix, outside, NOW_MS)
            seed_rows(client, prefix, outside, NOW_MS, entity="item")
        client.set("other:user:*", str(OUTSIDE_MARKER))
        settings = Settings().replace(redis_url=process.url, redis_key_prefix="fs:",
                                      definitions=str(write_item_definitions(tmp_path)),
                                      models_dir=str(tmp_path / "models"))
        requests = 0
        with monitored(process) as commands, reader_in_thread(settings) as url:
            assert http("GET", url + "/v1/features/u1").status == 200  # the reader reads
            for raw in HOSTILE_IDS:
                path_id = quote(raw.encode("utf-8", "surrogateescape"), safe="%")
                replies = [
                    http("GET", f"{url}/v1/features/{path_id}"),
                    http("GET", f"{url}/v1/scores/{path_id}"),
                    http("GET", f"{url}/v1/features/item/{path_id}"),
                    http("GET", f"{url}/v1/features/{path_id}/u1"),
                    http("GET", f"{url}/v1/models/{path_id}/drift"),
                    http("POST", f"{url}/v1/features/batch", _json({"user_ids": [raw]})),
                    http("POST", f"{url}/v1/features/item/batch", _json({"ids": [raw]})),
                    http("POST", f"{url}/v1/predict", _json({"user_id": raw})),
                    http("POST", f"{url}/v1/predict/batch",
                         _json({"requests": [{"user_id": raw, "item_id": raw}]})),
                ]
                for reply in replies:
                    requests += 1
                    # a valid id (``:`` is allowed) reads fs:<entity>:<id>: not found
                    assert reply.status < 500 or reply.status == 503, (raw, reply)
                    assert str(OUTSIDE_MARKER) not in str(reply.body), (raw, reply)
        # What Redis itself saw: every key the reader named is under the prefix.
        keyed = [c for c in commands if c.split(" ", 1)[0].upper() not in KEYLESS]
        assert keyed and all(c.split(" ", 1)[1].startswith("fs:") for c in keyed), [
            c for c in keyed if not c.split(" ", 1)[1].startswith("fs:")][:5]
    finally:
        process.stop()
    chaos(ChaosRow("reader hostile ids", requests, requests, 0, 0, 0, None,
                   f"{len(HOSTILE_IDS)} ids on every id route: no 500, none read a key "
                   "outside fs:"))


KEYLESS = {"PING", "AUTH", "SELECT", "CLIENT", "SUBSCRIBE", "ECHO"}


@contextmanager
def monitored(process: RedisProcess) -> Iterator[list[str]]:
    """Every command the server runs meanwhile (MONITOR: ``NAME arg ...``), others' included."""
    commands: list[str] = []
    stop = f"monitor-stop-{free_port()}"

    def listen(monitor: Monitor) -> None:
        for command in monitor.listen():
            if command["command"] == f"ECHO {stop}":
                return
            commands.append(command["command"])

    with process.client().monitor() as monitor:
        thread = threading.Thread(target=listen, args=(monitor,), daemon=True)
        thread.start()
        try:
            yield commands
        finally:
            process.client().echo(stop)
            thread.join(10)


def _json(body: dict) -> bytes:
    """A JSON body that keeps lone surrogates and control characters as escapes."""
    return json.dumps(body, ensure_ascii=True).encode()


@pytest.mark.flink
def test_feature_job_and_reader_as_the_acl_user_show_no_secret(
        stack: LocalStack, chaos: Callable[[ChaosRow], None]) -> None:
    admin = redis.Redis.from_url(stack.settings.redis_url)
    port = int(stack.settings.redis_url.rsplit(":", 1)[1].split("/")[0])
    sasl = f"sasl.mechanism=PLAIN,sasl.username=featurestream,sasl.password={SASL_PASSWORD}"
    settings = isolated(stack, "security")
    admin.execute_command("ACL", "SETUSER", USER, *acl_rules(settings.redis_key_prefix, PASSWORD))
    settings = settings.replace(redis_url=user_url(port), auth_token=SecretStr(TOKEN),
                                kafka_properties=SecretStr(sasl))
    job_id = submit_job(settings, "features")
    try:
        events, by_user = good_events(seed=31, count=400)
        produce(settings, encoded(EventEncoder(registry_for(settings.schema_registry)), events))
        rows = wait_until_stable(settings, sorted(by_user), lambda: True,
                                 lambda: job_diagnostics(settings, job_id), timeout_s=120)
        assert_rows_equal_oracle(rows, by_user)
        assert job_exceptions(settings, job_id) == [], "the job failed as the ACL user"
        user_id = sorted(by_user)[0]
        with reader_in_thread(settings) as url:
            reply = http("GET", f"{url}/v1/features/{user_id}",
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert reply.status == 200, reply.body
        assert reply.body["features"]["events_24h"] == rows[user_id]["events_24h"]
        with pytest.raises(redis.exceptions.NoPermissionError):
            redis.Redis.from_url(settings.redis_url).get("features:layout")

        rest = FlinkRest(settings.flink_rest_url)
        texts = {path: str(rest.call(path)) for path in (
            f"/jobs/{job_id}/config", "/jobmanager/config", f"/jobs/{job_id}",
            f"/jobs/{job_id}/exceptions", f"/jobs/{job_id}/plan", "/taskmanagers")}
        for tm in rest.call("/taskmanagers")["taskmanagers"]:
            texts[f"taskmanager {tm['id']} config"] = str(rest.call(
                f"/taskmanagers/{tm['id']}"))
        texts.update({str(p): p.read_text(errors="replace")
                      for p in stack.paths.log_dir.rglob("*") if p.is_file()})
        status = cli(settings.to_env(), "status")
        texts["featurestream status"] = status.stdout + status.stderr
        assert "job" in status.stdout, texts["featurestream status"]
        no_secret_in(texts, [PASSWORD, TOKEN, SASL_PASSWORD])
    finally:
        cancel_job(settings, job_id)
        admin.execute_command("ACL", "DELUSER", USER)
    chaos(ChaosRow("ACL user + secrets on the stack", len(events), len(rows), 0, 0, 0, None,
                   f"feature job and reader as {USER}; no secret in {len(texts)} Flink REST "
                   "answers, logs and status"))

