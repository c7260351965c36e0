"""What the reader's tests need: a private redis-server (stop, restart, freeze), rows of any
entity and scores seeded in the jobs' layout (``udfs.store.redis_layout``), definitions with an
item entity beside the built-in users, the reader in a thread or as the real
``featurestream serve`` process, and a tiny JSON HTTP client."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import redis
import uvicorn

from featurestream.devstack.endpoints import Endpoint
from featurestream.devstack.paths import StackPaths
from featurestream.devstack.private import free_ports
from featurestream.devstack.redis_server import RedisServer
from featurestream.serving.app import create_app
from featurestream.settings import Settings
from featurestream.udfs.definitions.defaults import default_definitions
from featurestream.udfs.store.redis_layout import (
    UPSERT_ROWS_LUA,
    UPSERT_SCORE_LUA,
    FeatureValue,
    RowValue,
    Score,
    entity_key,
    score_key,
    upsert_rows_args,
    upsert_score_args,
)

FEATURE_NAMES = tuple(f.name for f in default_definitions(Settings().windows, "events")
                      .features_of("user"))
REPO = Path(__file__).resolve().parents[1]
# The installed console script beside this interpreter: the real ``featurestream serve``.
FEATURESTREAM = Path(sys.executable).with_name("featurestream")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def wait_until(check: Any, timeout: float, what: str) -> None:
    """Poll ``check()`` until true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class RedisProcess:
    """A private redis-server on a free port, files in ``workdir``: the local stack's
    :class:`RedisServer` (no persistence); stop, start and freeze it at will."""

    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = (), port: int = 0,
                 url: str = "") -> None:
        self.port = port or free_port()
        self.server = RedisServer(StackPaths(workdir), Endpoint(self.port, "RedisProcess(port)"),
                                  extra_args, url)
        self.url = self.server.url

    def start(self) -> None:
        """Start and wait until it answers PING."""
        self.server.start(echo=_quiet)

    def stop(self) -> None:
        """Terminate, frozen or not (everything in it is lost: there is no persistence)."""
        self.thaw()
        self.server.stop(echo=_quiet)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a hung or very slow Redis)."""
        pid = self.server.pid()
        assert pid is not None, "redis-server is not running"
        os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT (if it runs)."""
        pid = self.server.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A redis-py client, as the jobs use."""
        return self.server.client(timeout_s=5)


def _quiet(line: str) -> None:
    """Swallows the server's lifecycle lines."""


def feature_row(as_of: int, version: int = 1, **values: FeatureValue) -> dict[str, FeatureValue]:
    """A row shaped like the feature job's: every feature (counts default to 1), as_of, version."""
    row: dict[str, FeatureValue] = {"as_of": as_of, "version": version}
    for name in FEATURE_NAMES:
        row[name] = 1.5 if name.startswith(("spend_", "avg_spend_")) else 1
    row["ctr_1h"] = None
    row["last_event_ts"] = as_of
    row.update(values)
    return row


def seed_rows(client: redis.Redis, prefix: str, rows: Mapping[str, Mapping[str, RowValue]],
              updated_at: int, ttl_seconds: int = 3600, entity: str = "user",
              cluster: bool = False) -> None:
    """Write rows (id -> row) exactly as the feature job does: the upsert script, one
    pipeline (``cluster``: hash-tagged keys, ``client`` a RedisCluster, one call per row: its
    pipelines refuse scripts)."""
    upsert = client.register_script(UPSERT_ROWS_LUA)
    pipe = client if cluster else client.pipeline(transaction=False)
    for entity_id, row in rows.items():
        upsert(keys=[entity_key(prefix, entity, entity_id, cluster=cluster)],
               args=upsert_rows_args([row], updated_at, ttl_seconds), client=pipe)
    if not cluster:
        pipe.execute()


