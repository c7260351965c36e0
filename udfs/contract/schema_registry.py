"""Where Avro writer schemas come from: the file-backed manifest or a Confluent Schema Registry
(``confluent_registry.py``), as :func:`registry_for` a :class:`RegistryConfig` chooses.

Both registries answer the same three questions: which schema has this id (consumers, for the
Confluent wire format's schema id), which id has this schema under this subject (producers), and
which schema is a subject's latest version (the definitions loader, for a source declared with
``registry_subject``).
Schemas are fastavro-parsed dicts; treat them as read-only, they are cached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import SecretStr

from featurestream.schemas import REGISTRY_MANIFEST, parse_schema_file

Schema = dict[str, Any]
NO_SECRET = SecretStr("")
HELD_IDS = range(1 << 20, 1 << 31)  # ids of schemas held in memory, above any manifest's


class UnknownSchemaId(LookupError):
    """The registry has no (Avro) schema with this id."""

    def __init__(self, schema_id: int, detail: str) -> None:
        super().__init__(f"unknown schema id {schema_id}: {detail}")
        self.schema_id = schema_id


class UnknownSubject(LookupError):
    """The registry has no (Avro record) schema under this subject."""

    def __init__(self, subject: str, detail: str) -> None:
        super().__init__(f"no schema under subject {subject!r}: {detail}")
        self.subject = subject


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

    def latest(self, subject: str) -> Schema:
        """The parsed latest version of ``subject``; :class:`UnknownSubject` if it has none."""
        ...


class FileSchemaRegistry:
    """Registry from a manifest ``{subject: [{"id": 1, "file": "x.avsc"}, ...]}``, plus the
    schemas :meth:`register` holds in memory (never written back).

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
        candidates = [*reversed(self._subjects.get(subject, [])), *self._files, *self._schemas]
        for schema_id in candidates:
            if to_parsing_canonical_form(self.schema_by_id(schema_id)) == wanted:
                return schema_id
        raise SchemaNotRegistered(
            f"schema {schema.get('name')!r} for subject {subject!r} is not in {self._manifest};"
            " add its .avsc file there with a new id"
        )

    def latest(self, subject: str) -> Schema:
        """The subject's last version: the manifest's last entry, or the last schema
        :meth:`register` held under it."""
        versions = self._subjects.get(subject)
        if not versions:
            known = ", ".join(sorted(self._subjects)) or "none"
            raise UnknownSubject(subject, f"not in {self._manifest} nor held in memory "
                                          f"(subjects: {known})")
        return self.schema_by_id(versions[-1])

    def register(self, subject: str, schema: Schema) -> int:
        """Hold ``schema`` under ``subject`` in memory (the manifest is not written); its id.

        For the schemas of declared sources, which no manifest lists. An equal schema keeps its
        id; a new one gets an id in :data:`HELD_IDS` derived from its fingerprint, so every
        process that registers the same schema (a producer, the job) agrees on the id without
        sharing state. :meth:`id_for` finds held schemas like listed ones.
        """
        try:
            schema_id = self.id_for(subject, schema)
        except SchemaNotRegistered:
            form = to_parsing_canonical_form(schema)
            schema_id = HELD_IDS.start + int(fingerprint(form, "CRC-64-AVRO"), 16) % len(HELD_IDS)
            if schema_id in self._files or schema_id in self._schemas:
                raise ValueError(f"schema {schema.get('name')!r}: its derived id {schema_id} is"
                                 " taken by another schema; rename the record") from None
            self._schemas[schema_id] = parse_schema(schema)  # type: ignore[assignment]
        if schema_id not in self._subjects.get(subject, []):
            self._subjects.setdefault(subject, []).append(schema_id)
        return schema_id


@dataclass(frozen=True)
class RegistryConfig:
    """Which registry, as plain values: Flink functions take it in their constructor (it is
    pickled with them) and build the client in ``open()``. An empty ``url``: the file-backed
    registry; otherwise a Confluent-compatible registry with these credentials and TLS files."""

    url: str = ""
    user_info: SecretStr = NO_SECRET  # user:password, HTTP basic auth
    bearer_token: SecretStr = NO_SECRET  # a static bearer token
    logical_cluster: str = ""  # sent with the bearer token (Confluent Cloud's lsrc-...)
    ca_location: str = ""  # CA bundle verifying the registry's certificate
    cert_location: str = ""  # client certificate, mutual TLS
    key_location: str = ""  # its private key
    timeout_ms: int = 5_000  # per HTTP request
    retries: int = 3  # on 408, 429, 5xx and network errors, with jittered exponential backoff
    retry_wait_ms: int = 1_000  # the backoff's base

    def client_config(self) -> dict[str, Any]:
        """The configuration of confluent-kafka's ``SchemaRegistryClient``."""
        config: dict[str, Any] = {"url": self.url, "timeout": self.timeout_ms / 1000,
                                  "max.retries": self.retries,
                                  "retries.wait.ms": self.retry_wait_ms}
        if self.user_info:
            config["basic.auth.user.info"] = self.user_info.get_secret_value()
        if self.bearer_token:
            config |= {"bearer.auth.credentials.source": "STATIC_TOKEN",
                       "bearer.auth.token": self.bearer_token.get_secret_value(),
                       "bearer.auth.logical.cluster": self.logical_cluster}
        files = {"ssl.ca.location": self.ca_location,
                 "ssl.certificate.location": self.cert_location,
                 "ssl.key.location": self.key_location}
        return config | {key: path for key, path in files.items() if path}


def schema_json(schema: Schema) -> str:
    """The Avro JSON text of a parsed schema (without fastavro's bookkeeping keys)."""
    return json.dumps({k: v for k, v in schema.items() if not k.startswith("__")})


def canonical_json(schema: Schema) -> str:
    """The Avro JSON text of a parsed schema with sorted keys and no spaces: equal schemas give
    equal text (docs, defaults and aliases are kept, unlike Avro's Parsing Canonical Form,
    since a reader schema needs its defaults)."""
    plain = {k: v for k, v in schema.items() if not k.startswith("__")}
    return json.dumps(plain, sort_keys=True, separators=(",", ":"))


def registry_for(config: RegistryConfig) -> SchemaRegistry:
    """The Confluent registry client for a URL; the file-backed registry for no URL."""
    if not config.url:
        return FileSchemaRegistry()
    # Imported here: confluent-kafka's registry client costs ~0.2 s to import, which only the
    # users of a remote registry should pay (not every CLI command, not the reader).
    from featurestream.udfs.contract.confluent_registry import ConfluentSchemaRegistry

    return ConfluentSchemaRegistry(config)
