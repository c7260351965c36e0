"""The contract of ``POST /v1/predict`` and ``/v1/predict/batch``: msgspec Structs whose types
hold the rules (id patterns, event types, finite non-negative amounts), so the decoder enforces
what the OpenAPI document shows."""

from __future__ import annotations

from typing import Annotated, Literal, cast

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from featurestream.serving.contract import AsOf, EntityId, Staleness, UserId
from featurestream.udfs.scoring.request_scorer import Fallback

PREDICT_BODY_LIMIT = 65_536  # one request: its fields and a context of a few KB
PREDICT_ITEM_BYTES = 2_048  # room per request in a batch body

# The event contract's types (udfs.contract.events.EVENT_TYPES; a unit test keeps them equal).
EventType = Literal["view", "click", "add_to_cart", "purchase"]
FallbackLevel = Annotated[Fallback, Meta(
    description="How degraded the answer is: none; cached_features (Redis could not answer, "
                "the reader's last row was used, within max_staleness_ms); defaults (a value "
                "was missing -- no row, or null -- and the model's default was used); "
                "fallback_model (the version routed to failed to predict or its circuit "
                "breaker is open: the experiment's other arm scored it, named by version and "
                "variant; an entity only that arm reads was not read, so its features took "
                "that version's defaults).")]
Source = Annotated[Literal["redis", "cache"], Meta(
    description="Where the row came from: Redis now, or the reader's cache while Redis was "
                "unavailable.")]
Amount = Annotated[float, Meta(ge=0, description="A finite number >= 0 (a purchase needs one).")]
EpochMs = Annotated[int, Meta(ge=0, description="Event time, epoch ms (default: now).")]
ModelName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_]{1,100}$",
                                description="A model in the registry (default: the reader's "
                                            "FEATURESTREAM_MODEL_NAME).")]
Context = Annotated[dict[Annotated[str, Meta(max_length=64)],
                         Annotated[str, Meta(max_length=1_024)]],
                    Meta(max_length=32, description="The event's context: up to 32 string "
                         "pairs, keys up to 64 characters, values up to 1,024.")]
MaxStaleness = Annotated[int, Meta(ge=0, description=(
    "How old (ms since read from Redis) a cached row may be when Redis cannot answer; absent: "
    "no cached rows (503 while Redis is unavailable)."))]


class PredictRequest(Struct, forbid_unknown_fields=True):
    """An event to score now, as the scoring job would score it: the user, the fields the
    model's features read (the amount, the item for ``item.*`` features, the time for
    ``hour_of_day``), and optionally the model and the staleness allowed if Redis is down.
    ``type`` and ``event_type`` are the same field (default: purchase)."""

    user_id: UserId
    type: EventType | None = None
    event_type: EventType | None = None
    item_id: EntityId | None = None
    amount: Amount | None = None
    ts: EpochMs | None = None
    context: Context | None = None
    event_id: Annotated[str, Meta(min_length=1, max_length=256, description=(
        "Named in messages only (default: request)."))] | None = None
    model: ModelName | None = None
    max_staleness_ms: MaxStaleness | None = None


class PredictBatchRequest(Struct, forbid_unknown_fields=True):
    """Many events, answered in order, with one read of every row they need."""

    requests: Annotated[list[PredictRequest], Meta(min_length=1)]


def batch_request(max_batch_size: int) -> type[PredictBatchRequest]:
    """:class:`PredictBatchRequest` with the reader's batch limit in its type (what the decoder
    enforces and the document shows)."""
    limited = cast(type[PredictBatchRequest], msgspec.defstruct(
        "PredictBatchRequest", [("requests", Annotated[list[PredictRequest], Meta(
            min_length=1, max_length=max_batch_size)])],
        bases=(PredictBatchRequest,), forbid_unknown_fields=True))
    limited.__doc__ = PredictBatchRequest.__doc__
    return limited


class EntityRead(Struct):
    """The row a prediction read of one entity: its id (null: the event names none) and, if it
    had a row, the row's event time, staleness at read time and source."""

    id: str | None
    found: bool
    as_of: AsOf | None = None
    staleness_ms: Staleness | None = None
    source: Source | None = None
    cache_age_ms: Annotated[int | None, Meta(description=(
        "From the cache: ms since the row was read from Redis (the most it can lag Redis)."))
    ] = None


class Timing(Struct):
    """Server time spent, in ms: in all, reading rows, and in the model (assembly and
    predict)."""

    total_ms: float
    features_ms: float
    model_ms: float


class PredictResult(Struct):
    """A score and everything that made it."""

    score: float
    model: str
    version: int
    variant: Annotated[str, Meta(description="The experiment arm that served the user, or "
                                             "latest.")]
    experiment: Annotated[str | None, Meta(description="The registry's experiment id, when "
                                                       "one chose the variant.")]
    features: Annotated[dict[str, float], Meta(description="The values used, defaults filled "
                                                           "in, in the model's order.")]
    entities: Annotated[dict[str, EntityRead], Meta(description="Per entity the vector reads.")]
    as_of: Annotated[int | None, Meta(description="The oldest row's event time (epoch ms); "
                                                  "null when no row was found.")]
    staleness_ms: Annotated[int | None, Meta(description="The largest row staleness, ms.")]
    fallback: FallbackLevel


class PredictResponse(PredictResult):
    """``POST /v1/predict``'s answer."""

    timing: Timing


class BatchItemError(Struct):
    """A request of a batch that got no score: its index, the status it would have had alone,
    and why."""

    index: int
    status: int
    error: str
    message: str
    features: list[str] | UnsetType = UNSET


class PredictBatchResponse(Struct):
    """One result per request, in order (null where it failed; ``errors`` says why)."""

    results: list[PredictResult | None]
    errors: list[BatchItemError]
    timing: Timing
