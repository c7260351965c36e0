"""The reader's HTTP contract as types: one definition for validation, encoding and the document.

A batch body is decoded and checked by msgspec into :class:`BatchRequest` (the user routes) or
:class:`EntityBatchRequest` (any entity), narrowed to the entity's feature names and this
reader's batch size by :class:`ReaderContract`; every JSON answer is one of these structs,
encoded by msgspec; and ``/openapi.json`` is generated from the same types
(:mod:`featurestream.serving.openapi`). A field, limit or description is written here once.
The user routes (``/v1/features/{user_id}``, ``/v1/features/batch``) are the entity routes of
``user`` with their earlier shapes (``user_id``, ``user_ids``), kept as they were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from featurestream.udfs.store.redis_layout import Score

MAX_USER_ID_LENGTH = 128
# ``$(?!\n)``: Python's ``$`` also matches before a final newline; so written, the pattern means
# the same to Python (msgspec, the path check) and to JSON Schema (ECMA-262) readers.
USER_ID_PATTERN = rf"^[A-Za-z0-9._@:-]{{1,{MAX_USER_ID_LENGTH}}}$(?!\n)"
USER_ID_RULE = f"1-{MAX_USER_ID_LENGTH} characters among letters, digits and . _ - @ :"

MAX_ENTITY_ID_LENGTH = 256
# An entity id of several key fields joins their values with "|" (udfs/store/redis_layout.py).
ENTITY_ID_PATTERN = rf"^[A-Za-z0-9._@:|-]{{1,{MAX_ENTITY_ID_LENGTH}}}$(?!\n)"
ENTITY_ID_RULE = (f"1-{MAX_ENTITY_ID_LENGTH} characters among letters, digits and . _ - @ : | "
                  "(| joins the values of an entity's several keys)")
USER_ENTITY = "user"  # the entity of the user routes

UserId = Annotated[str, Meta(pattern=USER_ID_PATTERN, description=USER_ID_RULE)]
EntityId = Annotated[str, Meta(pattern=ENTITY_ID_PATTERN, description=ENTITY_ID_RULE)]
NamesQuery = Annotated[str, Meta(description="Comma-separated feature names (default: all).")]
AsOf = Annotated[int, Meta(description="Event time (epoch ms) the values are valid at.")]
Staleness = Annotated[int, Meta(description="Read time minus as_of, in ms (at least 0).")]
UpdatedAt = Annotated[int, Meta(description="Wall-clock time (epoch ms) the row was written.")]
SinceLastEvent = Annotated[float, Meta(description="Read time minus last_event_ts, in seconds.")]
Scalar = int | float | str | bool | None
FeatureValues = Annotated[dict[str, Scalar | list[Scalar]], Meta(
    description="Feature name to value (null = no value, e.g. a ratio over zero events; a "
                "list for last_n, newest first).")]
MAX_STALENESS_MS = 86_400_000  # a day: the most a caller may accept of a row served from cache
MaxStalenessMs = Annotated[int, Meta(
    ge=0, le=MAX_STALENESS_MS,
    description="While Redis is unavailable, answer with the rows this reader last read from "
                "Redis if it read them at most this many ms ago (marked stale: true); without "
                "it, such a request gets a 503.")]
Stale = Annotated[bool, Meta(description="Present (true) only when Redis was unavailable and "
                                         "the row is this reader's last read of it.")]
CacheAge = Annotated[int, Meta(description="With stale: ms since this reader last read the row "
                                           "from Redis (at most max_staleness_ms), the most it "
                                           "can lag Redis.")]
WarmingUp = Annotated[dict[str, int | None], Meta(
    description="Features whose window does not yet cover its full length, each with the "
                "event time (epoch ms) it will, or null; absent when none is warming up.")]


def body_limit(max_batch_size: int, max_id_length: int = MAX_USER_ID_LENGTH) -> int:
    """The largest batch body accepted: room for the ids, the names and some whitespace."""
    return 65_536 + max_batch_size * (max_id_length + 128)


class BatchRequest(Struct, forbid_unknown_fields=True):
    """Many users' features: results come back in the order of ``user_ids``; ``names`` selects
    features (all when absent, null or empty); ``max_staleness_ms`` allows rows from cache while
    Redis is unavailable."""

    user_ids: list[str]
    names: list[str] | None = None
    max_staleness_ms: MaxStalenessMs | None = None


class Features(Struct):
    """A user's features (all, or the requested names) with the row's freshness."""

    user_id: str
    as_of: AsOf | UnsetType | None = UNSET
    updated_at: UpdatedAt | UnsetType | None = UNSET
    staleness_ms: Staleness | UnsetType | None = UNSET
    seconds_since_last_event: SinceLastEvent | UnsetType | None = UNSET
    features: FeatureValues | UnsetType = UNSET
    warming_up: WarmingUp | UnsetType = UNSET
    stale: Stale | UnsetType = UNSET
    cache_age_ms: CacheAge | UnsetType = UNSET


class BatchResult(Features):
    """One requested user: its features, or ``found`` false and only its ``user_id``."""

    found: bool = True


class BatchResponse(Struct):
    """One result per requested id, in request order."""

    results: list[BatchResult]


class EntityBatchRequest(Struct, forbid_unknown_fields=True):
    """Many instances of one entity: results come back in the order of ``ids``; ``names``
    selects features of the entity (all when absent, null or empty); ``max_staleness_ms``
    allows rows from cache while Redis is unavailable."""

    ids: list[str]
    names: list[str] | None = None
    max_staleness_ms: MaxStalenessMs | None = None


class EntityFeatures(Struct):
    """An entity instance's features (all, or the requested names) with the row's freshness."""

    entity: str
    id: str
    as_of: AsOf | UnsetType | None = UNSET
    updated_at: UpdatedAt | UnsetType | None = UNSET
    staleness_ms: Staleness | UnsetType | None = UNSET
    seconds_since_last_event: SinceLastEvent | UnsetType | None = UNSET
    features: FeatureValues | UnsetType = UNSET
    warming_up: WarmingUp | UnsetType = UNSET
    stale: Stale | UnsetType = UNSET
    cache_age_ms: CacheAge | UnsetType = UNSET


class EntityBatchResult(EntityFeatures):
    """One requested instance: its features, or ``found`` false and only its ids."""

    found: bool = True


class EntityBatchResponse(Struct):
    """One result per requested id, in request order."""

    results: list[EntityBatchResult]


@dataclass(frozen=True)
class ServedScore(Score):
    """A model's latest score of the user as the scoring job stored it (``variant``: the
    experiment arm that served it, ``event_id``: the event scored, ``scored_at``: wall-clock
    epoch ms of the scoring), with its staleness at read time."""

    staleness_ms: Staleness


class Scores(Struct):
    """A user's latest score per model; ``as_of`` is the newest one's."""

    user_id: str
    as_of: AsOf
    staleness_ms: Staleness
    scores: Annotated[dict[str, ServedScore], Meta(description="Model name to its latest score.")]


class Status(Struct):
    """A probe's answer."""

    status: str


