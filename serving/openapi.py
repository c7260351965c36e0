"""The reader's OpenAPI 3.1 document, served at ``/openapi.json``.

Generated from the route table (:data:`featurestream.serving.routes.ROUTES`) and the contract's
types (:mod:`featurestream.serving.contract`) with msgspec, so it shows exactly what the reader
validates and answers, with this reader's entities, the user's feature names and the batch
limit. (An entity route's ``names`` are the entity's own: the 400 ``unknown_feature`` lists
them.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from featurestream.serving.contract import (
    BatchRequest,
    EntityBatchRequest,
    EntityId,
    ErrorBody,
    ReaderContract,
    UserId,
)
from featurestream.serving.drift import ModelName
from featurestream.serving.predict_contract import PredictBatchRequest, batch_request
from featurestream.serving.routes import Endpoint

SCHEMA_REF = "#/components/schemas/{name}"
ERROR_MEANINGS = {400: "Invalid input (the message says what and how to fix it).",
                  401: "Missing or wrong bearer token (only when auth is on).",
                  404: "No such entity or model, or no features for the id.",
                  413: "Batch or body too large.",
                  503: "Redis unavailable or too slow; retry later."}


def openapi_document(endpoints: Sequence[Endpoint], contract: ReaderContract,
                     auth: bool) -> dict[str, Any]:
    """The document of ``endpoints`` under ``contract``; ``auth`` marks the protected ones."""
    configured: dict[Any, Any] = {PredictBatchRequest: batch_request(contract.max_batch_size),
                                  BatchRequest: contract.batch_request,
                                  EntityBatchRequest: contract.entity_batch_request}
    path_parameters = _path_parameters(contract)
    types: list[Any] = [ErrorBody, *path_parameters.values()]
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
                       "schema": schema(path_parameters[name])}
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


def _path_parameters(contract: ReaderContract) -> dict[str, Any]:
    """The type of each ``{name}`` in a path: the entity one of this reader's."""
    described = Meta(description="An entity the definitions declare.")
    entity: Any = (Annotated[Literal.__getitem__(contract.entity_names), described]
                   if contract.entity_names else Annotated[str, described])
    return {"user_id": UserId, "entity": entity, "id": EntityId, "name": ModelName}
