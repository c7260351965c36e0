"""The Redis layout of materialized features: the one place that defines it.

Keys
    ``{prefix}{entity}:{entity_id}`` (default prefix ``fs:``; :func:`entity_key`): one hash per
    entity instance, e.g. ``fs:user:u-1`` (:func:`user_key`) or ``fs:item:sku-9``. An id made
    of several key fields joins their string values with ``|``. Entity names have no ``:``, so
    the keys of two entities never meet; ``score`` is taken by the score hashes below
    (:data:`RESERVED_ENTITY_NAMES`).

Fields
    one per feature of the entity (see :mod:`udfs.definitions`), plus the row's meta fields
    (:data:`ROW_META_FIELDS`):
    ``as_of``       event time (epoch ms) the row is valid at;
    ``version``     per-instance row counter; ``(as_of, version)`` orders an instance's rows;
    ``updated_at``  wall-clock time (epoch ms) of the write;
    ``warming_up``  a JSON object, feature name -> the event time (epoch ms) its window is
                    fully covered from, or null (no known end); present only while some
                    feature is still warming up.

Values
    integers as decimal text, floats as Python ``repr`` text (both round-trip exactly), null as
    the empty string -- the encoding of every earlier release, so their rows read back the
    same. Anything else (a string, a boolean, a list of the ``last_n`` kind, the
    ``warming_up`` object) is compact JSON text with non-ASCII escaped. The two never meet: a
    number's text starts with a digit, ``-``, ``i`` or ``n`` (``inf``, ``nan``), JSON text here
    with ``"``, ``[``, ``{``, ``t`` or ``f``; a string value ``""`` is two quote characters,
    not null.

Writes
    go through :data:`UPSERT_ROWS_LUA` (``upsert_rows.lua``; many rows per call, arguments from
    :func:`upsert_rows_args`), which compares ``(as_of, version)`` inside Redis and ignores a
    row older than the stored one, so a replay after a restart never leaves an older row over
    a newer one. A row is the whole truth: a newer row replaces the hash (no field of an older
    row survives, e.g. ``warming_up`` once nothing warms up). Every write refreshes the TTL.

Point-in-time rows
    ``{prefix}_pit:{entity}:{event_id}`` (:func:`point_in_time_key`): the row of one entity a
    scored event is scored with, captured by the feature job before the event counted
    (:mod:`udfs.features.point_in_time`), as a MessagePack map ``{"id": <entity id>, "row":
    {field: value} | nil}`` (nil: the entity had no row; MessagePack keeps every value exactly,
    infinities included, and costs a few microseconds a row). Written once (``SET NX``: a
    replay never changes what a score may already have read), expiring after
    ``FEATURESTREAM_POINT_IN_TIME_TTL_MS``; read by the scoring job.

Scores
    ``{prefix}score:{user_id}``: one hash per user, one field per model name, each holding the
    model's latest :class:`Score` as a JSON object (:func:`encode_score`) with the keys
    ``model, version, variant, score, event_id, scored_at, as_of, experiment`` (experiment: the
    registry's experiment record id, null for the settings' split or a score stored before it
    was recorded). Writes go through
    :data:`UPSERT_SCORE_LUA` (``upsert_score.lua``) with :func:`upsert_score_args`: a score
    replaces the stored one of its model unless that one is newer by ``(as_of, scored_at)``,
    and every write refreshes the key's TTL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import msgspec
import orjson

Scalar = int | float | str | bool | None
FeatureValue = Scalar | list[Scalar]  # a list: the last_n kind
WarmingUp = dict[str, int | None]  # feature -> until (epoch ms) or null
RowValue = FeatureValue | WarmingUp  # what a row's field holds (the object: only warming_up)

ROW_META_FIELDS = ("as_of", "version", "updated_at", "warming_up")
WARMING_UP = "warming_up"
RESERVED_ENTITY_NAMES = frozenset({"score"})  # key spaces of this layout that are not entities


def _script(name: str) -> str:
    """A Lua script shipped beside this module (package data)."""
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


UPSERT_ROWS_LUA = _script("upsert_rows.lua")
UPSERT_SCORE_LUA = _script("upsert_score.lua")

ROWS_PER_UPSERT = 100  # rows per script call: each call holds Redis for well under a millisecond


def hash_tagged(entity_id: str, cluster: bool) -> str:
    """``entity_id`` as it appears in keys: on Redis Cluster in a hash tag (``{u-1}``), so the
    keys of one entity instance (its row; a user's score hash too) share one slot and one node;
    on a single Redis as it is (the keys of every earlier release)."""
    return f"{{{entity_id}}}" if cluster else entity_id


def hash_untagged(text: str, cluster: bool) -> str:
    """Inverse of :func:`hash_tagged`: the entity id in the last part of a key (found by
    ``SCAN``)."""
    return text[1:-1] if cluster and text[:1] == "{" and text[-1:] == "}" else text


def entity_key(prefix: str, entity: str, entity_id: str, *, cluster: bool = False) -> str:
    """The Redis key of an entity instance's feature hash (``cluster``: hash-tagged)."""
    return f"{prefix}{entity}:{hash_tagged(entity_id, cluster)}"


def layout_key(prefix: str) -> str:
    """The key where the feature job publishes the layout it runs (JSON, for
    ``featurestream plan``); ``_`` cannot start an entity name, so no entity key collides."""
    return f"{prefix}_meta:features_layout"


def user_key(prefix: str, user_id: str, *, cluster: bool = False) -> str:
    """The Redis key of a user's feature hash (``{prefix}user:{user_id}``)."""
    return entity_key(prefix, "user", user_id, cluster=cluster)


_JSON_STARTS = frozenset('"[{tf')  # first characters of the JSON texts (never of a number's)


def encode_value(value: RowValue) -> str:
    """Encode one value for a hash field: decimal int, float ``repr``, null -> empty string,
    anything else compact JSON (ASCII)."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return json.dumps(value, separators=(",", ":"))


def decode_value(text: str | bytes) -> RowValue:
    """Inverse of :func:`encode_value` (ValueError for a text it never writes)."""
    if isinstance(text, bytes):
        text = text.decode()
    if text == "":
        return None
    if text[0] in _JSON_STARTS:
        value: RowValue = json.loads(text)
        return value
    if text.lstrip("-").isdigit():
        return int(text)
    return float(text)


def upsert_rows_args(rows: Sequence[Mapping[str, RowValue]], updated_at_ms: int,
                     ttl_seconds: int) -> list[str]:
    """ARGV for :data:`UPSERT_ROWS_LUA`, in the order its header documents; this is the one
    place that builds it.

    ``ttl, updated_at``, then per row: how many texts follow, ``"as_of", <as_of>, "version",
    <version>`` (taken by name, wherever the row has them; the script compares them at these
    positions), then the row's other fields as name/value pairs in the row's order. An empty
    or null ``warming_up`` is left out (the script then drops a stored one).
    """
    args = [str(ttl_seconds), str(updated_at_ms)]
    for row in rows:
        fields = dict(row)
        as_of, version = fields.pop("as_of"), fields.pop("version")
        if not fields.get(WARMING_UP, True):
            del fields[WARMING_UP]
        args += (str(2 * len(fields) + 4), "as_of", str(as_of), "version", str(version))
        for name, value in fields.items():
            args.append(name)
            args.append(encode_value(value))
    return args


_DECODED_TYPES = frozenset({int, float, type(None), str, bool})


def decode_values(texts: Sequence[str | bytes]) -> list[RowValue]:
    """:func:`decode_value` of each text, in one pass where possible (the reader's hot path).

    Every text :func:`encode_value` writes, except a non-finite float, is JSON (or, empty,
    null) that parses to the same value, so str texts are parsed as one JSON array in C.
    orjson reads an integer beyond 64 bits as a float, which only a text of 20 characters or
    more can be; such rows, rows with a list or an object (whose insides may hold such
    integers), and anything unexpected are decoded one by one instead.
    """
    parts: list[Any] = [t or "null" for t in texts]  # bytes make join raise TypeError
    try:
        values = orjson.loads("[" + ",".join(parts) + "]")
    except (orjson.JSONDecodeError, TypeError):  # not JSON, or bytes
        values = None
    if values is not None and len(values) == len(texts):
        types = set(map(type, values))
        if types <= _DECODED_TYPES and (float not in types or max(map(len, texts)) < 20):
            return values
    return [decode_value(t) for t in texts]


def decode_rows(replies: Sequence[Sequence[str]]) -> list[dict[str, RowValue]]:
    """Rows from HGETALL replies ``[field, value, field, value, ...]``: :func:`decode_values`
    over every value of every reply at once (one JSON parse for a batch read: 0.31 against
    0.57 ms per 100 rows of the built-in features), else row by row."""
    texts = [text for reply in replies for text in reply[1::2]]
    values = decode_values(texts) if texts else []
    rows = []
    start = 0
    for reply in replies:
        end = start + len(reply) // 2
        rows.append(dict(zip(reply[::2], values[start:end], strict=True)))
        start = end
    return rows


def decode_row(fields: Mapping[bytes | str, bytes | str]) -> dict[str, RowValue]:
    """Decode a hash read back from Redis into ``{field: value}``."""
    names = [k.decode() if isinstance(k, bytes) else k for k in fields]
    texts = [v.decode() if isinstance(v, bytes) else v for v in fields.values()]
    return dict(zip(names, decode_values(texts), strict=True))


def point_in_time_key(prefix: str, entity: str, event_id: str) -> str:
    """The Redis key of the row of ``entity`` captured for scored event ``event_id``."""
    return f"{prefix}_pit:{entity}:{event_id}"


_PIT_ENCODER = msgspec.msgpack.Encoder()
_PIT_DECODER = msgspec.msgpack.Decoder()


def encode_point_in_time(entity_id: str, row: Mapping[str, RowValue] | None) -> bytes:
    """The value of a point-in-time key (layout above)."""
    return _PIT_ENCODER.encode({"id": entity_id, "row": row})


def decode_point_in_time(data: bytes) -> tuple[str, dict[str, RowValue] | None]:
    """Inverse of :func:`encode_point_in_time`: the entity id and its row (None: no row);
    ValueError for a value it never writes."""
    try:
        value = _PIT_DECODER.decode(data)
        entity_id, row = value["id"], value["row"]
    except (msgspec.DecodeError, TypeError, KeyError) as exc:
        raise ValueError(f"not a point-in-time row ({exc})") from None
    if not isinstance(entity_id, str) or not (row is None or isinstance(row, dict)):
        raise ValueError("not a point-in-time row (id or row of the wrong type)")
    return entity_id, row


@dataclass(frozen=True)
class Score:
    """A model's latest score of one user, as the scoring job writes it and the reader serves it.

    ``version`` is the model version, ``variant`` the experiment arm that served it,
    ``event_id`` the event that triggered the scoring, ``scored_at`` the wall-clock time (epoch
    ms) of the scoring, ``as_of`` the event time (epoch ms) of the feature row it scored and
    ``experiment`` the registry's experiment record that routed it (None: the settings' split).
    """

    model: str
    version: int
    variant: str
    score: float
    event_id: str
    scored_at: int
    as_of: int
    experiment: str | None = field(default=None, kw_only=True)


def score_key(prefix: str, user_id: str, *, cluster: bool = False) -> str:
    """The Redis key of a user's score hash (one field per model; ``cluster``: hash-tagged,
    in the slot of the user's row)."""
    return f"{prefix}score:{hash_tagged(user_id, cluster)}"


def encode_score(score: Score) -> str:
    """The JSON text stored in the model's field (ValueError for an empty model or bad score)."""
    if not score.model:
        raise ValueError("a score needs a model name")
    if not math.isfinite(score.score):
        raise ValueError(f"{score.model}: score {score.score!r} is not a finite number")
    # vars(), not asdict(): asdict deep-copies every field, most of what this call cost.
    return json.dumps(vars(score), separators=(",", ":"))


def decode_score(text: str | bytes) -> Score:
    """Inverse of :func:`encode_score` (ValueError when a field is missing or mistyped)."""
    data = json.loads(text)
    try:
        return Score(model=str(data["model"]), version=int(data["version"]),
                     variant=str(data["variant"]), score=float(data["score"]),
                     event_id=str(data["event_id"]), scored_at=int(data["scored_at"]),
                     as_of=int(data["as_of"]), experiment=None if data.get("experiment") is None
                     else str(data["experiment"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a stored score: {text!r} ({exc})") from None


def upsert_score_args(score: Score, ttl_seconds: int) -> list[str]:
    """ARGV for :data:`UPSERT_SCORE_LUA` (KEYS = ``[score_key(prefix, user_id)]``), in the order
    its header documents: model, the score's JSON, as_of, scored_at, ttl."""
    return [score.model, encode_score(score), str(score.as_of), str(score.scored_at),
            str(ttl_seconds)]


def decode_scores(fields: Mapping[bytes | str, bytes | str]) -> dict[str, Score]:
    """Decode a score hash read back from Redis into ``{model: Score}``."""
    return {(k.decode() if isinstance(k, bytes) else k): decode_score(v)
            for k, v in fields.items()}
