"""One backfill: history records through :class:`Replay`, out to the training set, the dead
letters and (at the end) the online store.

Records are framed as the job's Kafka source frames them (the source's topic, so the replay
routes and decodes them with that source's decoder) and fed in batches of the job's source
batch size, so event time and lateness advance as in the job. A frame's offset is the record's
number in the backfill, which finds its position again when it comes back as a dead letter.

Training rows are written for every scored event, with the rows the replay captured before it
counted (the job's rule, :mod:`featurestream.udfs.features.point_in_time`), or, with examples,
for every example: each is probed just before the first record whose event time is at or after
the example's (undecodable records do not move it), and the remaining ones at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from featurestream.backfill.dead_letters import DeadLetterFile
from featurestream.backfill.examples import Example
from featurestream.backfill.records import HistoryRecord, Position
from featurestream.backfill.scored import ScoredEvent, ScoredRecorder
from featurestream.backfill.vectors import raw_values
from featurestream.settings import Settings
from featurestream.udfs.contract.records import RecordDecoding, decoder_for, entity_id
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.features.collection import few_full_collections
from featurestream.udfs.features.point_in_time import ScoredEvents, scored_events
from featurestream.udfs.features.processor import Row
from featurestream.udfs.offline.replay import Replay
from featurestream.udfs.offline.training_set import TrainingSetWriter
from featurestream.udfs.scoring.vector import VectorPlan
from featurestream.udfs.wire.frames import decode_source_frame, encode_source_frame


@dataclass(frozen=True)
class ReplayConfig:
    """How the job would have run: its definitions, decoders and event-time settings."""

    definitions: Definitions
    decoders: Mapping[str, RecordDecoding]  # by source name
    scored: ScoredEvents | None
    out_of_orderness_ms: int
    allowed_lateness_ms: int
    batch_size: int
    expire: bool = True  # False: only events move windows (verify: rows at any time)

    @classmethod
    def from_settings(cls, settings: Settings, definitions: Definitions) -> ReplayConfig:
        """The job's own: its decoders, scored events, event-time settings and batch size."""
        registry = registry_for(settings.schema_registry)
        return cls(definitions, {s.name: decoder_for(s, registry) for s in definitions.sources},
                   scored_events(definitions, settings.scored_event_types),
                   settings.max_out_of_orderness_ms,
                   settings.effective_allowed_lateness_ms(definitions),
                   settings.source_batch_size)


@dataclass(frozen=True)
class Outputs:
    """What a backfill writes: a training set (``plan``: its features; ``labels`` by event
    id, beside the examples' own), the dead letters, and whether to keep the online store.
    ``scored``: also told of every scored event with its captured rows (``featurestream
    verify`` compares them with the scores)."""

    dead_letters: DeadLetterFile
    training: TrainingSetWriter | None = None
    plan: VectorPlan | None = None
    labels: Mapping[str, bool] = field(default_factory=dict)
    online_store: bool = False
    scored: Callable[[ScoredEvent], object] | None = None


