"""The reader's OpenAPI 3.1 document, served at ``/openapi.json``.

Generated from the route table (:data:`featurestream.serving.routes.ROUTES`) and the contract's
types (:mod:`featurestream.serving.contract`) with msgspec, so it shows exactly what the reader
validates and answers, with this reader's feature names and batch limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from featurestream.serving.contract import BatchRequest, ErrorBody, ReaderContract, UserId
from featurestream.serving.routes import Endpoint

SCHEMA_REF = "#/components/schemas/{name}"
PATH_PARAMETERS: dict[str, Any] = {"user_id": UserId}  # the type of each ``{name}`` in a path
ERROR_MEANINGS = {400: "Invalid input (the message says what and how to fix it).",
                  401: "Missing or wrong bearer token (only when auth is on).",
                  404: "No such user.",
                  413: "Batch or body too large.",
                  503: "Redis unavailable or too slow; retry later."}


def openapi_document(endpoints: Sequence[Endpoint], contract: ReaderContract,
                     auth: bool) -> dict[str, Any]:
    """The document of ``endpoints`` under ``contract``; ``auth`` marks the protected ones."""
    configured: dict[Any, Any] = {BatchRequest: contract.batch_request}
    types: list[Any] = [ErrorBody, *PATH_PARAMETERS.values()]
    for e in endpoints:
        types += [e.answer, *e.query.values()]
        if e.request is not None:
            types.append(configured.get(e.request, e.request))
    schemas, components = msgspec.json.schema_components(types, ref_template=SCHEMA_REF)

    def schema(of: Any) -> dict[str, Any]:
        return schemas[types.index(configured.get(of, of))]

    def content(media_type: str, body: Any, description: str) -> dict[str, Any]:
        return {"description": description, "content": {media_type: {"schema": schema(body)}}}

    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        operation: dict[str, Any] = {"summary": e.summary}
        if auth and e.protected:
            operation["security"] = [{"bearer": []}]
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": schema(PATH_PARAMETERS[name])}
                      for name in re.findall(r"{(\w+)}", e.path)]
        parameters += [{"name": name, "in": "query", "required": False, "schema": schema(of)}
                       for name, of in e.query.items()]
        if parameters:
            operation["parameters"] = parameters
        if e.request is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": schema(e.request)}}}
        operation["responses"] = {"200": content(e.media_type, e.answer, e.answered), **{
            str(status): content("application/json", ErrorBody, ERROR_MEANINGS[status])
            for status in e.errors}}
        paths.setdefault(e.path, {})[e.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "featurestream reader", "version": "1",
                 "description": "Materialized features and scores, read from Redis."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
