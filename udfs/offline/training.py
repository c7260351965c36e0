"""What a model is fitted and judged on: the feature matrix, labels and event times of a training
set (:mod:`udfs.offline.training_set`; its rows are point in time: docs/point-in-time.md), split by
time, and the textbook AUC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


@dataclass(frozen=True)
class Dataset:
    """Feature matrix (defaults filled in), labels and event times of the examples, in
    event-time order; ``missing`` marks the values that were missing before the defaults (None:
    none was), which the training distribution counts as nulls, as the scoring job does."""

    vectors: np.ndarray
    labels: np.ndarray
    ts: np.ndarray
    missing: np.ndarray | None = None

    def split(self, holdout_fraction: float) -> tuple[Dataset, Dataset]:
        """The earliest examples for training, the latest ``holdout_fraction`` held out."""
        cut = int(len(self.labels) * (1 - holdout_fraction))
        return self[:cut], self[cut:]

    def __getitem__(self, rows: slice) -> Dataset:
        missing = None if self.missing is None else self.missing[rows]
        return Dataset(self.vectors[rows], self.labels[rows], self.ts[rows], missing)

    def with_nulls(self) -> np.ndarray:
        """The matrix with NaN where a value was missing (before the defaults)."""
        if self.missing is None:
            return self.vectors
        return np.where(self.missing, np.nan, self.vectors)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise ValueError("AUC needs both positive and negative examples")
    ranks = rankdata(scores)
    rank_sum = ranks[labels == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))
