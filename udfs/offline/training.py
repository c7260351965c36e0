"""Training examples from a labelled event history, point in time, with the feature job's code.

Events are replayed in event-time order through the same :class:`FeatureProcessor` the feature
job runs (same buckets, hops and window edges). Before an event of a scored type is counted, the
user's windows are advanced to its ``ts`` (expiring what has aged out), and that row -- the
README's window values as of ``ts`` over the user's earlier events only -- becomes the example's
row; the vector is then assembled exactly as the scoring job does (:mod:`udfs.scoring.vector`).
Online, the scorer reads the row the feature job last wrote, which can lag ``ts`` slightly (the
feature job's watermark and bundle) or already include the event; the score records ``as_of``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

from featurestream.udfs.contract.events import Event
from featurestream.udfs.features.definitions import Feature
from featurestream.udfs.features.processor import FeatureProcessor, Row, UserState
from featurestream.udfs.features.windows import TYPE_INDEX
from featurestream.udfs.scoring.vector import assemble
from featurestream.udfs.wire.dead_letters import Problem

_NO_WATERMARK = -(2**63)


class Example(NamedTuple):
    """One training example: a scored event, the user's row as of its ``ts`` (None for the
    user's first event) and its label."""

    event: Event
    row: Row | None
    label: bool


def point_in_time_rows(history: Iterable[tuple[Event, bool]], features: Sequence[Feature],
                       scored_types: Collection[str]) -> Iterator[Example]:
    """An example for each scored event of the ``(event, label)`` history."""
    processor = FeatureProcessor(features, allowed_lateness_ms=0)
    states: dict[str, UserState] = {}
    rows: dict[str, Row] = {}
    for event, label in sorted(history, key=lambda pair: pair[0].ts):
        user = event.user_id
        state = states.get(user)
        if event.event_type in scored_types:
            if state is not None:
                expired = processor.advance(state, event.ts)
                rows[user] = processor.row(state) if expired else {**rows[user],
                                                                   "as_of": state.as_of}
            yield Example(event, rows.get(user), label)
        accepted = processor.accept(state, event.ts, TYPE_INDEX[event.event_type],
                                    event.amount, event.item_id, _NO_WATERMARK)
        if isinstance(accepted, UserState):  # always: in time order, without a watermark
            states[user] = accepted
            rows[user] = processor.row(accepted)


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


def build_dataset(examples: Iterable[Example], names: Sequence[str],
                  defaults: Mapping[str, float]) -> Dataset:
    """Assemble every example's vector like the scoring job (problems are errors here)."""
    vectors, labels, times = [], [], []
    for example in examples:
        vector = assemble(names, defaults, example.event, example.row)
        if isinstance(vector, Problem):
            raise ValueError(str(vector))
        vectors.append(vector)
        labels.append(example.label)
        times.append(example.event.ts)
    return Dataset(np.array(vectors, dtype=np.float64).reshape(len(vectors), len(names)),
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
