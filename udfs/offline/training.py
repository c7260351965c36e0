"""What a model is fitted and judged on: the feature matrix, labels and event times of a training
set (:mod:`udfs.offline.training_set`; its rows are point in time: docs/point-in-time.md), split by
time, and the textbook AUC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


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


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise ValueError("AUC needs both positive and negative examples")
    ranks = rankdata(scores)
    rank_sum = ranks[labels == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))
