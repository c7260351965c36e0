"""The user event as the pipeline sees it (mirrors ``schemas/user_event.avsc``)."""

from __future__ import annotations

from typing import NamedTuple

# The symbols of the ``EventType`` enum in user_event.avsc, in funnel order (a unit test keeps
# the two equal).
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")


class Event(NamedTuple):
    """One decoded, validated user event; field names and order match the Avro record."""

    event_id: str
    user_id: str
    event_type: str
    item_id: str | None
    amount: float | None
    ts: int  # event time, epoch ms
    context: dict[str, str] | None
