"""Events on their way to the feature job's state shards.

The first Python stage of the feature job decodes a batch of source frames and groups the
events by state shard; each group travels to its shard as one record, a pickle of
:data:`ShardEvent` tuples (both ends run the same code and Python, and the record never leaves
the job). The frame rides along, so a late or expired event still goes to the DLQ with its
original bytes and Kafka coordinates. A checkpoint marker (an empty batch) is passed on to
every shard as an empty record (:data:`udfs.kafka_framing.CHECKPOINT_MARKER`).
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable

from featurestream.udfs.contract.codec import DecodeError, EventDecoder
from featurestream.udfs.features.windows import TYPE_INDEX
from featurestream.udfs.wire.frames import source_value

# (user_id, ts, event type index, amount, item_id, source frame)
ShardEvent = tuple[str, int, int, float | None, str | None, bytes]


def shard_of(user_id: str, shards: int) -> int:
    """The state shard of a user: stable across processes, runs and Python versions."""
    return zlib.crc32(user_id.encode()) % shards


def group_by_shard(frames: Iterable[bytes], decoder: EventDecoder, shards: int
                   ) -> tuple[dict[int, list[ShardEvent]], list[tuple[bytes, DecodeError]]]:
    """Decode source frames; events grouped by shard (in arrival order), and the failures."""
    groups: dict[int, list[ShardEvent]] = {}
    failed: list[tuple[bytes, DecodeError]] = []
    decode = decoder.decode
    for frame in frames:
        event = decode(source_value(frame))
        if isinstance(event, DecodeError):
            failed.append((frame, event))
            continue
        user_id = event.user_id
        shard = shard_of(user_id, shards)
        group = groups.get(shard)
        if group is None:
            group = groups[shard] = []
        group.append((user_id, event.ts, TYPE_INDEX[event.event_type], event.amount,
                      event.item_id, frame))
    return groups, failed


def pack(events: list[ShardEvent]) -> bytes:
    """One shard's events as one record."""
    return pickle.dumps(events, protocol=5)


def unpack(record: bytes) -> list[ShardEvent]:
    """Inverse of :func:`pack`."""
    return pickle.loads(record)
