"""Schema registries: the file-backed manifest and the Confluent client (against a local stub)."""

from __future__ import annotations

import base64
import json
import pickle
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from featurestream.schemas import load_schema
from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.confluent_registry import ConfluentSchemaRegistry
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import (
    FileSchemaRegistry,
    RegistryConfig,
    SchemaNotRegistered,
    SchemaRegistryError,
    UnknownSchemaId,
    registry_for,
    schema_json,
)
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem

EVENT = Event("e-1", "u-1", "view", "i-1", None, 1_700_000_000_000, None)
FAST_RETRIES = {"retries": 2, "retry_wait_ms": 1}


class StubRegistry(BaseHTTPRequestHandler):
    """Just enough of the Confluent Schema Registry API; ids start at 100.

    ``requests`` records ``METHOD /path`` (query strings left out); ``headers`` each request's
    headers; the first ``failures`` requests are answered 503.
    """

    schemas: dict[int, str]
    requests: list[str]
    headers_seen: list[dict[str, str]]
    failures: list[int]  # one counter, shared by the handler instances

    def do_GET(self) -> None:
        if self._failed("GET"):
            return
        match = re.fullmatch(r"/schemas/ids/(\d+)", urlsplit(self.path).path)
        if match and int(match[1]) in self.schemas:
            self._answer(200, {"schema": self.schemas[int(match[1])]})
        else:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self._failed("POST"):
            return
        text = body["schema"]
        ids = {v: k for k, v in self.schemas.items()}
        schema_id = ids.get(text, 100 + len(self.schemas))
        self.schemas[schema_id] = text
        self._answer(200, {"id": schema_id})

    def _failed(self, method: str) -> bool:
        self.requests.append(f"{method} {urlsplit(self.path).path}")
        self.headers_seen.append(dict(self.headers))
        if self.failures[0] > 0:
            self.failures[0] -= 1
            self._answer(503, {"error_code": 50301, "message": "try again"})
            return True
        return False

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


Stub = tuple[str, type[StubRegistry]]  # base URL, handler class (its schemas and requests)


@contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[Stub]:
    """A stub registry on a free port (HTTPS with ``tls``) until the block ends."""
    handler = type("Handler", (StubRegistry,), {"schemas": {}, "requests": [],
                                                "headers_seen": [], "failures": [0]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    yield f"{scheme}://127.0.0.1:{server.server_address[1]}/", handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    with serve() as running:
        yield running


def confluent(url: str, **options: object) -> ConfluentSchemaRegistry:
    return ConfluentSchemaRegistry(RegistryConfig(url, **options))  # type: ignore[arg-type]


def test_confluent_round_trip_registers_once_and_caches_by_id(stub: Stub) -> None:
    url, handler = stub
    producer_side = EventEncoder(confluent(url), subject="events-value")
    raw = producer_side.avro(EVENT)
    producer_side.avro(EVENT)
    assert raw[:5] == b"\x00\x00\x00\x00\x64"
    decoder = EventDecoder(confluent(url))
    assert decoder.decode(raw) == EVENT
    assert decoder.decode(raw) == EVENT
    assert handler.requests == ["POST /subjects/events-value/versions", "GET /schemas/ids/100"]


def test_registered_schema_keeps_docs_and_defaults(stub: Stub) -> None:
    url, handler = stub
    confluent(url).id_for("events-value", load_schema("user_event"))
    registered = json.loads(handler.schemas[100])
    assert "__fastavro_parsed" not in registered
    fields = {f["name"]: f for f in registered["fields"]}
    assert fields["item_id"]["default"] is None
    assert fields["ts"]["doc"] == "event time, epoch ms"


def test_confluent_unknown_id_becomes_a_decode_error(stub: Stub) -> None:
    url, _ = stub
    with pytest.raises(UnknownSchemaId):
        confluent(url).schema_by_id(5)
    result = EventDecoder(confluent(url)).decode(b"\x00\x00\x00\x00\x05\x00")
    assert isinstance(result, Problem)
    assert result.error_class == ErrorClass.UNKNOWN_SCHEMA_ID
    assert "5" in result.message


def test_unreachable_registry_raises_instead_of_dead_lettering() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    registry = confluent(f"http://127.0.0.1:{port}", timeout_ms=2_000, **FAST_RETRIES)
    with pytest.raises(SchemaRegistryError, match=f"127.0.0.1:{port}"):
        EventDecoder(registry).decode(b"\x00\x00\x00\x00\x01\x00")


def test_basic_auth_reaches_the_registry(stub: Stub) -> None:
    url, handler = stub
    confluent(url, user_info=SecretStr("reader:s3cret:pw")).id_for(
        "events-value", load_schema("user_event"))
    expected = base64.b64encode(b"reader:s3cret:pw").decode()
    assert handler.headers_seen[0]["Authorization"] == f"Basic {expected}"


def test_bearer_token_reaches_the_registry(stub: Stub) -> None:
    url, handler = stub
    confluent(url, bearer_token=SecretStr("t0ken"), logical_cluster="lsrc-1").id_for(
        "events-value", load_schema("user_event"))
    assert handler.headers_seen[0]["Authorization"] == "Bearer t0ken"
    assert handler.headers_seen[0]["target-sr-cluster"] == "lsrc-1"


def test_5xx_is_retried_then_reported_with_its_status(stub: Stub) -> None:
    url, handler = stub
    handler.schemas[100] = schema_json(load_schema("user_event"))
    handler.failures[0] = 2
    assert confluent(url, **FAST_RETRIES).schema_by_id(100)["name"] == "io.featurestream.UserEvent"
    assert handler.requests == ["GET /schemas/ids/100"] * 3
    handler.failures[0] = 3
    with pytest.raises(SchemaRegistryError, match="answered 503") as raised:
        confluent(url, **FAST_RETRIES).schema_by_id(100)
    assert raised.value.status == 503


def test_tls_files_reach_the_client(tmp_path: Path) -> None:
    """A registry that requires a client certificate, under a private CA: reachable with the
    CA, the certificate and its key; with the CA alone, the handshake fails."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.load_verify_locations(cert)
    tls.verify_mode = ssl.CERT_REQUIRED
    with serve(tls) as (url, handler):
        mutual = confluent(url, ca_location=str(cert), cert_location=str(cert),
                           key_location=str(key))
        assert mutual.id_for("events-value", load_schema("user_event")) == 100
        with pytest.raises(SchemaRegistryError, match="cannot use the schema registry"):
            confluent(url, ca_location=str(cert), retries=0).schema_by_id(100)
        assert handler.requests == ["POST /subjects/events-value/versions"]
    with pytest.raises(SchemaRegistryError, match="cannot set up"):
        confluent("https://127.0.0.1:1", ca_location=str(tmp_path / "missing.pem"))


def test_registry_config_is_plain_and_masks_its_secrets() -> None:
    config = RegistryConfig("https://registry:8081", user_info=SecretStr("reader:s3cret"),
                            ca_location="/etc/ca.pem", timeout_ms=2_500, retries=5)
    assert pickle.loads(pickle.dumps(config)) == config
    assert "s3cret" not in repr(config)
    assert config.client_config() == {
        "url": "https://registry:8081", "timeout": 2.5, "max.retries": 5,
        "retries.wait.ms": 1_000, "basic.auth.user.info": "reader:s3cret",
        "ssl.ca.location": "/etc/ca.pem"}


def test_file_registry_falls_back_to_global_ids_like_confluent() -> None:
    registry = FileSchemaRegistry()
    assert registry.id_for("events-value", load_schema("user_event")) == 1
    assert registry.id_for("test-topic-value", load_schema("user_event")) == 1
    with pytest.raises(UnknownSchemaId, match="unknown schema id 2"):
        registry.schema_by_id(2)


def test_file_registry_rejects_unlisted_schemas_and_ambiguous_ids(tmp_path: Path) -> None:
    other = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    (tmp_path / "other.avsc").write_text(json.dumps(other), encoding="utf-8")
    manifest = tmp_path / "registry.json"
    manifest.write_text(json.dumps({"s": [{"id": 3, "file": "other.avsc"}]}), encoding="utf-8")
    with pytest.raises(SchemaNotRegistered, match="UserEvent"):
        FileSchemaRegistry(manifest).id_for("s", load_schema("user_event"))
    manifest.write_text(json.dumps({"s": [{"id": 3, "file": "other.avsc"}],
                                    "t": [{"id": 3, "file": "x.avsc"}]}), encoding="utf-8")
    with pytest.raises(ValueError, match="schema id 3"):
        FileSchemaRegistry(manifest)


def test_registry_for_picks_by_url() -> None:
    assert isinstance(registry_for(RegistryConfig("")), FileSchemaRegistry)
    assert isinstance(registry_for(RegistryConfig("http://registry:8081")),
                      ConfluentSchemaRegistry)
