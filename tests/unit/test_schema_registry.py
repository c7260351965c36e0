"""Schema registries: the file-backed manifest and the Confluent client (against a local stub)."""

from __future__ import annotations

import base64
import json
import pickle
import re
import socket
import ssl
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fastavro
import pytest
from pydantic import SecretStr

from featurestream.schemas import load_schema
from featurestream.settings import Settings, SettingsError
from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.confluent_registry import ConfluentSchemaRegistry
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.records import RecordDecoder, RecordEncoder
from featurestream.udfs.contract.schema_registry import (
    FileSchemaRegistry,
    RegistryConfig,
    SchemaNotRegistered,
    SchemaRegistryError,
    UnknownSchemaId,
    UnknownSubject,
    canonical_json,
    registry_for,
    schema_json,
)
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem

EVENT = Event("e-1", "u-1", "view", "i-1", None, 1_700_000_000_000, None)
FAST_RETRIES = {"retries": 2, "retry_wait_ms": 1}


class StubRegistry(BaseHTTPRequestHandler):
    """Just enough of the Confluent Schema Registry API; ids start at 100.

    ``subjects`` lists each subject's ids, oldest first. ``requests`` records ``METHOD /path``
    (query strings left out); ``headers`` each request's headers; the first ``failures``
    requests are answered 503.
    """

    schemas: dict[int, str]
    subjects: dict[str, list[int]]
    requests: list[str]
    headers_seen: list[dict[str, str]]
    failures: list[int]  # one counter, shared by the handler instances

    def do_GET(self) -> None:
        if self._failed("GET"):
            return
        path = urlsplit(self.path).path
        match = re.fullmatch(r"/schemas/ids/(\d+)", path)
        latest = re.fullmatch(r"/subjects/([^/]+)/versions/latest", path)
        if match and int(match[1]) in self.schemas:
            self._answer(200, {"schema": self.schemas[int(match[1])]})
        elif latest and latest[1] in self.subjects:
            versions = self.subjects[latest[1]]
            self._answer(200, {"subject": latest[1], "version": len(versions),
                               "id": versions[-1], "schema": self.schemas[versions[-1]]})
        elif latest:
            self._answer(404, {"error_code": 40401, "message": f"Subject '{latest[1]}' not found."})
        else:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self._failed("POST"):
            return
        text = body["schema"]
        # Equal schemas (as JSON, whatever the key order) share an id, as in Confluent's.
        ids = [k for k, v in self.schemas.items() if json.loads(v) == json.loads(text)]
        schema_id = ids[0] if ids else 100 + len(self.schemas)
        self.schemas.setdefault(schema_id, text)
        subject = re.fullmatch(r"/subjects/([^/]+)/versions", urlsplit(self.path).path)
        assert subject is not None
        versions = self.subjects.setdefault(subject[1], [])
        if schema_id not in versions:
            versions.append(schema_id)
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
    handler = type("Handler", (StubRegistry,), {"schemas": {}, "subjects": {}, "requests": [],
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


# -- The latest version of a subject (sources declared with registry_subject) -----------------

PAYMENT_FIELDS: list[dict[str, Any]] = [
    {"name": "merchant_id", "type": "string"},
    {"name": "amount", "type": ["null", "double"], "default": None},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}]
PAYMENT = {"type": "record", "name": "Payment", "namespace": "shop", "fields": PAYMENT_FIELDS}
PAYMENT_V2 = {**PAYMENT, "fields": [*PAYMENT_FIELDS,
                                    {"name": "channel", "type": "string", "default": "web"}]}
DEFINITIONS = textwrap.dedent("""
    from featurestream.definitions import *  # noqa: F403
    payments = Source("payments", topic="payments", registry_subject="payments-value")
    merchant = Entity("merchant", keys="merchant_id")
    activity = FeatureGroup("activity", merchant, payments, [Feature("n", "count", window="1h")])
""")


def test_file_registry_latest_is_the_subjects_last_version(tmp_path: Path) -> None:
    for name, schema in (("v1", PAYMENT), ("v2", PAYMENT_V2)):
        (tmp_path / f"{name}.avsc").write_text(json.dumps(schema), encoding="utf-8")
    manifest = tmp_path / "registry.json"
    manifest.write_text(json.dumps({"payments-value": [{"id": 3, "file": "v1.avsc"},
                                                       {"id": 4, "file": "v2.avsc"}]}))
    registry = FileSchemaRegistry(manifest)
    assert canonical_json(registry.latest("payments-value")) == canonical_json(
        parse_schema_dict(PAYMENT_V2))
    held = {**PAYMENT, "name": "Held"}
    registry.register("payments-value", held)
    assert registry.latest("payments-value")["name"] == "shop.Held"
    registry.register("clicks-value", held)  # a held schema makes a subject of its own
    assert registry.latest("clicks-value")["name"] == "shop.Held"
    with pytest.raises(UnknownSubject, match=r"no schema under subject 'nope-value': not in .*"
                                             r"registry\.json.*clicks-value, payments-value"):
        registry.latest("nope-value")


def test_canonical_json_is_the_same_for_equal_schemas() -> None:
    shuffled = json.loads(json.dumps(PAYMENT_V2))
    shuffled["fields"][1] = dict(reversed(list(shuffled["fields"][1].items())))
    text = canonical_json(parse_schema_dict(PAYMENT_V2))
    assert canonical_json(parse_schema_dict(shuffled)) == text
    assert " " not in text and "__fastavro" not in text
    assert '"default":"web"' in text  # defaults kept: a reader schema needs them


def test_confluent_latest_is_the_subjects_last_version_cached_by_id(stub: Stub) -> None:
    url, handler = stub
    registry = confluent(url)
    assert registry.id_for("payments-value", parse_schema_dict(PAYMENT)) == 100
    assert registry.id_for("payments-value", parse_schema_dict(PAYMENT_V2)) == 101
    latest = confluent(url)
    assert [f["name"] for f in latest.latest("payments-value")["fields"]] == [
        "merchant_id", "amount", "ts", "channel"]
    assert latest.schema_by_id(101)["name"] == "shop.Payment"  # no request: cached
    assert handler.requests[2:] == ["GET /subjects/payments-value/versions/latest"]
    with pytest.raises(UnknownSubject, match=f"subject 'nope-value': not in the registry at "
                                             f"{url.rstrip('/')}"):
        latest.latest("nope-value")


def test_a_registry_subject_source_end_to_end(stub: Stub, tmp_path: Path) -> None:
    """Settings load the definitions with the configured registry (the subject's latest
    schema); they pickle into the job, whose decoder asks the registry for writer ids only."""
    url, handler = stub
    confluent(url).id_for("payments-value", parse_schema_dict(PAYMENT))
    location = tmp_path / "defs.py"
    location.write_text(DEFINITIONS)
    settings = Settings.from_env({"FEATURESTREAM_DEFINITIONS": str(location),
                                  "FEATURESTREAM_SCHEMA_REGISTRY_URL": url})
    source, = settings.load_definitions().sources
    assert source.field_types == {"merchant_id": "string", "amount": "double?", "ts": "long"}
    job_side = pickle.loads(pickle.dumps(source))
    record = {"merchant_id": "m-1", "amount": 2.5, "ts": 1_700_000_000_000}
    raw = RecordEncoder(source, confluent(url)).avro(record)
    assert raw[:5] == b"\x00\x00\x00\x00\x64"  # the subject's own id: no new version
    handler.requests.clear()
    decoder = RecordDecoder(job_side, confluent(url))
    assert decoder.decode(raw) == record
    assert decoder.decode(RecordEncoder(source, confluent(url)).json(record)) == record
    assert handler.requests == ["GET /schemas/ids/100"]
    assert handler.subjects == {"payments-value": [100]}


def test_loading_names_a_missing_subject_and_an_unreachable_registry(stub: Stub,
                                                                     tmp_path: Path) -> None:
    url, _ = stub
    location = tmp_path / "defs.py"
    location.write_text(DEFINITIONS)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    where = "source 'payments', field 'registry_subject'"
    for registry_url, fragments in (
            (url, [f"{where}: no schema under subject 'payments-value': not in the registry",
                   "register the source's Avro schema under 'payments-value'"]),
            (closed, [f"{where}: cannot fetch the latest schema of subject 'payments-value'",
                      closed, "FEATURESTREAM_SCHEMA_REGISTRY_* settings", "fields=", "avro="])):
        settings = Settings.from_env({"FEATURESTREAM_DEFINITIONS": str(location),
                                      "FEATURESTREAM_SCHEMA_REGISTRY_URL": registry_url,
                                      "FEATURESTREAM_SCHEMA_REGISTRY_RETRIES": "0"})
        with pytest.raises(SettingsError) as raised:
            settings.load_definitions()
        message = str(raised.value)
        assert message.startswith(f"FEATURESTREAM_DEFINITIONS={str(location)!r}: ")
        assert "\n" not in message
        for fragment in fragments:
            assert fragment in message, message


def parse_schema_dict(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema as the registries return it (fastavro-parsed)."""
    parsed = fastavro.parse_schema(schema)
    assert isinstance(parsed, dict)
    return parsed
