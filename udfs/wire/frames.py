"""Binary frames that carry Kafka record metadata across the Java/Python boundary.

PyFlink's Kafka source and sink only pass record values. Two tiny Java classes
(``jobs/java``) frame the metadata into the bytes instead; this module is their Python twin.

Source frame (Java -> Python), all integers big-endian::

    u16 topic length | topic (UTF-8) | i32 partition | i64 offset | i64 timestamp | value bytes

Batch (Java -> Python; ``FrameBatcher`` packs consecutive source frames into one record)::

    (i32 frame length | source frame)*

An empty batch is the checkpoint marker (:data:`CHECKPOINT_MARKER`): ``FrameBatcher`` sends it
just before each checkpoint barrier.

Sink frame (Python -> Java)::

    u16 topic length | topic | i32 key length (-1 = null) | key
    | u16 header count | (u16 name length | name | i32 value length | value)* | value bytes
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_SOURCE_META = struct.Struct(">iqq")
CHECKPOINT_MARKER = b""
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_TIMESTAMP_AFTER_TOPIC = 2 + 4 + 8  # the topic's length prefix, the partition and the offset


@dataclass(frozen=True)
class SourceRecord:
    """A consumed Kafka record: where it came from and its original value bytes."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes


def encode_source_frame(topic: str, partition: int, offset: int, timestamp: int,
                        value: bytes) -> bytes:
    """Frame a consumed record (what the Java deserializer emits; used by tests)."""
    t = topic.encode()
    return _U16.pack(len(t)) + t + _SOURCE_META.pack(partition, offset, timestamp) + value


def decode_source_frame(frame: bytes) -> SourceRecord:
    """Split a source frame into its metadata and value."""
    (n,) = _U16.unpack_from(frame, 0)
    topic = frame[2:2 + n].decode()
    partition, offset, timestamp = _SOURCE_META.unpack_from(frame, 2 + n)
    return SourceRecord(topic, partition, offset, timestamp, frame[2 + n + _SOURCE_META.size:])


def source_value(frame: bytes) -> bytes:
    """The record value of a source frame, without decoding the rest (the hot path)."""
    return frame[2 + _U16.unpack_from(frame, 0)[0] + _SOURCE_META.size:]


def source_topic_and_value(frame: bytes) -> tuple[bytes, bytes]:
    """The topic (undecoded) and record value of a source frame (the hot path)."""
    n = _U16.unpack_from(frame, 0)[0]
    return frame[2:2 + n], frame[2 + n + _SOURCE_META.size:]


def source_timestamps(frames: Iterable[bytes]) -> list[int]:
    """The Kafka record timestamps of source frames, nothing else decoded (the hot path)."""
    unpack = _I64.unpack_from
    return [unpack(f, _TIMESTAMP_AFTER_TOPIC + (f[0] << 8 | f[1]))[0] for f in frames]


def encode_batch(frames: Sequence[bytes]) -> bytes:
    """Pack frames as ``FrameBatcher`` does (used by tests)."""
    return b"".join(_I32.pack(len(f)) + f for f in frames)


def split_batch(batch: bytes) -> list[bytes]:
    """The frames of a batch, in order."""
    frames = []
    pos, end = 0, len(batch)
    unpack = _I32.unpack_from
    while pos < end:
        (n,) = unpack(batch, pos)
        pos += 4
        frames.append(batch[pos:pos + n])
        pos += n
    return frames


def encode_sink_frame(topic: str, key: bytes | None, value: bytes,
                      headers: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """Frame a record to produce: topic, key, headers and value."""
    t = topic.encode()
    parts = [_U16.pack(len(t)), t]
    if key is None:
        parts.append(_I32.pack(-1))
    else:
        parts += [_I32.pack(len(key)), key]
    parts.append(_U16.pack(len(headers)))
    for name, header_value in headers:
        n = name.encode()
        parts += [_U16.pack(len(n)), n, _I32.pack(len(header_value)), header_value]
    parts.append(value)
    return b"".join(parts)


def decode_sink_frame(frame: bytes) -> tuple[str, bytes | None, list[tuple[str, bytes]], bytes]:
    """Inverse of :func:`encode_sink_frame` (what the Java serializer reads; used by tests)."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        chunk = frame[pos:pos + n]
        pos += n
        return chunk

    topic = take(_U16.unpack(take(2))[0]).decode()
    (key_len,) = _I32.unpack(take(4))
    key = None if key_len < 0 else take(key_len)
    headers = []
    for _ in range(_U16.unpack(take(2))[0]):
        name = take(_U16.unpack(take(2))[0]).decode()
        headers.append((name, take(_I32.unpack(take(4))[0])))
    return topic, key, headers, frame[pos:]
