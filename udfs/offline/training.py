"""Training examples from a labelled event history, point in time, with the feature job's engine.

The history (events of the built-in contract, in log order) is replayed by
:class:`udfs.offline.replay.Replay` -- the feature job's router and shard -- and each scored
event gets the rows the job captures for it online: every entity's features as of the event
over the entity's events before it in the log (the rule: :mod:`udfs.features.point_in_time`).
The vector is then assembled exactly as the scoring job does (:mod:`udfs.scoring.vector`), so
a model is trained on the values it is served with.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import orjson
from scipy.stats import rankdata

from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.records import decoder_for
from featurestream.udfs.contract.schema_registry import SchemaRegistry
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.features.point_in_time import scored_events
from featurestream.udfs.features.processor import Row
from featurestream.udfs.features.shard import entity_of
from featurestream.udfs.offline.replay import Replay
from featurestream.udfs.scoring.vector import VectorPlan
from featurestream.udfs.wire.dead_letters import Problem
from featurestream.udfs.wire.frames import encode_source_frame

_BATCH = 1_000  # events per replayed batch (a source batch of the job)


class Example(NamedTuple):
    """One training example: a scored event, its entities' captured rows (an entity without
    a row is absent) and its label."""

    event: Event
    rows: dict[str, Row]
    label: bool


@dataclass(frozen=True)
class Timing:
    """The feature job's event-time settings the replay follows."""

    out_of_orderness_ms: int
    allowed_lateness_ms: int


def point_in_time_rows(history: Iterable[tuple[Event, bool]], definitions: Definitions,
                       scored_types: Collection[str], timing: Timing,
                       registry: SchemaRegistry) -> Iterator[Example]:
    """An example for each scored event of the ``(event, label)`` history (in log order), with
    the rows of every entity the job captures for it."""
    scored = scored_events(definitions, scored_types)
    if scored is None:
        raise ValueError("the definitions read no source of the built-in events contract")
    source = next(s for s in definitions.sources if s.name == scored.source)
    replay = Replay(definitions, {s.name: decoder_for(s, registry) for s in definitions.sources},
                    scored, out_of_orderness_ms=timing.out_of_orderness_ms,
                    allowed_lateness_ms=timing.allowed_lateness_ms)
    pending: dict[str, tuple[Event, bool]] = {}
    frames: list[bytes] = []
    for offset, (event, label) in enumerate(history):
        if event.event_type in scored.types:
            pending[event.event_id] = (event, label)
        frames.append(encode_source_frame(source.topic, 0, offset, event.ts,
                                          orjson.dumps(event._asdict())))
        if len(frames) == _BATCH:
            yield from _examples(replay, frames, pending)
            frames = []
    if frames:
        yield from _examples(replay, frames, pending)


def _examples(replay: Replay, frames: list[bytes], pending: dict[str, tuple[Event, bool]]
              ) -> Iterator[Example]:
    """Feed a batch; the examples of its scored events. An event the router refused (which the
    scoring job refuses too) has no captured row, not even an empty one, and no example."""
    rows: dict[str, dict[str, Row]] = {}
    for captured in replay.feed(frames).captured:
        found = rows.setdefault(captured.event_id, {})
        if captured.row is not None:
            found[entity_of(captured.key)] = captured.row
    for event_id, (event, label) in pending.items():
        if event_id in rows:
            yield Example(event, rows[event_id], label)
    pending.clear()


@dataclass(frozen=True)
class Dataset:
    """Feature matrix, labels and event times of the examples, in event-time order."""

    vectors: np.ndarray
    labels: np.ndarray
    ts: np.ndarray

    def split(self, holdout_fraction: float) -> tuple[Dataset, Dataset]:
        """The earliest examples for training, the latest ``holdout_fraction`` held out."""
        cut = int(len(self.labels) * (1 - holdout_fraction))
        first, last = slice(0, cut), slice(cut, None)
        return (Dataset(self.vectors[first], self.labels[first], self.ts[first]),
                Dataset(self.vectors[last], self.labels[last], self.ts[last]))


def build_dataset(examples: Iterable[Example], plan: VectorPlan,
                  defaults: Mapping[str, float]) -> Dataset:
    """Assemble every example's vector like the scoring job (problems are errors here)."""
    vectors, labels, times = [], [], []
    for example in examples:
        vector = plan.assemble(defaults, example.event, example.rows,
                               plan.entity_ids(example.event))
        if isinstance(vector, Problem):
            raise ValueError(str(vector))
        vectors.append(vector)
        labels.append(example.label)
        times.append(example.event.ts)
    width = len(plan.names)
    return Dataset(np.array(vectors, dtype=np.float64).reshape(len(vectors), width),
                   np.array(labels, dtype=np.float64), np.array(times, dtype=np.int64))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise ValueError("AUC needs both positive and negative examples")
    ranks = rankdata(scores)
    rank_sum = ranks[labels == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))