@dataclass
class Counts:
    """What a backfill did."""

    events: int = 0  # records read
    scored: int = 0  # scored events captured
    examples: int = 0
    rows_written: int = 0  # training rows
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Backfill:
    """Feeds history to a replay and writes what it gives; :meth:`run` once."""

    def __init__(self, config: ReplayConfig, outputs: Outputs,
                 examples: Iterator[Example] | None = None,
                 event_time: Callable[[HistoryRecord], int | None] | None = None,
                 progress: Callable[[int], object] = lambda n: None) -> None:
        """``examples`` need ``event_time`` (a record's event time, None if undecodable);
        ``progress(n)`` is told of every ``n`` records fed."""
        decoders = dict(config.decoders)
        wanted = outputs.training is not None or outputs.scored is not None
        scored = config.scored if examples is None and wanted else None
        self._recorder: ScoredRecorder | None = None
        if scored is not None:
            self._recorder = ScoredRecorder(decoders[scored.source], scored.types)
            decoders[scored.source] = self._recorder
        self._replay = Replay(config.definitions, decoders, scored,
                              out_of_orderness_ms=config.out_of_orderness_ms,
                              allowed_lateness_ms=config.allowed_lateness_ms,
                              keep_rows=outputs.online_store, expire=config.expire)
        self._topics = {s.name: s.topic for s in config.definitions.sources}
        self._batch_size = config.batch_size
        self._outputs = outputs
        self._examples = examples
        self._event_time = event_time
        self._progress = progress
        self._keys = {} if outputs.plan is None else dict(outputs.plan.entities)
        self.counts = Counts()

    @property
    def replay(self) -> Replay:
        """The replay (after :meth:`run`: its entities as of the end)."""
        return self._replay

    def run(self, history: Iterable[HistoryRecord]) -> Mapping[str, Row]:
        """Replay ``history``; returns the online store as of the end (empty unless asked)."""
        few_full_collections()
        started = time.perf_counter()
        frames: list[bytes] = []
        positions: list[Position] = []
        pending = _Pending(self._examples)
        topics, batch_size, number = self._topics, self._batch_size, 0
        for record in history:
            if pending.head is not None:
                ts = self._event_time(record) if self._event_time else None
                if ts is not None and pending.head.ts <= ts:
                    self._feed(frames, positions, number)
                    frames, positions = [], []
                    while pending.head is not None and pending.head.ts <= ts:
                        self._probe(pending.pop())
            frames.append(encode_source_frame(topics[record.source], record.position.partition
                                              or 0, number, record.timestamp, record.value))
            positions.append(record.position)
            number += 1
            if len(frames) >= batch_size:
                self._feed(frames, positions, number)
                frames, positions = [], []
        self._feed(frames, positions, number)
        while pending.head is not None:
            self._probe(pending.pop())
        rows = self._replay.finish()
        self.counts.seconds = time.perf_counter() - started
        return rows

    def _feed(self, frames: list[bytes], positions: list[Position], end: int) -> None:
        """Feed a batch (record numbers ``end - len(frames)`` to ``end``) and write out what
        it gave."""
        if not frames:
            return
        batch = self._replay.feed(frames)
        first = end - len(frames)
        for frame, problem in batch.dead:
            source = decode_source_frame(frame)
            self._outputs.dead_letters.add(positions[source.offset - first], source.value,
                                           problem)
        if self._recorder is not None:
            outputs = self._outputs
            training, plan, labels = outputs.training, outputs.plan, outputs.labels
            for scored in self._recorder.events(batch.captured):
                event = scored.event
                if training is not None:
                    assert plan is not None
                    training.add(event.event_id, event.ts, event.event_type, event.user_id,
                                 labels.get(event.event_id), raw_values(plan, event, scored.rows))
                    self.counts.rows_written += 1
                if outputs.scored is not None:
                    outputs.scored(scored)
                self.counts.scored += 1
        self.counts.events += len(frames)
        self._progress(len(frames))

    def _probe(self, example: Example) -> None:
        """One training row for ``example``, from its entities' rows as of its time."""
        training, plan = self._outputs.training, self._outputs.plan
        assert training is not None and plan is not None
        rows: dict[str, Row] = {}
        for entity, keys in self._keys.items():
            ident = entity_id(example.columns, keys)
            if isinstance(ident, str):
                row = self._replay.probe(entity, ident, example.ts)
                if row is not None:
                    rows[entity] = row
        event = example.event()
        label = example.label
        if label is None:
            label = self._outputs.labels.get(event.event_id)
        training.add(event.event_id, event.ts, event.event_type, event.user_id, label,
                     raw_values(plan, event, rows))
        self.counts.examples += 1
        self.counts.rows_written += 1


class _Pending:
    """The examples not yet probed, in time order, and the next one (``head``)."""

    def __init__(self, items: Iterator[Example] | None) -> None:
        self._items: Iterator[Example] = items if items is not None else iter(())
        self.head: Example | None = next(self._items, None)

    def pop(self) -> Example:
        """Take the next example (``head`` must not be None)."""
        taken = self.head
        assert taken is not None
        self.head = next(self._items, None)
        return taken
