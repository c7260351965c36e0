"""The scored events of a replay, matched with the rows captured for them.

:class:`~featurestream.udfs.offline.replay.Replay` captures, for each scored event, one row
per entity (``CapturedRow``: state key, event id, time, row or None) -- not the event's own
fields, which a training row needs too (its type, user, and the record features such as the
amount). Rather than decode every record twice, :class:`ScoredRecorder` wraps the scored
source's decoder: the replay's own decode of a scored event keeps its fields, and
:meth:`ScoredRecorder.events` pairs them with the captured rows, in log order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.records import RecordDecoding
from featurestream.udfs.features.processor import Row
from featurestream.udfs.features.shard import CapturedRow, entity_of
from featurestream.udfs.wire.dead_letters import Problem


class ScoredEvent(NamedTuple):
    """A scored event and its entities' rows as of just before it (an entity without a row,
    or that the event names no id of, is absent); ``late``: it arrived behind the watermark."""

    event: Event
    rows: dict[str, Row]
    late: bool = False


class ScoredRecorder:
    """A decoder of the scored source that also keeps the scored events it decoded, until
    :meth:`events` pairs them with their captured rows (call it after every fed batch)."""

    def __init__(self, inner: RecordDecoding, types: frozenset[str]) -> None:
        self._decode = inner.decode
        self._types = types
        self._decoded: dict[str, deque[dict[str, Any]]] = {}

    def decode(self, raw: bytes) -> dict[str, Any] | Problem:
        """The inner decoder's result; a scored event's fields are kept."""
        record = self._decode(raw)
        if type(record) is dict and record.get("event_type") in self._types:
            self._decoded.setdefault(record["event_id"], deque()).append(record)
        return record

    def events(self, captured: Iterable[CapturedRow]) -> Iterator[ScoredEvent]:
        """Each scored event of the batch whose rows were captured, in log order; forgets
        the rest (scored events that failed before reaching an entity)."""
        try:
            for event_id, ts, rows, late in _grouped(captured):
                pending = self._decoded.get(event_id)
                if not pending:
                    raise RuntimeError(f"captured rows for event {event_id!r} at {ts}, which "
                                       "the replay did not decode as a scored event")
                record = pending.popleft()
                yield ScoredEvent(Event._make(record.get(name) for name in Event._fields), rows,
                                  late)
        finally:
            self._decoded.clear()


def _grouped(captured: Iterable[CapturedRow]
             ) -> Iterator[tuple[str, int, dict[str, Row], bool]]:
    """Consecutive captured rows of one event (same id and time, each entity once) as
    ``(event id, ts, rows by entity, late)``; rows that are None are left out."""
    current: tuple[str, int] | None = None
    entities: set[str] = set()
    rows: dict[str, Row] = {}
    late = False
    for row in captured:
        entity = entity_of(row.key)
        if (row.event_id, row.ts) != current or entity in entities:
            if current is not None:
                yield current[0], current[1], rows, late
            current, entities, rows, late = (row.event_id, row.ts), set(), {}, False
        entities.add(entity)
        late = late or row.late
        if row.row is not None:
            rows[entity] = row.row
    if current is not None:
        yield current[0], current[1], rows, late
