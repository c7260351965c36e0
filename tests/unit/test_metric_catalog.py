"""The metric catalog: names and labels follow Prometheus' conventions, nothing is listed
twice, the jobs' metrics are named as Flink's reporter names what the PyFlink adapter
registers, every metric the feature job registers is in the catalog, and the docs' table is
the catalog's."""

from __future__ import annotations

import re
from collections import Counter as Tally
from pathlib import Path
from typing import Any

import pytest

from featurestream.jobs.features.functions import ShardingCounters
from featurestream.jobs.metrics import FlinkMetricGroup
from featurestream.udfs.contract.events import Event
from featurestream.udfs.telemetry.catalog import (
    CATALOG,
    TASK_OPERATOR,
    Kind,
    Source,
    by_series,
    markdown_table,
)
from featurestream.udfs.wire.dead_letters import ErrorClass, Stage
from tests.harness import DAY, Count, MetricsRecorder, ShardHarness, user_definitions

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
SNAKE = re.compile(r"[a-z][a-z0-9_]*")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def ours(name: str) -> str:
    """The part of a name we chose (Flink's scope and built-in names are camelCase)."""
    return name.split("featurestream_", 1)[1] if "featurestream_" in name else ""


def test_names_and_labels_follow_prometheus_conventions() -> None:
    for m in CATALOG:
        for name in (m.name, *m.series):
            assert METRIC_NAME.fullmatch(name), name
            assert not ours(name) or SNAKE.fullmatch(ours(name)), name
        for label in m.labels:
            assert LABEL_NAME.fullmatch(label) and not label.startswith("__"), (m.name, label)
            assert label != "le", f"{m.name}: le belongs to a histogram's buckets"
            assert SNAKE.fullmatch(label), label
        assert len(set(m.labels)) == len(m.labels), m.name
        assert m.help and m.help.endswith("."), m.name
        assert m.sources, m.name
        if m.kind is Kind.HISTOGRAM:
            assert m.name.endswith(f"_{m.unit}"), m.name
            assert m.series[0].endswith("_bucket") and m.series[1].endswith("_count"), m.series
        if Source.READER in m.sources and m.kind is Kind.COUNTER:
            assert m.name.endswith("_total"), m.name  # prometheus_client's counters


def test_no_name_or_series_is_listed_twice() -> None:
    names = Tally(m.name for m in CATALOG)
    series = Tally(s for m in CATALOG for s in m.series)
    assert [n for n, c in names.items() if c > 1] == []
    assert [s for s, c in series.items() if c > 1] == []
    assert all(by_series(s) is m for m in CATALOG for s in m.series)


class FakeFlinkGroup:
    """A PyFlink metric group that names a counter as Flink's Prometheus reporter does: the
    operator scope, each group's name (a key/value group's key), then the metric; key/value
    groups become labels."""

    def __init__(self, scope: tuple[str, ...] = (), labels: dict[str, str] | None = None,
                 registered: dict[str, list[dict[str, str]]] | None = None) -> None:
        self.scope, self.labels = scope, labels or {}
        self.registered = {} if registered is None else registered

    def add_group(self, name: str, extra: str | None = None) -> FakeFlinkGroup:
        labels = self.labels if extra is None else {**self.labels, name: extra}
        return FakeFlinkGroup((*self.scope, name), labels, self.registered)

    def counter(self, name: str) -> Any:
        series = TASK_OPERATOR + "_".join((*self.scope, name))
        self.registered.setdefault(series, []).append(self.labels)
        return Count()


def test_the_adapter_registers_each_job_metric_under_its_catalog_name() -> None:
    group = FakeFlinkGroup()
    adapter = FlinkMetricGroup(group)
    for m in CATALOG:
        for path in m.flink_paths:
            adapter.counter(path, [f"{label}-value" for label in path.labels])
    for m in (m for m in CATALOG if m.flink_paths):
        for path, series in zip(m.flink_paths, m.series, strict=True):
            assert group.registered[series] == [
                {label: f"{label}-value" for label in path.labels}], series
    assert len(group.registered) == sum(len(m.flink_paths) for m in CATALOG)


def registered_by_the_feature_job() -> MetricsRecorder:
    """Drive the keyed operator (events, a late one, expiries) and register the sharding
    stage's metrics into the same recorder."""
    h = ShardHarness(user_definitions(("1m",)), lateness=60_000)
    h.process_bundle([Event(f"e{i}", f"u{i % 3}", "view", None, None, 600_000 + i, None)
                      for i in range(6)])
    h.advance_watermark(DAY)
    h.process(Event("late", "u1", "view", None, None, 1_000, None))
    ShardingCounters.register(h.metrics)
    return h.metrics


def test_every_metric_the_feature_job_registers_is_in_the_catalog() -> None:
    recorder = registered_by_the_feature_job()
    feature_paths = {path: m for m in CATALOG if Source.FEATURE_JOB in m.sources
                     for path in m.flink_paths}
    for path, values in recorder.counters:
        assert path in feature_paths, path
        labels = dict(zip(path.labels, values, strict=True))
        if "stage" in labels:
            assert labels["stage"] in set(Stage) and labels["reason"] in set(ErrorClass)
    registered = {path for path, _ in recorder.counters}
    assert registered == set(feature_paths), "a feature-job metric in the catalog is not used"


def test_the_table_lists_every_series_with_its_labels() -> None:
    table = markdown_table()
    rows = table.strip().splitlines()[2:]
    assert len(rows) == len(CATALOG)
    for row, m in zip(rows, CATALOG, strict=True):
        assert all(f"`{s}`" in row for s in m.series) and m.help in row
        assert all(f"`{label}`" in row for label in m.labels)


def test_the_docs_hold_exactly_the_catalogs_table() -> None:
    if not DOCS.exists():
        pytest.skip("docs/observability.md is not written yet")
    assert markdown_table() in DOCS.read_text(), (
        "docs/observability.md's metrics table differs from the catalog: paste "
        "featurestream.udfs.telemetry.catalog.markdown_table()")
