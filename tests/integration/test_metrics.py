"""The jobs' metrics as Prometheus scrapes them from the real stack: every catalog entry of the
feature job and of Flink's built-ins is on the TaskManager's or the JobManager's endpoint with
its labels, dead letters are counted by stage and reason, the freshness histograms hold
sensible values, and the values move as events flow; the scoring job's scores by model,
version and variant and its dead letters add up to what it read."""

from __future__ import annotations

import itertools
import math
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.generator import StreamConfig, generate_events
from featurestream.devstack.private import isolated
from featurestream.flink_rest import FlinkRest
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.telemetry import catalog
from featurestream.udfs.telemetry.catalog import Metric, Source
from featurestream.udfs.telemetry.freshness import LE_LABELS
from testing import model_fixtures
from tests.integration.conftest import cancel_job, job_diagnostics, wait_for
from tests.integration.test_feature_job import bad_records, produce

pytestmark = pytest.mark.flink

Sample = tuple[str, Mapping[str, str], float]


def scrape(url: str) -> list[Sample]:
    """Every sample of a Prometheus endpoint."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


class Scrape:
    """One scrape of both Flink endpoints, narrowed to one job's series."""

    def __init__(self, stack: LocalStack, job_id: str) -> None:
        urls = stack.flink.metrics_urls()
        self.samples = [s for url in urls for s in scrape(url) if s[1].get("job_id") == job_id]

    def series(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples
                if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]

    def total(self, name: str, **labels: str) -> float:
        """The sum over every subtask (and every other label) of ``name{labels}``."""
        return sum(value for _, _, value in self.series(name, **labels))

    def buckets(self, metric: Metric) -> dict[float, float]:
        """A histogram's cumulative count per ``le``, summed over subtasks."""
        return {float(le): self.total(metric.series[0], le=le) for le in LE_LABELS}

    def observed(self, metric: Metric) -> float:
        """A histogram's count."""
        return self.total(metric.series[1])


def since(before: Scrape, after: Scrape, metric: Metric) -> dict[float, float]:
    """What a histogram's buckets observed between two scrapes."""
    old = before.buckets(metric)
    return {le: count - old[le] for le, count in after.buckets(metric).items()}


