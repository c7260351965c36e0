"""Events on their way to the feature job's state shards.

The sharding stage (the first Python stage of the feature job) decodes a batch of source
frames with the decoder of their topic's source, and, for each entity a group computes from that
source, sends the event to the entity's state shard, grouped per shard (a
:class:`ShardGroup`); the groups of the shards one keyed subtask owns travel together, as one
:class:`SubtaskRecord` (:mod:`udfs.features.placement`). An event whose entity key is null does
not count for that entity (an item entity skips events without an item). The frame rides along
with each event, so a late or expired event still goes to the DLQ with its original bytes and
Kafka coordinates.

An event stamped more than ``max_future_skew_ms`` ahead of the wall clock (a producer's bad
clock, microseconds taken for milliseconds) goes to the failures as a ``FutureEvent`` and never
reaches a shard record: a record's event time drives the watermark, and one event in the year
3000 would otherwise put every later valid event behind it, as late.

A subtask record is bytes in this layout (big-endian), written by :func:`encode_subtask_record`
and read back by :func:`decode_subtask_record`::

    i32 routing key | i64 event time | groups (a pickle of [(shard key, [event, ...]), ...])

The routing key is the shard key of the record's first group: it sends the record to the keyed
subtask that owns all of its shards. The Java side reads only the header (``ShardRecords.java``:
the record's event time for the watermark, its routing key for the key-by), so neither crosses
back into Python. The events are plain tuples: both ends run the same code and Python, the
record never leaves the job, and plain tuples pickle several times faster than named ones. A
checkpoint marker (an empty batch, :data:`udfs.wire.frames.CHECKPOINT_MARKER`) is passed on to
every shard as a group without events, one record per keyed subtask. A record's event time is
the sharding subtask's
(:mod:`udfs.features.event_time`: its slowest partition's), markers included, or
:data:`MARKER_TIME`, which never moves the watermark.
"""

from __future__ import annotations

import pickle
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

from featurestream.udfs.contract.records import RecordDecoding, entity_id
from featurestream.udfs.features.plan import EntityPlan
from featurestream.udfs.features.point_in_time import EVENT_ID_FIELD, EVENT_TYPE_FIELD, ScoredEvents
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage
from featurestream.udfs.wire.frames import source_topic_and_value


class ShardEvent(NamedTuple):
    """What a state shard needs of an event, and the source frame it came in."""

    entity: str  # the entity's name
    key: str  # ``<entity>:<id>``: the state key, and the Redis key after the prefix
    ts: int  # event time, epoch ms
    source: int  # the source's number in the entity's plan
    values: tuple[Any, ...]  # the fields the entity's plan reads (EntityPlan.fields[source])
    frame: bytes  # the source frame (for the DLQ)
    # A scored event's id: the shard captures the entity's row before counting it
    # (:mod:`udfs.features.point_in_time`); None for every other event.
    scored: str | None = None


class ShardGroup(NamedTuple):
    """The events of one shard from one batch, or its checkpoint marker (no events)."""

    key: int  # the shard's Flink key (``ShardKeys.java``)
    events: list[ShardEvent]

    @property
    def is_checkpoint_marker(self) -> bool:
        """True for the marker every shard gets just before a checkpoint barrier."""
        return not self.events


class SubtaskRecord(NamedTuple):
    """The groups of one batch for the shards of one keyed subtask (or their markers)."""

    key: int  # the Flink key that routes it: its first group's shard key
    newest_ts: int  # the record's event time
    groups: list[ShardGroup]


MARKER_TIME = -(2**63)  # an event time that never moves the watermark
_HEADER = struct.Struct(">iq")
_as_shard_event = partial(tuple.__new__, ShardEvent)  # from a plain tuple, without a Python call


DEFAULT_MAX_FUTURE_SKEW_MS = 3_600_000  # FEATURESTREAM_MAX_FUTURE_SKEW_MS's default


def wall_clock_ms() -> int:
    """The wall clock, epoch ms: the router's default clock."""
    return time.time_ns() // 1_000_000


