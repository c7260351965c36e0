"""JSON responses, and the errors that become them: ``{"error": code, "message": text, ...}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response


class ApiError(Exception):
    """A request the reader answers with ``status`` and a JSON body naming what went wrong."""

    def __init__(self, status: int, error: str, message: str,
                 headers: Mapping[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON body: error code, message, then any details."""
        return {"error": self.error, "message": self.message, **self.details}


class JSONResponse(Response):
    """A JSON response rendered with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialize ``content``."""
        return orjson.dumps(content)


def error_response(error: ApiError) -> JSONResponse:
    """The response for ``error``."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)