class ErrorBody(Struct):
    """What went wrong: a machine-readable code and a message saying how to fix it."""

    error: Annotated[str, Meta(description="Machine-readable code.")]
    message: str
    valid: Annotated[list[str], Meta(
        description="The valid feature names (unknown_feature) or entities "
                    "(unknown_entity).")] | UnsetType = UNSET
    limit: Annotated[int, Meta(description="The limit exceeded (413).")] | UnsetType = UNSET


def _names_type(feature_names: Sequence[str]) -> Any:
    """The type of a ``names`` list: the entity's names (any string if it has none)."""
    return Literal.__getitem__(tuple(feature_names)) if feature_names else str


class EntityContract:
    """One entity's feature names and its batch body type, narrowed to them and the limit.

    :attr:`batch_request` is :class:`EntityBatchRequest` with those limits in its field types,
    so the decoder enforces exactly what the entity's names and the reader's limit allow.
    """

    def __init__(self, entity: str, feature_names: Sequence[str], max_batch_size: int) -> None:
        self.entity = entity
        self.feature_names = tuple(feature_names)
        self.batch_request = cast(type[EntityBatchRequest], msgspec.defstruct(
            "EntityBatchRequest", [
                ("ids", Annotated[list[EntityId], Meta(min_length=1, max_length=max_batch_size)]),
                ("names", list[_names_type(feature_names)] | None, None),  # type: ignore[misc]
            ], bases=(EntityBatchRequest,), forbid_unknown_fields=True))
        self.batch_request.__doc__ = EntityBatchRequest.__doc__
        self.batch_decoder = msgspec.json.Decoder(self.batch_request)


class ReaderContract:
    """The contract with this reader's definitions and settings: each entity's feature names
    (``entities``, in declaration order) and the batch size.

    :attr:`batch_request` is :class:`BatchRequest` with the user's names and the limit in its
    field types, so the decoder enforces exactly what the document shows; :attr:`entities` has
    the same for every entity.
    """

    def __init__(self, entities: Mapping[str, Sequence[str]], max_batch_size: int) -> None:
        self.entities = {name: EntityContract(name, names, max_batch_size)
                         for name, names in entities.items()}
        self.feature_names = tuple(entities.get(USER_ENTITY, ()))  # the user routes'
        self.max_batch_size = max_batch_size
        self.max_body_bytes = body_limit(max_batch_size)
        self.max_entity_body_bytes = body_limit(max_batch_size, MAX_ENTITY_ID_LENGTH)
        self.entity_names = tuple(entities)
        self.batch_request = cast(type[BatchRequest], msgspec.defstruct(
            "BatchRequest", [
                ("user_ids", Annotated[list[UserId], Meta(min_length=1,
                                                          max_length=max_batch_size)]),
                ("names", list[_names_type(self.feature_names)] | None,  # type: ignore[misc]
                 None),
            ], bases=(BatchRequest,), forbid_unknown_fields=True))
        self.batch_request.__doc__ = BatchRequest.__doc__
        self.batch_decoder = msgspec.json.Decoder(self.batch_request)
        # The document's entity batch body: any entity's names (each route checks its own).
        self.entity_batch_request = cast(type[EntityBatchRequest], msgspec.defstruct(
            "EntityBatchRequest", [
                ("ids", Annotated[list[EntityId], Meta(min_length=1, max_length=max_batch_size)]),
                ("names", list[str] | None, None),
            ], bases=(EntityBatchRequest,), forbid_unknown_fields=True))
        self.entity_batch_request.__doc__ = EntityBatchRequest.__doc__
