"""Point in time: which features a scored event is scored (and trained) with. The one rule.

**The rule.** A scored event at event time ``T`` is scored with each of its entities' features
*as of T over the entity's events that precede it in the log*: every event of the entity the
feature job counted before it -- for an entity keyed like the topic (users, by default), exactly
its earlier events in its Kafka partition; offline, its earlier events in the input. The event
itself is never included (no label leakage), later events never are either, and windows are
advanced to ``T`` (what aged out by ``T`` is gone, with the windows' documented hop rounding).
An entity whose windows are all empty as of ``T`` (or with no earlier event) has no row: the
model's defaults apply. The captured row carries its ``as_of``: ``T``, unless an event of the
entity with a later time came first in the log (the producer sent it out of order), when the
row is as of that later time and says so. The same holds for a scored event that arrives behind
the watermark (late by more than ``FEATURESTREAM_MAX_OUT_OF_ORDERNESS_MS``), with one difference:
the watermark's expiries may already have aged the entity's windows past ``T``, and how far
depends on when the watermark moved, so only such a *late* capture can differ between two runs
of the feature job over the same log (it is flagged ``late``; ``featurestream verify`` counts
these apart). Every other capture is a function of the log alone.

Why the log and not event time: the feature job counts events as they arrive, accepting late
ones into past buckets; a window's buckets cannot give back "everything before ``T``" once a
later event is in them. Capturing the row before the event is counted is exact, costs one row
per scored event, and makes a score a function of the log alone -- not of how far the feature
job has got, as reading the latest row was. Replaying the same log gives the same rows.

Online, the feature job captures the row (:func:`row_before`) in the state shard, for every
event of the scored types of the built-in events source (:class:`ScoredEvents`) and for each
entity the model could read: those the source feeds, and -- as a probe that counts nothing --
every other entity whose keys are fields of the event. It writes the rows to Redis under the
event's id (:func:`udfs.store.redis_layout.point_in_time_key`) and the scoring job scores from
them. Offline, :mod:`udfs.offline.replay` runs the same router and shard over the log, so
training sets, backfills and ``featurestream verify`` follow this rule by construction.

An entity fed by more than one partition (an item bought by users on every partition) sees its
partitions interleaved as they arrive, so its rows for a scored event can differ by the events
in flight between two runs; ``featurestream verify`` counts such differences per feature.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from featurestream.udfs.contract.records import is_builtin
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.features.processor import EntityState, FeatureProcessor, Row

EVENT_TYPE_FIELD = "event_type"  # of the built-in events contract
EVENT_ID_FIELD = "event_id"


@dataclass(frozen=True)
class ScoredEvents:
    """Which events are scored: those of ``types`` from source ``source`` (the built-in events
    contract, the one the scoring job reads), identified by their ``event_id``."""

    source: str
    types: frozenset[str]


def scored_events(definitions: Definitions, types: Collection[str]) -> ScoredEvents | None:
    """The scored events of ``definitions``: the events of ``types`` from its built-in events
    source; None when no source reads the built-in contract (nothing can be scored)."""
    source = next((s for s in definitions.sources if is_builtin(s)), None)
    if source is None:
        return None
    return ScoredEvents(source.name, frozenset(types))


def row_before(processor: FeatureProcessor, state: EntityState | None, ts: int) -> Row | None:
    """The entity's row for an event at ``ts`` that is about to be counted (or probed): its
    windows advanced to ``ts``; None when it has no state or every window is empty."""
    if state is None:
        return None
    processor.advance(state, ts)
    if processor.is_empty(state):
        return None
    return processor.row(state)
