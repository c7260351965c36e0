"""Events on their way to the feature job's state shards.

The sharding stage (the first Python stage of the feature job) decodes a batch of source
frames, groups the events by state shard and sends each group to its shard as one
:class:`ShardRecord`. The frame rides along with each event, so a late or expired event still
goes to the DLQ with its original bytes and Kafka coordinates.

A shard record is bytes in this layout (big-endian), written by :func:`encode_shard_record` and
read back by :func:`decode_shard_record`::

    i32 shard key | i64 newest event time | events (a pickle; empty for a checkpoint marker)

The Java side reads only the header (``ShardRecords.java``: the record's event time for the
watermark, its shard key for the key-by), so neither crosses back into Python. The events are
a pickle of plain tuples: both ends run the same code and Python, the record never leaves the
job, and plain tuples pickle several times faster than named ones. A checkpoint marker (an
empty batch, :data:`udfs.wire.frames.CHECKPOINT_MARKER`) is passed on to every shard as a
record without events whose time never moves the watermark.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Iterable, Sequence
from functools import partial
from typing import NamedTuple

from featurestream.udfs.contract.codec import EventDecoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.windows import TYPE_INDEX
from featurestream.udfs.wire.dead_letters import Problem
from featurestream.udfs.wire.frames import source_value


class ShardEvent(NamedTuple):
    """What a state shard needs of an event, and the source frame it came in."""

    user_id: str
    ts: int
    type_index: int  # index in EVENT_TYPES
    amount: float | None
    item_id: str | None
    frame: bytes  # the source frame (for the DLQ)


class ShardRecord(NamedTuple):
    """The events of one shard from one batch, or a checkpoint marker (no events)."""

    key: int  # the shard's Flink key (``ShardKeys.java``)
    newest_ts: int  # the record's event time
    events: list[ShardEvent]

    @property
    def is_checkpoint_marker(self) -> bool:
        """True for the marker every shard gets just before a checkpoint barrier."""
        return not self.events


MARKER_TIME = -(2**63)  # a checkpoint marker's event time: never moves the watermark
_HEADER = struct.Struct(">iq")
_as_shard_event = partial(tuple.__new__, ShardEvent)  # from a plain tuple, without a Python call


def shard_of(user_id: str, shards: int) -> int:
    """The state shard of a user: stable across processes, runs and Python versions."""
    return zlib.crc32(user_id.encode()) % shards


def group_by_shard(frames: Iterable[bytes], decoder: EventDecoder, shards: int
                   ) -> tuple[dict[int, list[ShardEvent]], list[tuple[bytes, Problem]]]:
    """Decode source frames; events grouped by shard (in arrival order), and the failures."""
    groups: dict[int, list[ShardEvent]] = {}
    failed: list[tuple[bytes, Problem]] = []
    decode = decoder.decode
    for frame in frames:
        event = decode(source_value(frame))
        if not isinstance(event, Event):
            failed.append((frame, event))
            continue
        user_id = event.user_id
        shard = shard_of(user_id, shards)
        group = groups.get(shard)
        if group is None:
            group = groups[shard] = []
        group.append(ShardEvent(user_id, event.ts, TYPE_INDEX[event.event_type], event.amount,
                                event.item_id, frame))
    return groups, failed


def shard_record(key: int, events: Sequence[ShardEvent]) -> ShardRecord:
    """The record of ``events`` (not empty) for the shard with Flink key ``key``."""
    return ShardRecord(key, max(event.ts for event in events), list(events))


def checkpoint_marker(key: int) -> ShardRecord:
    """The checkpoint marker for the shard with Flink key ``key``."""
    return ShardRecord(key, MARKER_TIME, [])


def encode_shard_record(record: ShardRecord) -> bytes:
    """The record in the layout of the module docstring."""
    header = _HEADER.pack(record.key, record.newest_ts)
    if not record.events:
        return header
    return header + pickle.dumps(list(map(tuple, record.events)), protocol=5)


def decode_shard_record(data: bytes) -> ShardRecord:
    """Inverse of :func:`encode_shard_record`."""
    key, newest_ts = _HEADER.unpack_from(data)
    if len(data) == _HEADER.size:
        return ShardRecord(key, newest_ts, [])
    events = pickle.loads(memoryview(data)[_HEADER.size:])
    return ShardRecord(key, newest_ts, list(map(_as_shard_event, events)))
