"""Where Avro writer schemas come from: the file-backed manifest or a Confluent Schema Registry.

Both registries answer the same two questions: which schema has this id (consumers, for the
Confluent wire format's schema id) and which id has this schema under this subject (producers).
Schemas are fastavro-parsed dicts; treat them as read-only, they are cached.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import fastavro
from fastavro.schema import to_parsing_canonical_form
from featurestream.schemas import REGISTRY_MANIFEST, parse_schema_file

Schema = dict[str, Any]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class UnknownSchemaId(LookupError):
    """The registry has no (Avro) schema with this id."""

    def __init__(self, schema_id: int, detail: str) -> None:
        super().__init__(f"unknown schema id {schema_id}: {detail}")
        self.schema_id = schema_id


class SchemaNotRegistered(LookupError):
    """A producer's schema is not in the file-backed manifest."""


class SchemaRegistryError(RuntimeError):
    """The registry is unreachable or answered with an error (``status`` is the HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SchemaRegistry(Protocol):
    """What the codec needs from a schema registry."""

    def schema_by_id(self, schema_id: int) -> Schema:
        """The parsed schema with this id; :class:`UnknownSchemaId` if there is none."""
        ...

    def id_for(self, subject: str, schema: Schema) -> int:
        """The id of ``schema`` under ``subject`` (registering it where the registry can)."""
        ...


class FileSchemaRegistry:
    """Read-only registry from a manifest ``{subject: [{"id": 1, "file": "x.avsc"}, ...]}``.

    Files are relative to the manifest's directory. Ids are global, as in Confluent's registry:
    :meth:`id_for` prefers the subject's own versions (latest first) but, like Confluent when an
    identical schema is registered under a new subject, falls back to the id of an equal schema
    under any subject (so e.g. a test topic's ``<topic>-value`` needs no manifest entry).
    """

    def __init__(self, manifest: Path = REGISTRY_MANIFEST) -> None:
        self._manifest = manifest
        self._files: dict[int, Path] = {}
        self._subjects: dict[str, list[int]] = {}
        self._schemas: dict[int, Schema] = {}
        for subject, versions in json.loads(manifest.read_text(encoding="utf-8")).items():
            for version in versions:
                schema_id, file = int(version["id"]), manifest.parent / version["file"]
                if self._files.setdefault(schema_id, file) != file:
                    raise ValueError(f"{manifest}: schema id {schema_id} names two files")
                self._subjects.setdefault(subject, []).append(schema_id)

    def schema_by_id(self, schema_id: int) -> Schema:
        """The parsed schema with this id; :class:`UnknownSchemaId` if the manifest lacks it."""
        schema = self._schemas.get(schema_id)
        if schema is None:
            if schema_id not in self._files:
                raise UnknownSchemaId(schema_id, f"not in {self._manifest}")
            schema = self._schemas[schema_id] = parse_schema_file(self._files[schema_id])
        return schema

    def id_for(self, subject: str, schema: Schema) -> int:
        """The id of an equal schema, the subject's own versions first."""
        wanted = to_parsing_canonical_form(schema)
        candidates = [*reversed(self._subjects.get(subject, [])), *self._files]
        for schema_id in candidates:
            if to_parsing_canonical_form(self.schema_by_id(schema_id)) == wanted:
                return schema_id
        raise SchemaNotRegistered(
            f"schema {schema.get('name')!r} for subject {subject!r} is not in {self._manifest};"
            " add its .avsc file there with a new id"
        )


class ConfluentSchemaRegistry:
    """Client of a Confluent-compatible Schema Registry REST API (urllib, cached by id)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._schemas: dict[int, Schema] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def schema_by_id(self, schema_id: int) -> Schema:
        """``GET /schemas/ids/{id}``, cached; :class:`UnknownSchemaId` on 404 or a non-Avro type."""
        schema = self._schemas.get(schema_id)
        if schema is not None:
            return schema
        try:
            answer = self._request("GET", f"/schemas/ids/{schema_id}")
        except SchemaRegistryError as exc:
            if exc.status == 404:
                raise UnknownSchemaId(schema_id, f"not in the registry at {self._url}") from None
            raise
        schema_type = answer.get("schemaType", "AVRO")
        if schema_type != "AVRO":
            raise UnknownSchemaId(schema_id, f"it is a {schema_type} schema, not Avro")
        schema = self._schemas[schema_id] = fastavro.parse_schema(json.loads(answer["schema"]))
        return schema

    def id_for(self, subject: str, schema: Schema) -> int:
        """``POST /subjects/{subject}/versions`` (idempotent: returns the existing id), cached."""
        text = schema_json(schema)
        key = (subject, text)
        if key not in self._ids:
            answer = self._request("POST", f"/subjects/{quote(subject, safe='')}/versions",
                                   {"schema": text})
            self._ids[key] = int(answer["id"])
        return self._ids[key]

    def _request(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self._url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Accept": f"{_CONTENT_TYPE}, application/json", "Content-Type": _CONTENT_TYPE},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read().decode("utf-8", "replace").strip()
            raise SchemaRegistryError(
                f"schema registry {method} {self._url}{path} answered {exc.code}: {detail}",
                status=exc.code,
            ) from None
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused, bad JSON answer
            reason = getattr(exc, "reason", exc)
            raise SchemaRegistryError(
                f"cannot use the schema registry at {self._url}: {reason}"
            ) from None


def schema_json(schema: Schema) -> str:
    """The Avro JSON text of a parsed schema (without fastavro's bookkeeping keys)."""
    return json.dumps({k: v for k, v in schema.items() if not k.startswith("__")})


def registry_for(url: str) -> SchemaRegistry:
    """A Confluent registry client for an http(s) URL; the file-backed registry for ``""``."""
    return ConfluentSchemaRegistry(url) if url else FileSchemaRegistry()
