"""Schema registries: the file-backed manifest and the Confluent REST client (against a stub)."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from featurestream.schemas import load_schema
from featurestream.udfs.contract.codec import DecodeError, ErrorClass, EventDecoder, EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import (
    ConfluentSchemaRegistry,
    FileSchemaRegistry,
    SchemaNotRegistered,
    SchemaRegistryError,
    UnknownSchemaId,
    registry_for,
)

EVENT = Event("e-1", "u-1", "view", "i-1", None, 1_700_000_000_000, None)


class StubRegistry(BaseHTTPRequestHandler):
    """Just enough of the Confluent Schema Registry API; ids start at 100."""

    schemas: dict[int, str]
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(f"GET {self.path}")
        match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
        if match and int(match[1]) in self.schemas:
            self._answer(200, {"schema": self.schemas[int(match[1])]})
        else:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})

    def do_POST(self) -> None:
        self.requests.append(f"POST {self.path}")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["schema"]
        ids = {v: k for k, v in self.schemas.items()}
        schema_id = ids.get(text, 100 + len(self.schemas))
        self.schemas[schema_id] = text
        self._answer(200, {"id": schema_id})

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


@pytest.fixture
def stub() -> Iterator[Stub]:
    handler = type("Handler", (StubRegistry,), {"schemas": {}, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    server.shutdown()
    server.server_close()


def test_confluent_round_trip_registers_once_and_caches_by_id(stub: Stub) -> None:
    url, handler = stub
    producer_side = EventEncoder(ConfluentSchemaRegistry(url), subject="events-value")
    raw = producer_side.avro(EVENT)
    producer_side.avro(EVENT)
    assert raw[:5] == b"\x00\x00\x00\x00\x64"
    decoder = EventDecoder(ConfluentSchemaRegistry(url))
    assert decoder.decode(raw) == EVENT
    assert decoder.decode(raw) == EVENT
    assert handler.requests == ["POST /subjects/events-value/versions", "GET /schemas/ids/100"]


def test_registered_schema_keeps_docs_and_defaults(stub: Stub) -> None:
    url, handler = stub
    ConfluentSchemaRegistry(url).id_for("events-value", load_schema("user_event"))
    registered = json.loads(handler.schemas[100])
    assert "__fastavro_parsed" not in registered
    fields = {f["name"]: f for f in registered["fields"]}
    assert fields["item_id"]["default"] is None
    assert fields["ts"]["doc"] == "event time, epoch ms"


def test_confluent_unknown_id_becomes_a_decode_error(stub: Stub) -> None:
    url, _ = stub
    with pytest.raises(UnknownSchemaId):
        ConfluentSchemaRegistry(url).schema_by_id(5)
    result = EventDecoder(ConfluentSchemaRegistry(url)).decode(b"\x00\x00\x00\x00\x05\x00")
    assert isinstance(result, DecodeError)
    assert result.error_class == ErrorClass.UNKNOWN_SCHEMA_ID
    assert "5" in result.message


def test_unreachable_registry_raises_instead_of_dead_lettering() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    registry = ConfluentSchemaRegistry(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(SchemaRegistryError, match=f"127.0.0.1:{port}"):
        EventDecoder(registry).decode(b"\x00\x00\x00\x00\x01\x00")


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
    assert isinstance(registry_for(""), FileSchemaRegistry)
    assert isinstance(registry_for("http://registry:8081"), ConfluentSchemaRegistry)
