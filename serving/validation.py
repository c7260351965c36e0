"""Request checks: user ids, feature names and batch bodies. Bad input is a 4xx, never a 500.

The rules are the contract's types (:mod:`featurestream.serving.contract`): msgspec decodes a
batch body into the reader's ``BatchRequest``, whose types hold the user-id pattern, the batch
size and the feature names; a user id in a path is matched against the same pattern. Only when
decoding fails is the body looked at again, to name the error: ``invalid_json``,
``invalid_body``, ``invalid_user_id``, ``unknown_feature`` (with the valid names) or
``batch_too_large`` (413, with the limit).

A user id is 1-128 characters among letters, digits and ``. _ - @ :``; the reader only ever
reads ``{prefix}user:{id}`` and ``{prefix}score:{id}`` with it, so no id reaches another key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from featurestream.serving.contract import (
    USER_ID_PATTERN,
    USER_ID_RULE,
    BatchRequest,
    ErrorBody,
    ReaderContract,
)
from featurestream.serving.responses import ApiError

_USER_ID = re.compile(USER_ID_PATTERN)
_BODY_SHAPE = '{"user_ids": [...], "names": [...]}'


def check_user_id(user_id: str, where: str = "user id") -> str:
    """``user_id`` itself, or a 400 naming the rule."""
    if not _USER_ID.fullmatch(user_id):
        raise _invalid_user_id(user_id, where)
    return user_id


def check_names(names: Sequence[str], valid: Sequence[str]) -> tuple[str, ...] | None:
    """The selected feature names (None = all), or a 400 listing the valid ones."""
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise _unknown_features(unknown, valid)
    return tuple(dict.fromkeys(names)) or None


def parse_names(raw: str | None, valid: Sequence[str]) -> tuple[str, ...] | None:
    """``?names=a,b`` -> the selected names (None = all)."""
    if raw is None:
        return None
    return check_names([n.strip() for n in raw.split(",") if n.strip()], valid)


def parse_batch(body: bytes, contract: ReaderContract) -> BatchRequest:
    """A batch body decoded into the contract's request type, or the 4xx saying what is wrong.

    Its ``names`` may repeat and may be empty: both select as ``?names=`` does.
    """
    try:
        return contract.batch_decoder.decode(body)
    except msgspec.ValidationError as exc:  # JSON, but not a BatchRequest
        raise _batch_error(str(exc), msgspec.json.decode(body), contract) from None
    except msgspec.DecodeError as exc:
        message = f"the body is not valid JSON: {exc}"
        raise ApiError(400, ErrorBody("invalid_json", message)) from None


def _batch_error(error: str, data: Any, contract: ReaderContract) -> ApiError:
    """The 4xx for a JSON ``data`` that msgspec refused with ``error``: "what - at `$path`"."""
    detail, _, at = error.partition(" - at `$")
    where = at.rstrip("`").lstrip(".")  # "" (the body), "user_ids", "user_ids[3]", "names[0]"
    fields = data if isinstance(data, dict) else {}
    user_ids, names = fields.get("user_ids"), fields.get("names")
    limit = contract.max_batch_size
    if isinstance(user_ids, list) and len(user_ids) > limit:  # too many: whatever else is wrong
        return ApiError(413, ErrorBody("batch_too_large", f"{len(user_ids)} user ids; at most "
                                       f"{limit} per request", limit=limit))
    if where.startswith("user_ids[") and isinstance(user_ids, list):
        user_id = user_ids[int(where[len("user_ids["):-1])]
        if not isinstance(user_id, str):
            return ApiError(400, ErrorBody("invalid_user_id", f"{where} must be a string"))
        return _invalid_user_id(user_id, where)
    if where.startswith("names[") and isinstance(names, list) and all(
            isinstance(n, str) for n in names):
        return _unknown_features([n for n in names if n not in contract.feature_names],
                                 contract.feature_names)
    place = f" at {where}" if where else ""
    return ApiError(400, ErrorBody("invalid_body", f"{detail}{place}; the body is {_BODY_SHAPE}"))


def _invalid_user_id(user_id: str, where: str) -> ApiError:
    shown = user_id if len(user_id) <= 40 else user_id[:40] + "..."
    return ApiError(400, ErrorBody("invalid_user_id",
                                   f"{where} {shown!r} is invalid: use {USER_ID_RULE}"))


def _unknown_features(unknown: Sequence[str], valid: Sequence[str]) -> ApiError:
    return ApiError(400, ErrorBody("unknown_feature",
                                   f"unknown feature name(s): {', '.join(unknown)}",
                                   valid=list(valid)))
