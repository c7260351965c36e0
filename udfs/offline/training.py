"""Training examples from a labelled event history, point in time, with the feature job's engine.

Events (the built-in events contract) are replayed in event-time order through the same
:class:`FeatureProcessor` and :func:`compile_plans` the feature job runs (same accumulators,
buckets, hops and window edges), for every entity the model reads whose features come from the
built-in events source: the event's user, its item, ... (ids from the event's fields through the
entity's keys, as the feature job keys them). Before an event of a scored type is counted, each
of its entities is advanced to its ``ts`` (expiring what has aged out), and those rows -- the
window values as of ``ts`` over the entity's earlier events only -- become the example's rows;
the vector is then assembled exactly as the scoring job does (:mod:`udfs.scoring.vector`).
Online, the scorer reads the rows the feature job last wrote, which can lag ``ts`` slightly (the
feature job's watermark and bundle) or already include the event; the score records ``as_of``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.records import entity_id, is_builtin
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.features.processor import EntityState, FeatureProcessor, Row
from featurestream.udfs.scoring.vector import EntityId, VectorPlan
from featurestream.udfs.wire.dead_letters import Problem

_NO_WATERMARK = -(2**63)


class Example(NamedTuple):
    """One training example: a scored event, its entities' rows as of its ``ts`` (an entity
    without an earlier event has none), the entity ids, and its label."""

    event: Event
    rows: dict[str, Row]
    ids: dict[str, EntityId]
    label: bool


@dataclass
class _Tracked:
    """One entity replayed from the built-in events: its engine and its instances' states."""

    name: str
    keys: tuple[str, ...]
    processor: FeatureProcessor
    source: int  # the built-in events' source number in the entity's plan
    fields: tuple[str, ...]  # what the engine reads of an event
    states: dict[str, EntityState]


def point_in_time_rows(history: Iterable[tuple[Event, bool]], definitions: Definitions,
                       scored_types: Collection[str], entities: Collection[str]
                       ) -> Iterator[Example]:
    """An example for each scored event of the ``(event, label)`` history, with the rows of
    ``entities`` (those not fed by the built-in events have no rows here)."""
    plans = compile_plans(definitions)
    tracked: list[_Tracked] = []
    for name in entities:
        plan = plans[name]
        source = next((i for i, s in enumerate(plan.sources) if is_builtin(s)), None)
        if source is not None:
            processor = FeatureProcessor(plan, allowed_lateness_ms=0)
            tracked.append(_Tracked(name, plan.entity.keys, processor, source,
                                    plan.fields[source], {}))
    for event, label in sorted(history, key=lambda pair: pair[0].ts):
        record = event._asdict()
        ids: dict[str, EntityId] = {t.name: entity_id(record, t.keys) for t in tracked}
        if event.event_type in scored_types:
            rows: dict[str, Row] = {}
            for t in tracked:
                key = ids[t.name]
                state = t.states.get(key) if isinstance(key, str) else None
                if state is not None:
                    t.processor.advance(state, event.ts)
                    rows[t.name] = t.processor.row(state)
            yield Example(event, rows, ids, label)
        for t in tracked:
            key = ids[t.name]
            if not isinstance(key, str):
                continue  # no key: the event does not count for the entity (as in the job)
            values = tuple(record.get(f) for f in t.fields)
            accepted = t.processor.accept(t.states.get(key), event.ts, t.source, values,
                                          _NO_WATERMARK)
            if isinstance(accepted, EntityState):  # always: in time order, without a watermark
                t.states[key] = accepted


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
        vector = plan.assemble(defaults, example.event, example.rows, example.ids)
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