def _utc(ms: int) -> str:
    """``ms`` as an ISO 8601 UTC time, for messages (past year 9999, says so)."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return "out of the calendar's range"


def future_event(ts: int, now: int, max_future_skew_ms: int) -> Problem:
    """Why an event stamped more than ``max_future_skew_ms`` after ``now`` is refused."""
    return Problem(
        Stage.WINDOW, ErrorClass.FUTURE_EVENT,
        f"event time {ts} ({_utc(ts)}) is {ts - now} ms ahead of the wall clock {now} "
        f"({_utc(now)}), more than FEATURESTREAM_MAX_FUTURE_SKEW_MS ({max_future_skew_ms} "
        "ms); counted, it would move the watermark past every later event. Check the "
        "producer's clock and that the timestamp is in epoch milliseconds")


def shard_of(key: str, shards: int) -> int:
    """The state shard of a state key: stable across processes, runs and Python versions."""
    return zlib.crc32(key.encode()) % shards


PROBE = -1  # the source number of a probe: a scored event's visit to an entity it does not feed


class _EntityRoute(NamedTuple):
    """What the router does for one entity of a source (plain values, read per event)."""

    entity: str
    prefix: str  # "<entity>:", the state key's start
    key: str | None  # the key field, for an entity with one (the fast path)
    keys: tuple[str, ...]
    source: int  # PROBE: the entity only takes the source's scored events, as probes
    pick: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # the fields the plan reads


class _SourceRoute(NamedTuple):
    decode: Callable[[bytes], Mapping[str, Any] | Problem]
    timestamp: str
    entities: tuple[_EntityRoute, ...]
    scored: frozenset[str]  # the scored event types of this source (none for most)


def _route(plan: EntityPlan, source: int,
           pick: Callable[[Mapping[str, Any]], tuple[Any, ...]]) -> _EntityRoute:
    keys = plan.entity.keys
    return _EntityRoute(plan.entity.name, f"{plan.entity.name}:",
                        keys[0] if len(keys) == 1 else None, keys, source, pick)


def _no_values(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """A probe's values: it counts nothing."""
    return ()


