"""Replays an event log through the feature job's own engine, in one process, without Flink.

Training sets, backfills and ``featurestream verify`` all need what the feature job would have
computed over a log: the rows it captured for each scored event
(:mod:`udfs.features.point_in_time`), and the rows it left in Redis. Rather than a second
implementation of the windows, :class:`Replay` drives the job's classes: the
:class:`~udfs.features.routing.EventRouter` decodes and routes source frames (so bad records
get the job's dead-letter reasons), and one :class:`~udfs.features.shard.EntityShard` holding
every entity counts them, captures the scored events' rows, and expires windows as event time
passes. Event time passes as it does in the job: after each batch the watermark becomes the
newest event time of the slowest partition read (:mod:`udfs.features.event_time`) minus
``out_of_orderness_ms`` (``FEATURESTREAM_MAX_OUT_OF_ORDERNESS_MS``), events further behind it
than ``allowed_lateness_ms`` are late, and expiries up to it run.

Frames are fed in log order (``featurestream backfill``'s readers keep each partition's
order), so the captured rows are the ones the job captured for the same log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from featurestream.udfs.contract.records import RecordDecoding
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.features.layout import reconcile
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.features.point_in_time import ScoredEvents, row_before
from featurestream.udfs.features.processor import FeatureProcessor, Row
from featurestream.udfs.features.routing import EventRouter
from featurestream.udfs.features.shard import CapturedRow, EntityShard
from featurestream.udfs.wire.dead_letters import Problem

_NO_WATERMARK = -(2**63)


@dataclass
class ReplayBatch:
    """What one fed batch gave: rows captured for its scored events (in log order) and the
    frames that failed (undecodable, empty key, future, late or expired), with the reason."""

    captured: list[CapturedRow] = field(default_factory=list)
    dead: list[tuple[bytes, Problem]] = field(default_factory=list)


class Replay:
    """The feature job's engine over a log fed in batches of source frames."""

    def __init__(self, definitions: Definitions, decoders: Mapping[str, RecordDecoding],
                 scored: ScoredEvents | None, *, out_of_orderness_ms: int,
                 allowed_lateness_ms: int, keep_rows: bool = False,
                 expire: bool = True) -> None:
        """``decoders`` by source name; ``keep_rows``: keep each entity's newest row (the
        online store as of the end, :meth:`finish`) -- building rows costs time. Without
        ``expire`` the watermark still decides what is late, but moves no entity's windows:
        only events do (and captures, to their event's time), so :meth:`row_at` can put an
        entity at any online row's time -- the job's watermark may have stopped anywhere."""
        plans = compile_plans(definitions)
        self._processors = {name: FeatureProcessor(plan, allowed_lateness_ms)
                            for name, plan in plans.items()}
        self._router = EventRouter(plans, decoders, 1, scored=scored)
        self._shard = EntityShard(self._processors, reconcile(None, plans, 1, None))
        self._out_of_orderness_ms = out_of_orderness_ms
        self._keep_rows = keep_rows
        self._expire = expire
        self._rows: dict[str, Row] = {}
        self._newest: dict[bytes, int] = {}  # by partition
        self.watermark = _NO_WATERMARK

    def feed(self, frames: Sequence[bytes]) -> ReplayBatch:
        """Count a batch of source frames (``udfs.wire.frames.encode_source_frame``)."""
        groups, failed = self._router.group_by_shard(frames)
        batch = ReplayBatch(dead=failed)
        events = groups.get(0)
        if events:
            shard = self._shard
            for event, problem in shard.add_events(events, self.watermark):
                batch.dead.append((event.frame, problem))
            batch.captured = shard.take_captured()
            newest = self._newest
            for partition, ts in self._router.partition_newest.items():
                newest[partition] = max(ts, newest.get(partition, _NO_WATERMARK))
            self._advance(min(newest.values()) - self._out_of_orderness_ms - 1)
            self._take_rows()
        return batch

    def probe(self, entity: str, entity_id: str, ts: int) -> Row | None:
        """The row of ``entity`` ``entity_id`` for an example at ``ts`` (not an event of the
        log): as of ``ts``, over the events fed so far (:func:`row_before`)."""
        key = f"{entity}:{entity_id}"
        return row_before(self._processors[entity], self._shard.entities.get(key), ts)

    def finish(self) -> Mapping[str, Row]:
        """Each entity's newest row by state key ``<entity>:<id>``, with the watermark where
        the job's stops once the log is read (the slowest partition's last event time less the
        out-of-orderness), as the job leaves them."""
        self._take_rows()
        return self._rows

    def row_at(self, key: str, as_of: int, version: int) -> Row | str:
        """The replay's row of state key ``key`` as of ``as_of`` after the same ``version``
        (events counted) as an online row, to compare it with; or why there is none. Call after
        :meth:`finish` (it may move the entity's event time forward)."""
        row = self._rows.get(key)
        if row is not None and row["as_of"] == as_of and row["version"] == version:
            return row
        state = self._shard.entities.get(key)
        if state is None:
            return ("the replay has no row at this time (an entity of events it did not read, "
                    "or cleared)" if row is None else "the replay's row is at another time")
        if state.version != version:
            return ("the job has not counted every event of the log yet"
                    if version < state.version else "the job counted events the replay did not")
        if state.as_of > as_of:
            return "the replay's event time is past the row's"
        processor = self._processors[key[:key.index(":")]]
        processor.advance(state, as_of)
        return processor.row(state)

    def _advance(self, watermark: int) -> None:
        if watermark > self.watermark:
            self.watermark = watermark
            if self._expire:
                self._shard.advance(watermark)

    def _take_rows(self) -> None:
        if self._keep_rows:
            self._rows.update(self._shard.take_rows())
        else:
            self._shard.drop_rows()
