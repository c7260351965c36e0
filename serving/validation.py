"""Request checks: entities, ids, feature names and batch bodies. Bad input is a 4xx, never a 500.

The rules are the contract's types (:mod:`featurestream.serving.contract`): msgspec decodes a
batch body into the reader's ``BatchRequest`` (users) or the entity's ``EntityBatchRequest``,
whose types hold the id pattern, the batch size and the feature names; an id in a path is
matched against the same pattern. Only when decoding fails is the body looked at again, to name
the error: ``invalid_json``, ``invalid_body``, ``invalid_user_id`` / ``invalid_id``,
``unknown_feature`` (with the valid names), ``invalid_max_staleness_ms`` or ``batch_too_large``
(413, with the limit). An entity the definitions do not declare is a 404 ``unknown_entity``
naming the known ones. ``?max_staleness_ms=`` is checked here too (whole ms, 0 to a day).

A user id is 1-128 characters among letters, digits and ``. _ - @ :``; an entity id 1-256
among those and ``|``. The reader only ever reads ``{prefix}{entity}:{id}`` of a declared
entity (whose name has no ``:``) and ``{prefix}score:{user id}``, so no id reaches another key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from featurestream.serving.contract import (
    ENTITY_ID_PATTERN,
    ENTITY_ID_RULE,
    MAX_STALENESS_MS,
    USER_ID_PATTERN,
    USER_ID_RULE,
    BatchRequest,
    EntityBatchRequest,
    EntityContract,
    ErrorBody,
    ReaderContract,
)
from featurestream.serving.responses import ApiError

_USER_ID = re.compile(USER_ID_PATTERN)
_ENTITY_ID = re.compile(ENTITY_ID_PATTERN)


@dataclass(frozen=True)
class _BatchShape:
    """What a batch body's errors name: its ids field, the id error and rule, its shape."""

    ids: str
    error: str
    rule: str
    shape: str


_USER_BATCH = _BatchShape("user_ids", "invalid_user_id", USER_ID_RULE,
                          '{"user_ids": [...], "names": [...]}')
_ENTITY_BATCH = _BatchShape("ids", "invalid_id", ENTITY_ID_RULE, '{"ids": [...], "names": [...]}')


def check_user_id(user_id: str, where: str = "user id") -> str:
    """``user_id`` itself, or a 400 naming the rule."""
    if not _USER_ID.fullmatch(user_id):
        raise _invalid_id(user_id, where, _USER_BATCH)
    return user_id


def check_entity(entity: str, contract: ReaderContract) -> EntityContract:
    """The declared entity's contract, or a 404 naming the entities this reader serves."""
    found = contract.entities.get(entity)
    if found is None:
        shown = entity if len(entity) <= 40 else entity[:40] + "..."
        known = ", ".join(contract.entity_names) or "none"
        raise ApiError(404, ErrorBody("unknown_entity", f"no entity {shown!r}; the definitions "
                                      f"declare: {known}", valid=list(contract.entity_names)))
    return found


def check_entity_id(entity_id: str, where: str = "id") -> str:
    """``entity_id`` itself, or a 400 naming the rule."""
    if not _ENTITY_ID.fullmatch(entity_id):
        raise _invalid_id(entity_id, where, _ENTITY_BATCH)
    return entity_id


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


def parse_max_staleness(raw: str | None) -> int | None:
    """``?max_staleness_ms=N`` -> N (None when absent), or a 400 naming the rule."""
    if raw is None:
        return None
    text = raw.strip()
    # isascii: str.isdigit also takes other scripts' digits; len: int() of 4,301+ digits raises
    if not (text.isascii() and text.isdigit() and len(text) <= 12) or (
            int(text) > MAX_STALENESS_MS):
        raise _invalid_max_staleness(repr(raw[:40]))
    return int(text)


def parse_batch(body: bytes, contract: ReaderContract) -> BatchRequest:
    """A batch body decoded into the contract's request type, or the 4xx saying what is wrong.

    Its ``names`` may repeat and may be empty: both select as ``?names=`` does.
    """
    return _decode(body, contract.batch_decoder, _USER_BATCH, contract.feature_names,
                   contract.max_batch_size)


def parse_entity_batch(body: bytes, entity: EntityContract,
                       max_batch_size: int) -> EntityBatchRequest:
    """An entity batch body decoded into the entity's request type, or the 4xx saying what is
    wrong (as :func:`parse_batch`)."""
    return _decode(body, entity.batch_decoder, _ENTITY_BATCH, entity.feature_names,
                   max_batch_size)


_Request = TypeVar("_Request", BatchRequest, EntityBatchRequest)


def _decode(body: bytes, decoder: msgspec.json.Decoder[_Request], shape: _BatchShape,
            valid: Sequence[str], limit: int) -> _Request:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:  # JSON, but not the request type
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:  # a wrong type first, then not JSON ('"x" 1'): the type's
            data = None  # 400 (this decode raised out of the handler: a 500, found by fuzzing)
        raise _batch_error(str(exc), data, shape, valid, limit) from None
    except msgspec.DecodeError as exc:
        message = f"the body is not valid JSON: {exc}"
        raise ApiError(400, ErrorBody("invalid_json", message)) from None


def _batch_error(error: str, data: Any, shape: _BatchShape, valid: Sequence[str],
                 limit: int) -> ApiError:
    """The 4xx for a JSON ``data`` that msgspec refused with ``error``: "what - at `$path`"."""
    detail, _, at = error.partition(" - at `$")
    where = at.rstrip("`").lstrip(".")  # "" (the body), "user_ids", "user_ids[3]", "names[0]"
    fields = data if isinstance(data, dict) else {}
    ids, names = fields.get(shape.ids), fields.get("names")
    if isinstance(ids, list) and len(ids) > limit:  # too many: whatever else is wrong
        what = shape.ids.replace("_", " ")
        return ApiError(413, ErrorBody("batch_too_large", f"{len(ids)} {what}; at most "
                                       f"{limit} per request", limit=limit))
    if where.startswith(f"{shape.ids}[") and isinstance(ids, list):
        entity_id = ids[int(where[len(shape.ids) + 1:-1])]
        if not isinstance(entity_id, str):
            return ApiError(400, ErrorBody(shape.error, f"{where} must be a string"))
        return _invalid_id(entity_id, where, shape)
    if where == "max_staleness_ms":
        return _invalid_max_staleness(repr(fields.get(where)))
    if where.startswith("names[") and isinstance(names, list) and all(
            isinstance(n, str) for n in names):
        return _unknown_features([n for n in names if n not in valid], valid)
    place = f" at {where}" if where else ""
    return ApiError(400, ErrorBody("invalid_body", f"{detail}{place}; the body is {shape.shape}"))


def _invalid_max_staleness(shown: str) -> ApiError:
    return ApiError(400, ErrorBody("invalid_max_staleness_ms", f"max_staleness_ms {shown[:40]} "
                                   f"is invalid: use a whole number of ms from 0 to "
                                   f"{MAX_STALENESS_MS}"))


def _invalid_id(entity_id: str, where: str, shape: _BatchShape) -> ApiError:
    shown = entity_id if len(entity_id) <= 40 else entity_id[:40] + "..."
    return ApiError(400, ErrorBody(shape.error,
                                   f"{where} {shown!r} is invalid: use {shape.rule}"))


def _unknown_features(unknown: Sequence[str], valid: Sequence[str]) -> ApiError:
    return ApiError(400, ErrorBody("unknown_feature",
                                   f"unknown feature name(s): {', '.join(unknown)}",
                                   valid=list(valid)))
