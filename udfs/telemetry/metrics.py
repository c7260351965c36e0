"""The jobs' metrics as Flink-free ports: a job registers each metric from its catalog entry
(:mod:`udfs.telemetry.catalog`) through a :class:`MetricGroup`, which the job adapts to
PyFlink's metric group (``jobs/metrics.py``) and the unit tests to a recorder, so the tests
can check that every metric a job registers is in the catalog, with its labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from featurestream.udfs.telemetry.catalog import DEAD_LETTERS, FlinkPath, Metric
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage


class Counter(Protocol):
    """A monotonic metric."""

    def inc(self, n: int = 1, /) -> None: ...


class MetricGroup(Protocol):
    """Where a job registers its user metrics: the counter of series ``path`` with the label
    values ``values`` (one per ``path.labels``)."""

    def counter(self, path: FlinkPath, values: Sequence[str], /) -> Counter: ...


def counter(group: MetricGroup, metric: Metric, **labels: str) -> Counter:
    """The counter of ``metric`` (a job's counter in the catalog) with these label values."""
    [path] = metric.flink_paths
    return group.counter(path, [labels[key] for key in path.labels])


class DeadLetterCounters:
    """Dead letters by stage and reason. The reasons a stage expects are registered up front
    (their series exist, at 0, before the first dead letter); any other on first sight."""

    def __init__(self, group: MetricGroup, expected: Iterable[tuple[Stage, ErrorClass]]) -> None:
        self._group = group
        self._counters = {key: self._register(*key) for key in expected}

    def count(self, problem: Problem, n: int = 1) -> None:
        """``n`` dead letters for ``problem``'s stage and reason."""
        key = (problem.stage, problem.error_class)
        found = self._counters.get(key)
        if found is None:
            found = self._counters[key] = self._register(*key)
        found.inc(n)

    def _register(self, stage: Stage, reason: ErrorClass) -> Counter:
        return counter(self._group, DEAD_LETTERS, stage=stage.value, reason=reason.value)
