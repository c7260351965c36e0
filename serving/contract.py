"""The reader's HTTP contract as types: one definition for validation, encoding and the document.

The batch body is decoded and checked by msgspec into :class:`BatchRequest` (narrowed to this
reader's feature names and batch size by :class:`ReaderContract`); every JSON answer is one of
these structs, encoded by msgspec; and ``/openapi.json`` is generated from the same types
(:mod:`featurestream.serving.openapi`). A field, limit or description is written here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, cast

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from featurestream.udfs.store.redis_layout import Score

MAX_USER_ID_LENGTH = 128
# ``$(?!\n)``: Python's ``$`` also matches before a final newline; so written, the pattern means
# the same to Python (msgspec, the path check) and to JSON Schema (ECMA-262) readers.
USER_ID_PATTERN = rf"^[A-Za-z0-9._@:-]{{1,{MAX_USER_ID_LENGTH}}}$(?!\n)"
USER_ID_RULE = f"1-{MAX_USER_ID_LENGTH} characters among letters, digits and . _ - @ :"

UserId = Annotated[str, Meta(pattern=USER_ID_PATTERN, description=USER_ID_RULE)]
NamesQuery = Annotated[str, Meta(description="Comma-separated feature names (default: all).")]
AsOf = Annotated[int, Meta(description="Event time (epoch ms) the values are valid at.")]
Staleness = Annotated[int, Meta(description="Read time minus as_of, in ms (at least 0).")]
UpdatedAt = Annotated[int, Meta(description="Wall-clock time (epoch ms) the row was written.")]
SinceLastEvent = Annotated[float, Meta(description="Read time minus last_event_ts, in seconds.")]
FeatureValues = Annotated[dict[str, float | None], Meta(
    description="Feature name to value (null = no value, e.g. a ratio over zero events).")]


def body_limit(max_batch_size: int) -> int:
    """The largest batch body accepted: room for the ids, the names and some whitespace."""
    return 65_536 + max_batch_size * (MAX_USER_ID_LENGTH + 128)


class BatchRequest(Struct, forbid_unknown_fields=True):
    """Many users' features: results come back in the order of ``user_ids``; ``names`` selects
    features (all when absent, null or empty)."""

    user_ids: list[str]
    names: list[str] | None = None


class Features(Struct):
    """A user's features (all, or the requested names) with the row's freshness."""

    user_id: str
    as_of: AsOf | UnsetType | None = UNSET
    updated_at: UpdatedAt | UnsetType | None = UNSET
    staleness_ms: Staleness | UnsetType | None = UNSET
    seconds_since_last_event: SinceLastEvent | UnsetType | None = UNSET
    features: FeatureValues | UnsetType = UNSET


class BatchResult(Features):
    """One requested user: its features, or ``found`` false and only its ``user_id``."""

    found: bool = True


class BatchResponse(Struct):
    """One result per requested id, in request order."""

    results: list[BatchResult]


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
        description="The valid feature names (unknown_feature).")] | UnsetType = UNSET
    limit: Annotated[int, Meta(description="The limit exceeded (413).")] | UnsetType = UNSET


class ReaderContract:
    """The contract with this reader's settings: its feature names and batch size.

    :attr:`batch_request` is :class:`BatchRequest` with those limits in its field types, so the
    decoder enforces exactly what the document shows.
    """

    def __init__(self, feature_names: tuple[str, ...], max_batch_size: int) -> None:
        self.feature_names = feature_names
        self.max_batch_size = max_batch_size
        self.max_body_bytes = body_limit(max_batch_size)
        feature_name = Literal.__getitem__(feature_names)
        self.batch_request = cast(type[BatchRequest], msgspec.defstruct(
            "BatchRequest", [
                ("user_ids", Annotated[list[UserId], Meta(min_length=1,
                                                          max_length=max_batch_size)]),
                ("names", list[feature_name] | None, None),  # type: ignore[valid-type]
            ], bases=(BatchRequest,), forbid_unknown_fields=True))
        self.batch_request.__doc__ = BatchRequest.__doc__
        self.batch_decoder = msgspec.json.Decoder(self.batch_request)
