"""Request checks: user ids, feature names and batch bodies. Bad input is a 4xx, never a 500.

A user id is 1-128 characters among letters, digits and ``. _ - @ :``; the reader only ever
reads ``{prefix}user:{id}`` and ``{prefix}score:{id}`` with it, so no id reaches another key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from featurestream.serving.responses import ApiError

MAX_USER_ID_LENGTH = 128
USER_ID_PATTERN = rf"^[A-Za-z0-9._@:-]{{1,{MAX_USER_ID_LENGTH}}}$"  # also in the OpenAPI doc
_USER_ID = re.compile(USER_ID_PATTERN)
_BATCH_KEYS = ("user_ids", "names")


@dataclass(frozen=True)
class BatchRequest:
    """A checked ``POST /v1/features/batch`` body."""

    user_ids: list[str]
    names: tuple[str, ...] | None


def check_user_id(user_id: str, where: str = "user id") -> str:
    """``user_id`` itself, or a 400 naming the rule."""
    if not _USER_ID.fullmatch(user_id):
        shown = user_id if len(user_id) <= 40 else user_id[:40] + "..."
        raise ApiError(400, "invalid_user_id",
                       f"{where} {shown!r} is invalid: use 1-{MAX_USER_ID_LENGTH} characters "
                       "among letters, digits and . _ - @ :")
    return user_id


def check_names(names: Sequence[str], valid: Sequence[str]) -> tuple[str, ...] | None:
    """The selected feature names (None = all), or a 400 listing the valid ones."""
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ApiError(400, "unknown_feature", f"unknown feature name(s): {', '.join(unknown)}",
                       valid=list(valid))
    return tuple(dict.fromkeys(names)) or None


def parse_names(raw: str | None, valid: Sequence[str]) -> tuple[str, ...] | None:
    """``?names=a,b`` -> the selected names (None = all)."""
    if raw is None:
        return None
    return check_names([n.strip() for n in raw.split(",") if n.strip()], valid)


def body_limit(max_batch_size: int) -> int:
    """The largest batch body accepted: room for the ids, the names and some whitespace."""
    return 65_536 + max_batch_size * (MAX_USER_ID_LENGTH + 128)


def parse_batch(body: bytes, max_batch_size: int, valid: Sequence[str]) -> BatchRequest:
    """Check a batch body: ``{"user_ids": [...], "names": [...]?}``."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body",
                       'the body must be a JSON object: {"user_ids": [...], "names": [...]}')
    extra = sorted(set(data) - set(_BATCH_KEYS))
    if extra:
        raise ApiError(400, "invalid_body", f"unknown field(s) {extra}; use user_ids and names")
    user_ids = data.get("user_ids")
    if not isinstance(user_ids, list) or not user_ids:
        raise ApiError(400, "invalid_body", "user_ids must be a non-empty list of user ids")
    if len(user_ids) > max_batch_size:
        raise ApiError(413, "batch_too_large",
                       f"{len(user_ids)} user ids; at most {max_batch_size} per request",
                       limit=max_batch_size)
    for i, user_id in enumerate(user_ids):
        if not isinstance(user_id, str):
            raise ApiError(400, "invalid_user_id", f"user_ids[{i}] must be a string")
        check_user_id(user_id, f"user_ids[{i}]")
    names = data.get("names")
    if names is None:
        return BatchRequest(user_ids, None)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ApiError(400, "invalid_body", "names must be a list of feature names")
    return BatchRequest(user_ids, check_names(names, valid))
