"""The reader's OpenAPI 3.1 document, served at ``/openapi.json``.

Written out rather than generated: the reader has seven routes, and the schemas name the
configured feature names and batch limit. ``tests/unit/test_reader_logic.py`` checks that
every route is documented.
"""

from __future__ import annotations

from typing import Any

from featurestream.serving.validation import MAX_USER_ID_LENGTH, USER_ID_PATTERN

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_FRESHNESS = {
    "as_of": {"type": ["integer", "null"],
              "description": "Event time (epoch ms) the values are valid at."},
    "staleness_ms": {"type": ["integer", "null"],
                     "description": "Read time minus as_of, in ms (at least 0)."},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {400: "Invalid input (the message says what and how to fix it).",
               401: "Missing or wrong bearer token (only when auth is on).",
               404: "No such user.",
               413: "Batch or body too large.",
               503: "Redis unavailable or too slow; retry later."}
    return {str(s): _json(_ERROR_REF, meaning[s]) for s in statuses}


def openapi_document(feature_names: tuple[str, ...], max_batch_size: int,
                     auth: bool) -> dict[str, Any]:
    """The document for these feature names and limits; ``auth`` marks /v1 as secured."""
    user_id = {"name": "user_id", "in": "path", "required": True,
               "schema": {"type": "string", "maxLength": MAX_USER_ID_LENGTH,
                          "pattern": USER_ID_PATTERN}}
    secured = {"security": [{"bearer": []}]} if auth else {}
    feature_name = {"type": "string", "enum": list(feature_names)}
    schemas = {
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string", "description": "Machine-readable code."},
            "message": {"type": "string"},
            "valid": {"type": "array", "items": {"type": "string"},
                      "description": "The valid feature names (unknown_feature)."},
            "limit": {"type": "integer", "description": "The limit exceeded (413)."}}},
        "Features": {"type": "object", "properties": {
            "user_id": {"type": "string"},
            **_FRESHNESS,
            "updated_at": {"type": ["integer", "null"],
                           "description": "Wall-clock time (epoch ms) the row was written."},
            "seconds_since_last_event": {"type": ["number", "null"],
                                         "description": "Read time minus last_event_ts."},
            "features": {"type": "object", "description": "Feature name to value (null = "
                         "no value, e.g. a ratio over zero events).",
                         "additionalProperties": {"type": ["number", "null"]}}}},
        "BatchRequest": {"type": "object", "required": ["user_ids"],
                         "additionalProperties": False, "properties": {
            "user_ids": {"type": "array", "minItems": 1, "maxItems": max_batch_size,
                         "items": user_id["schema"]},
            "names": {"type": "array", "items": feature_name}}},
        "BatchResponse": {"type": "object", "properties": {"results": {
            "type": "array", "description": "One per requested id, in request order.",
            "items": {"allOf": [{"$ref": "#/components/schemas/Features"}, {
                "type": "object", "required": ["user_id", "found"],
                "properties": {"found": {"type": "boolean"}}}]}}}},
        "Score": {"type": "object", "properties": {
            "model": {"type": "string"}, "version": {"type": "integer"},
            "variant": {"type": "string", "description": "The experiment arm that served it."},
            "score": {"type": "number"},
            "event_id": {"type": "string", "description": "The event that was scored."},
            "scored_at": {"type": "integer", "description": "Wall-clock epoch ms of scoring."},
            **_FRESHNESS}},
        "Scores": {"type": "object", "properties": {
            "user_id": {"type": "string"}, **_FRESHNESS,
            "scores": {"type": "object", "description": "Model name to its latest score.",
                       "additionalProperties": {"$ref": "#/components/schemas/Score"}}}},
    }
    paths = {
        "/v1/features/{user_id}": {"get": {
            "summary": "A user's features with their freshness.", **secured,
            "parameters": [user_id, {
                "name": "names", "in": "query", "required": False,
                "description": "Comma-separated feature names (default: all).",
                "schema": {"type": "string"}}],
            "responses": {"200": _json({"$ref": "#/components/schemas/Features"}, "Found."),
                          **_errors(400, 401, 404, 503)}}},
        "/v1/features/batch": {"post": {
            "summary": "Many users' features in one Redis round trip.", **secured,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/BatchRequest"}}}},
            "responses": {
                "200": _json({"$ref": "#/components/schemas/BatchResponse"},
                             "Results in request order; missing users have found=false."),
                **_errors(400, 401, 413, 503)}}},
        "/v1/scores/{user_id}": {"get": {
            "summary": "A user's latest score per model.", **secured,
            "parameters": [user_id],
            "responses": {"200": _json({"$ref": "#/components/schemas/Scores"}, "Found."),
                          **_errors(400, 401, 404, 503)}}},
        "/healthz": {"get": {"summary": "The process is up.",
                             "responses": {"200": {"description": "Up."}}}},
        "/readyz": {"get": {"summary": "Redis answers.", "responses": {
            "200": {"description": "Ready."}, **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {"200": {
            "description": "Exposition text.", "content": {"text/plain": {}}}}}},
        "/openapi.json": {"get": {"summary": "This document.",
                                  "responses": {"200": {"description": "OpenAPI 3.1."}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "featurestream reader", "version": "1",
                 "description": "Materialized features and scores, read from Redis."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