def test_feature_job_metrics_reach_prometheus_with_their_labels_and_move(
        stack: LocalStack) -> None:
    settings = isolated(stack, "metrics")
    job_id = submit_job(settings, "features")
    encoder = EventEncoder(registry_for(settings.schema_registry))
    latest: list[Scrape] = []

    def observed(count: int) -> bool:
        latest[:] = [Scrape(stack, job_id)]
        return latest[0].observed(catalog.EVENT_FRESHNESS) >= count

    def wait_observed(count: int, what: str) -> Scrape:
        wait_for(lambda: observed(count), 120, what, lambda: job_diagnostics(settings, job_id))
        return latest[0]

    def batch(seed: int, count: int, age_ms: int) -> list[Event]:
        """``count`` events over about ``count / 100`` seconds, the newest ``age_ms`` old.

        Arrivals are random, so the span varies: the events are shifted to end exactly there.
        """
        config = StreamConfig(users=30, items=100, events_per_second=100.0, seed=seed)
        events = list(itertools.islice(generate_events(config), count))
        shift = int(time.time() * 1000) - age_ms - max(e.ts for e in events)
        return [e._replace(ts=e.ts + shift) for e in events]

    try:
        # Warm up: the job is running and reading before the measured events go in.
        warm_up = batch(4, 10, 0)
        produce(settings, [(e.user_id, encoder.avro(e), e.ts) for e in warm_up])
        before = wait_observed(len(warm_up), "the warm-up events counted")

        # Event times 10-20 s ago, Kafka timestamps now (a producer that does not stamp its
        # records gets the send time): the two freshness histograms must tell them apart.
        now = int(time.time() * 1000)
        events = batch(5, 1000, 10_000)
        bad = bad_records()
        future = Event("future", "u-future", "view", None, None, now + 10 * 86_400_000, None)
        records = [(e.user_id, encoder.avro(e), now) for e in events]
        records += [("bad", raw, now) for raw in bad]
        records.append((future.user_id, encoder.json(future), now))
        produce(settings, records)
        s = wait_observed(len(warm_up) + len(events), "the events' freshness observations")

        # Every series of the feature job and of the built-ins we rely on, with its labels.
        for metric in catalog.CATALOG:
            if Source.FEATURE_JOB not in metric.sources and Source.FLINK not in metric.sources:
                continue
            for name in metric.series:
                found = s.series(name)
                assert found, f"{name} is not exported"
                for _, labels, _ in found:
                    assert set(metric.labels) <= labels.keys(), (name, labels)

        assert s.total(catalog.SOURCE_EVENTS.series[0]) == len(warm_up) + len(records)
        rest = FlinkRest(settings.flink_rest_url)  # what the benchmark reads
        wait_for(lambda: rest.operator_metric(job_id, "Source: events", "source_events")
                 == len(warm_up) + len(records), 30, "source_events over the REST API")
        assert s.total(catalog.EVENTS_IN.series[0]) == len(warm_up) + len(events)  # one entity
        assert s.total(catalog.ROWS_WRITTEN.series[0]) > 0
        dead = catalog.DEAD_LETTERS.series[0]
        expected = {("decode", r): sum(1 for v in bad.values() if v == r) for r in bad.values()}
        expected[("window", "FutureEvent")] = 1
        for (stage, reason), count in expected.items():
            assert s.total(dead, stage=stage, reason=reason) == count, (stage, reason)
        # Reasons that did not occur are series at 0 (rates and alerts need them).
        assert s.series(dead, stage="window", reason="LateEvent")
        assert s.series(dead, stage="decode", reason="IncompatibleSchema")
        assert s.total(dead) == sum(expected.values())

        # Freshness: every bucket, cumulative, the count equal to +Inf's and to events in.
        for metric in (catalog.EVENT_FRESHNESS, catalog.APPEND_FRESHNESS):
            buckets = s.buckets(metric)
            assert list(buckets) == sorted(buckets) and math.inf in buckets
            assert all(a <= b for a, b in itertools.pairwise(buckets.values())), buckets
            assert buckets[math.inf] == s.observed(metric) == len(warm_up) + len(events)
        # The measured events were 10-20 s old by event time when produced, and their rows
        # visible within seconds of their Kafka timestamp.
        event = since(before, s, catalog.EVENT_FRESHNESS)
        append = since(before, s, catalog.APPEND_FRESHNESS)
        assert event[10.0] == 0 and event[60.0] == len(events), event
        assert append[10.0] >= len(events) / 2 and append[60.0] == len(events), append

        # Lag and offsets (per partition) from the Kafka source, checkpoints from the JobManager.
        offsets = s.series(catalog.CURRENT_OFFSET.series[0], topic=settings.events_topic)
        assert {labels["partition"] for _, labels, _ in offsets} == {
            str(p) for p in range(settings.topic_partitions)}
        assert s.series(catalog.PENDING_RECORDS.series[0])

        def checkpointed() -> bool:
            later = Scrape(stack, job_id)
            return (later.total(catalog.COMPLETED_CHECKPOINTS.name) >= 1
                    and later.total(catalog.LAST_CHECKPOINT_SIZE.name) > 0
                    and bool(later.series(catalog.LAST_CHECKPOINT_DURATION.name)))

        wait_for(checkpointed, 60, "a completed checkpoint in the JobManager's metrics")

        # Values move: more events, more counted, further offsets.
        more = batch(6, 300, 0)
        produce(settings, [(e.user_id, encoder.avro(e), e.ts) for e in more])
        after = wait_observed(len(warm_up) + len(events) + len(more), "the last batch counted")
        assert after.total(catalog.EVENTS_IN.series[0]) == (
            len(warm_up) + len(events) + len(more))
        assert after.total(catalog.ROWS_WRITTEN.series[0]) > s.total(
            catalog.ROWS_WRITTEN.series[0])
        moved = after.series(catalog.CURRENT_OFFSET.series[0], topic=settings.events_topic)
        assert sum(v for *_, v in moved) == sum(v for *_, v in offsets) + len(more)
    finally:
        cancel_job(settings, job_id)


def test_scoring_job_metrics_add_up_to_what_it_read(stack: LocalStack, tmp_path: Path) -> None:
    settings = isolated(stack, "scoremetrics").replace(
        models_dir=str(tmp_path / "models"), model_name=model_fixtures.NAME)
    model_fixtures.publish(settings.effective_models_dir, 1)
    encoder = EventEncoder(registry_for(settings.schema_registry))
    config = StreamConfig(users=20, items=50, events_per_second=50.0, seed=8,
                          start_ts=int(time.time() * 1000) - 10_000)
    events = list(itertools.islice(generate_events(config), 400))
    purchases = sum(1 for e in events if e.event_type == "purchase")
    bad = bad_records()
    features_job = submit_job(settings, "features")
    scoring_job = None
    try:
        scoring_job = submit_job(settings, "scoring")
        produce(settings, [*((e.user_id, encoder.avro(e), e.ts) for e in events),
                           *(("bad", raw, events[-1].ts) for raw in bad)])
        scores, dead = catalog.SCORES.series[0], catalog.DEAD_LETTERS.series[0]
        latest: list[Scrape] = []

        def all_counted() -> bool:
            latest[:] = [Scrape(stack, scoring_job or "")]
            return latest[0].total(scores) + latest[0].total(dead) >= purchases + len(bad)

        wait_for(all_counted, 180, "every purchase scored or dead-lettered",
                 lambda: job_diagnostics(settings, scoring_job or features_job))
        s = latest[0]
        assert s.total(dead, stage="decode") == len(bad)
        assert s.total(scores) + s.total(dead) == purchases + len(bad)
        assert s.total(scores, model=model_fixtures.NAME, version="1") > 0
        for _, labels, _ in s.series(scores):
            assert set(catalog.SCORES.labels) <= labels.keys(), labels
    finally:
        for job in (scoring_job, features_job):
            if job is not None:
                cancel_job(settings, job)
