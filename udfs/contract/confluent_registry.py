"""A Confluent-compatible Schema Registry through confluent-kafka's ``SchemaRegistryClient``.

Why that client: a managed registry needs basic or bearer auth, TLS options (a private CA, a
client certificate) and retries with backoff on 408/429/5xx and network errors; the client has
them all (see :meth:`RegistryConfig.client_config`). It caches ids and schema texts; the parsed
schemas are cached here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.common._httpx_compat import httpx
from confluent_kafka.schema_registry.error import SchemaRegistryError as ErrorAnswer

from featurestream.udfs.contract.schema_registry import (
    RegistryConfig,
    Schema,
    SchemaRegistryError,
    UnknownSchemaId,
    UnknownSubject,
    schema_json,
)


class ConfluentSchemaRegistry:
    """The :class:`SchemaRegistry` of a registry at ``config.url``."""

    def __init__(self, config: RegistryConfig) -> None:
        self._url = config.url.rstrip("/")
        self._schemas: dict[int, Schema] = {}
        try:
            self._client = SchemaRegistryClient(config.client_config())
        except (ValueError, TypeError, OSError) as exc:  # bad options, unreadable TLS files
            raise SchemaRegistryError(
                f"cannot set up the schema registry client for {self._url}: {exc}") from None

    def schema_by_id(self, schema_id: int) -> Schema:
        """``GET /schemas/ids/{id}``; :class:`UnknownSchemaId` on 404 or a non-Avro type."""
        schema = self._schemas.get(schema_id)
        if schema is not None:
            return schema
        try:
            answer = self._call(f"GET /schemas/ids/{schema_id}",
                                lambda: self._client.get_schema(schema_id))
        except SchemaRegistryError as exc:
            if exc.status == 404:
                raise UnknownSchemaId(schema_id, f"not in the registry at {self._url}") from None
            raise
        if answer.schema_type != "AVRO":
            raise UnknownSchemaId(schema_id, f"it is a {answer.schema_type} schema, not Avro")
        parsed = fastavro.parse_schema(json.loads(answer.schema_str))
        if not isinstance(parsed, dict):
            raise UnknownSchemaId(schema_id, "it is not an Avro record schema")
        self._schemas[schema_id] = parsed
        return parsed

    def id_for(self, subject: str, schema: Schema) -> int:
        """``POST /subjects/{subject}/versions`` (idempotent: returns the existing id)."""
        avro = RegistrySchema(schema_json(schema), "AVRO")
        return int(self._call(f"POST /subjects/{subject}/versions",
                              lambda: self._client.register_schema(subject, avro)))

    def latest(self, subject: str) -> Schema:
        """``GET /subjects/{subject}/versions/latest``; :class:`UnknownSubject` on 404 or a
        non-Avro type. The schema is cached under its id too, as :meth:`schema_by_id` would."""
        try:
            answer = self._call(f"GET /subjects/{subject}/versions/latest",
                                lambda: self._client.get_latest_version(subject))
        except SchemaRegistryError as exc:
            if exc.status == 404:
                raise UnknownSubject(subject, f"not in the registry at {self._url}") from None
            raise
        if answer.schema.schema_type != "AVRO":
            raise UnknownSubject(subject, f"its latest version is a {answer.schema.schema_type}"
                                          " schema, not Avro")
        parsed = fastavro.parse_schema(json.loads(answer.schema.schema_str))
        if not isinstance(parsed, dict):
            raise UnknownSubject(subject, "its latest version is not an Avro record schema")
        if answer.schema_id is not None:
            self._schemas.setdefault(answer.schema_id, parsed)
        return parsed

    def _call(self, request: str, send: Callable[[], Any]) -> Any:
        """``send()``; what still fails after the client's retries as SchemaRegistryError."""
        try:
            return send()
        except ErrorAnswer as exc:
            raise SchemaRegistryError(
                f"schema registry {request} at {self._url} answered {exc.http_status_code}: "
                f"{exc.error_message}", status=exc.http_status_code) from None
        except (httpx.HTTPError, OSError, ValueError) as exc:  # refused, timeouts, bad JSON
            raise SchemaRegistryError(
                f"cannot use the schema registry at {self._url}: {exc}") from None