def _picker(fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """``record -> tuple of fields`` (decoded records hold every declared field)."""
    if len(fields) > 1:
        return itemgetter(*fields)
    if fields:
        (name,) = fields
        return lambda record: (record[name],)
    return lambda record: ()


class EventRouter:
    """Decodes frames and groups their events by state shard, for every entity they feed, and
    sends each scored event to every entity it could be scored with."""

    def __init__(self, plans: Mapping[str, EntityPlan], decoders: Mapping[str, RecordDecoding],
                 shards: int, *, scored: ScoredEvents | None = None,
                 max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        """``decoders`` by source name (one per source of the plans); events more than
        ``max_future_skew_ms`` ahead of ``clock()`` (epoch ms, read once per batch) fail.
        ``scored``: the events whose pre-event rows the shards capture; they also visit, as
        probes, the entities their source does not feed whose keys are all fields of it."""
        routes: dict[bytes, _SourceRoute] = {}
        for name, decoder in decoders.items():
            entities, source = [], None
            for plan in plans.values():
                for i, s in enumerate(plan.sources):
                    if s.name == name:
                        source = s
                        entities.append(_route(plan, i, _picker(plan.fields[i])))
            if source is None:
                continue
            types: frozenset[str] = frozenset()
            if scored is not None and scored.source == name:
                types = scored.types
                fed = {route.entity for route in entities}
                entities.extend(_route(plan, PROBE, _no_values) for plan in plans.values()
                                if plan.entity.name not in fed
                                and set(plan.entity.keys) <= set(source.field_types))
            routes[source.topic.encode()] = _SourceRoute(decoder.decode, source.timestamp,
                                                         tuple(entities), types)
        self._routes = routes
        self._shards = shards
        self._max_future_skew_ms = max_future_skew_ms
        self._clock = clock
        self.partition_newest: dict[bytes, int] = {}  # of the last batch (group_by_shard)

    @property
    def topics(self) -> list[str]:
        """The topics the router reads."""
        return [t.decode() for t in self._routes]

    def group_by_shard(self, frames: Iterable[bytes]
                       ) -> tuple[dict[int, list[ShardEvent]], list[tuple[bytes, Problem]]]:
        """Decode source frames; events grouped by shard (in arrival order), and the failures.

        The hot path of the sharding stage: an entity with one key field is handled inline
        (:func:`entity_id` is the rule, called for several keys and to describe an empty key).
        An event after ``now + max_future_skew_ms`` (the clock read once per batch) fails.
        :attr:`partition_newest` then holds the newest event time of the batch per partition.
        """
        groups: dict[int, list[ShardEvent]] = {}
        failed: list[tuple[bytes, Problem]] = []
        newest: dict[bytes, int] = {}
        self.partition_newest = newest
        routes, shards, crc32 = self._routes, self._shards, zlib.crc32
        now = self._clock()
        latest = now + self._max_future_skew_ms
        for frame in frames:
            topic, raw = source_topic_and_value(frame)
            route = routes.get(topic)
            if route is None:
                failed.append((frame, Problem(
                    Stage.DECODE, ErrorClass.MALFORMED_RECORD,
                    f"topic {topic.decode(errors='replace')!r} is not the topic of any source")))
                continue
            record = route.decode(raw)
            if isinstance(record, Problem):
                failed.append((frame, record))
                continue
            ts = record[route.timestamp]
            if ts > latest:
                failed.append((frame, future_event(ts, now, self._max_future_skew_ms)))
                continue
            partition = frame[:len(topic) + 6]  # topic length, topic, partition
            if ts > newest.get(partition, MARKER_TIME):
                newest[partition] = ts
            scored = (record[EVENT_ID_FIELD] if route.scored
                      and record[EVENT_TYPE_FIELD] in route.scored else None)
            routed = []
            problem: Problem | None = None
            for target in route.entities:
                if target.source == PROBE and scored is None:
                    continue
                if target.key is not None:
                    ident = record.get(target.key)
                    if ident is None:
                        continue  # the event does not count for this entity
                    if type(ident) is not str:
                        ident = str(ident)
                    elif not ident:
                        if target.source == PROBE:
                            continue  # nothing to probe; the entities it feeds decide
                        empty = entity_id(record, target.keys)  # the rule's own message
                        assert isinstance(empty, Problem)
                        problem = empty
                        break
                else:
                    ident = entity_id(record, target.keys)
                    if ident is None:
                        continue
                    if isinstance(ident, Problem):
                        if target.source == PROBE:
                            continue
                        problem = ident
                        break
                key = target.prefix + ident
                routed.append(_as_shard_event((target.entity, key, ts, target.source,
                                               target.pick(record), frame, scored)))
            if problem is not None:
                failed.append((frame, problem))
                continue
            for event in routed:
                shard = crc32(event.key.encode()) % shards
                group = groups.get(shard)
                if group is None:
                    group = groups[shard] = []
                group.append(event)
        return groups, failed


def subtask_record(groups: Sequence[ShardGroup], time: int | None = None) -> SubtaskRecord:
    """The record of ``groups`` (not empty, all of one keyed subtask); its event time is
    ``time`` (:class:`udfs.features.event_time.PartitionTime`), by default its newest event's."""
    if time is None:
        time = max(event.ts for group in groups for event in group.events)
    return SubtaskRecord(groups[0].key, time, list(groups))


def checkpoint_marker(keys: Sequence[int], time: int = MARKER_TIME) -> SubtaskRecord:
    """The checkpoint marker for the shards with Flink keys ``keys`` (all of one keyed
    subtask); its ``time`` (:class:`udfs.features.event_time.PartitionTime`) may move the
    watermark."""
    return SubtaskRecord(keys[0], time, [ShardGroup(key, []) for key in keys])


def encode_subtask_record(record: SubtaskRecord) -> bytes:
    """The record in the layout of the module docstring."""
    return _HEADER.pack(record.key, record.newest_ts) + pickle.dumps(
        [(key, list(map(tuple, events))) for key, events in record.groups], protocol=5)


def decode_subtask_record(data: bytes) -> SubtaskRecord:
    """Inverse of :func:`encode_subtask_record`."""
    key, newest_ts = _HEADER.unpack_from(data)
    groups = pickle.loads(memoryview(data)[_HEADER.size:])
    return SubtaskRecord(key, newest_ts, [ShardGroup(shard, list(map(_as_shard_event, events)))
                                          for shard, events in groups])
