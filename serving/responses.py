"""JSON answers (msgspec-encoded contract types), and the errors that become :class:`ErrorBody`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

from featurestream.serving.contract import ErrorBody

_ENCODER = msgspec.json.Encoder()


class ApiError(Exception):
    """A request the reader answers with ``status`` and an :class:`ErrorBody`."""

    def __init__(self, status: int, body: ErrorBody,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(body.message)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class JSONResponse(Response):
    """A JSON answer: one of the contract's types, encoded by msgspec."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialize ``content``."""
        return _ENCODER.encode(content)


def error_response(error: ApiError) -> JSONResponse:
    """The response for ``error``."""
    return JSONResponse(error.body, status_code=error.status, headers=error.headers)