ITEM_FEATURES = ("views_1h", "last_buyer", "recent_buyers", "buyers_24h")
ITEM_DEFINITIONS = f'''"""Test definitions: the built-in user features, and items."""
from featurestream.definitions import Feature, FeatureGroup, eq
from featurestream.udfs.definitions.defaults import ITEM, USER, events_source, user_features

events = events_source("events")
user_activity = FeatureGroup("user_activity", USER, events, user_features({Settings().windows!r}))
item_popularity = FeatureGroup("item_popularity", ITEM, events, [
    Feature("views_1h", "count", window="1h", where=eq("event_type", "view")),
    Feature("last_buyer", "last", field="user_id", window="24h",
            where=eq("event_type", "purchase")),
    Feature("recent_buyers", "last_n", field="user_id", n=3, window="24h"),
    Feature("buyers_24h", "distinct", field="user_id", window="24h"),
])
'''


def write_item_definitions(directory: Path) -> Path:
    """A definitions file declaring the built-in users and an ``item`` entity
    (:data:`ITEM_FEATURES`), for ``FEATURESTREAM_DEFINITIONS``."""
    path = directory / "item_definitions.py"
    path.write_text(ITEM_DEFINITIONS, encoding="utf-8")
    return path


def seed_score(client: redis.Redis, prefix: str, user_id: str, score: Score,
               ttl_seconds: int = 3600, cluster: bool = False) -> int:
    """Write a score as the scoring job does; 1 if stored, 0 if an older one was ignored
    (``cluster``: the hash-tagged key, ``client`` a RedisCluster)."""
    upsert = client.register_script(UPSERT_SCORE_LUA)
    return int(upsert(keys=[score_key(prefix, user_id, cluster=cluster)],
                      args=upsert_score_args(score, ttl_seconds)))


@dataclass
class Reply:
    """An HTTP response: status, headers, JSON body (or text), and how long it took."""

    status: int
    headers: Mapping[str, str]
    body: Any
    seconds: float


def http(method: str, url: str, body: bytes | dict | None = None,
         headers: Mapping[str, str] | None = None, timeout: float = 10) -> Reply:
    """One request; JSON bodies are decoded, anything else is returned as text."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, got, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        status, got, raw = err.code, err.headers, err.read()
    seconds = time.monotonic() - start
    text = raw.decode()
    is_json = got.get("content-type", "").startswith("application/json")
    return Reply(status, dict(got), json.loads(text) if is_json else text, seconds)


def declared_oversized_post(url: str, path: str) -> tuple[int, Any]:
    """POST ``path`` declaring a 10 MiB body and waiting for ``100 Continue`` before sending
    it: the reader's status and JSON body (a body limit must refuse before the upload)."""
    host, port = url.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=5)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Length", str(10 * 2**20))
        connection.putheader("Expect", "100-continue")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def scrape(url: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name{labels}`` in the reader's ``/metrics`` (None when
    absent)."""
    for line in http("GET", url + "/metrics").body.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name and dict(
                re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")) == labels:
            return float(match.group(3))
    return None


@contextmanager
def reader_in_thread(settings: Settings) -> Iterator[str]:
    """The reader app on uvicorn in a background thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), lifespan="on", log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "the reader to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class ServeProcess:
    """``featurestream serve`` as a child process, its stderr in a file."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        """Everything it logged so far."""
        return self.log_path.read_text()

    def stop(self) -> int:
        """SIGTERM, then its exit code (killed, and an error, if it does not stop in 20 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"featurestream serve ignored SIGTERM:\n{self.log()}") from None


def start_serve(env: Mapping[str, str], log_path: Path, wait: bool = True) -> ServeProcess:
    """Run ``featurestream serve`` with ``FEATURESTREAM_*`` from ``env``; wait for /healthz."""
    port = int(env.get("FEATURESTREAM_SERVE_PORT", 0)) or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTREAM_")}
    full_env.update(env)
    full_env["FEATURESTREAM_SERVE_PORT"] = str(port)
    process = subprocess.Popen(
        [str(FEATURESTREAM), "serve"], cwd=REPO, env=full_env,
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    served = ServeProcess(process, f"http://127.0.0.1:{port}", log_path)
    if wait:
        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"featurestream serve exited:\n{served.log()}")
            try:
                return http("GET", served.url + "/healthz", timeout=1).status == 200
            except OSError:
                return False
        wait_until(healthy, 30, "featurestream serve to answer /healthz")
    return served
