"""PyFlink's metric group as the telemetry port (:class:`udfs.telemetry.metrics.MetricGroup`):
a catalog entry's series registered under ``add_group("featurestream")``, its plain group, one
key/value group per label, then the metric, which Flink's Prometheus reporter names and labels
as :func:`udfs.telemetry.catalog.flink_name` says.

PyFlink reports a Python counter to Flink only once it has been incremented inside a bundle
(its Beam cell is made on first use, and ``open()`` runs outside any bundle), so a dead-letter
reason that never occurred or an empty freshness bucket would have no series at all: rates
and ``histogram_quantile`` need them at 0. The functions therefore call :meth:`touch` while
processing, which adds 0 to each counter registered since.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from featurestream.udfs.telemetry.catalog import USER_GROUP, FlinkPath
from featurestream.udfs.telemetry.metrics import Counter


class FlinkMetricGroup:
    """Registers counters in a PyFlink metric group (a runtime or function context's)."""

    def __init__(self, group: Any) -> None:
        self._root = group.add_group(USER_GROUP)
        self.untouched: list[Counter] = []  # registered, not yet reported to Flink

    def counter(self, path: FlinkPath, values: Sequence[str], /) -> Counter:
        group = self._root if path.group is None else self._root.add_group(path.group)
        for key, value in zip(path.labels, values, strict=True):
            group = group.add_group(key, value)
        counter: Counter = group.counter(path.metric)
        self.untouched.append(counter)
        return counter

    def touch(self) -> None:
        """Inside a bundle: make each counter registered since the last call a series, at 0."""
        for counter in self.untouched:
            counter.inc(0)
        self.untouched.clear()
