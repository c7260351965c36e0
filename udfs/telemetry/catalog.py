"""The one catalog of every metric the product exports, with its name as Prometheus scrapes it.

The docs' metrics table (:func:`markdown_table`), the alert rules' and the Grafana dashboard's
tests and the status page all check against :data:`CATALOG`; the jobs register their metrics
from these entries (:class:`FlinkPath`), so a name is spelled in one place.

How Flink names a job's metric: the jobs register user metrics under
``add_group("featurestream")`` and express a label as a key/value group
(``add_group("reason", "LateEvent")``). Flink's Prometheus reporter builds the series name from
the operator scope, every group's *key* and the metric's name (``flink_taskmanager_job_task_
operator_featurestream_stage_reason_dead_letters``) and turns each key/value group into a label
(``stage="window", reason="LateEvent"``), beside its own labels (``job_name``, ``task_name``,
``operator_name``, ``subtask_index``, ``host``, ``tm_id``...). Flink exports counters as gauges
without a ``_total`` suffix; they still only go up (until the job restarts), so ``rate`` and
``increase`` work on them. A job's histogram is cumulative counters, one per upper bound ``le``
(seconds), plus a count: Flink has no histogram that Prometheus' ``histogram_quantile`` reads,
and Python metrics are integers, so there is no ``_sum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What the value means (Prometheus' metric types)."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Source(StrEnum):
    """Who exports the metric, and so where it is scraped."""

    FEATURE_JOB = "feature job"  # Flink TaskManager's reporter
    SCORING_JOB = "scoring job"  # Flink TaskManager's reporter
    FLINK = "flink built-in"  # Flink's own metrics (TaskManager or JobManager reporter)
    READER = "reader"  # the reader's /metrics
    KAFKA_EXPORTER = "kafka exporter"  # the production stack's kafka-exporter (compose)


@dataclass(frozen=True)
class FlinkPath:
    """How a job registers a user metric: under :data:`USER_GROUP`, optionally a plain group (a
    histogram's name), then key/value groups (the labels, in this order), then the metric."""

    metric: str
    labels: tuple[str, ...] = ()
    group: str | None = None


@dataclass(frozen=True)
class Metric:
    """One exported metric family."""

    name: str  # as scraped; a histogram's base name
    kind: Kind
    labels: tuple[str, ...]  # ours (a histogram's ``le`` not included); not Flink's own
    sources: tuple[Source, ...]
    help: str
    unit: str = ""
    series_names: tuple[str, ...] = ()  # the scraped series, if not just ``name``
    flink: FlinkPath | None = None  # a job's user metric: how it is registered (a histogram's
    # buckets; its count is :data:`HISTOGRAM_COUNT` in the same plain group)

    @property
    def flink_paths(self) -> tuple[FlinkPath, ...]:
        """How each series of a job's user metric is registered (a histogram's buckets, then
        its count); empty for the others."""
        if self.flink is None:
            return ()
        if self.kind is Kind.HISTOGRAM:
            return self.flink, FlinkPath(HISTOGRAM_COUNT, (), self.flink.group)
        return (self.flink,)

    @property
    def series(self) -> tuple[str, ...]:
        """The names of the series this family appears as in a scrape."""
        return tuple(flink_name(path) for path in self.flink_paths) or self.series_names or (
            self.name,)


TASK_OPERATOR = "flink_taskmanager_job_task_operator_"
JOB_MANAGER_JOB = "flink_jobmanager_job_"
USER_GROUP = "featurestream"
USER_PREFIX = f"{TASK_OPERATOR}{USER_GROUP}_"
HISTOGRAM_COUNT = "count"

# Upper bounds of the freshness histograms' buckets, in seconds (+Inf implied).
FRESHNESS_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def flink_name(path: FlinkPath) -> str:
    """The series name Flink's Prometheus reporter gives a user metric registered as ``path``
    (group keys and the metric name joined by ``_`` after the operator scope)."""
    parts = [*([path.group] if path.group else []), *path.labels, path.metric]
    return USER_PREFIX + "_".join(parts)


def _user(metric: str, kind: Kind, labels: tuple[str, ...], sources: tuple[Source, ...],
          help: str) -> Metric:
    path = FlinkPath(metric, labels)
    return Metric(flink_name(path), kind, labels, sources, help, flink=path)


def _user_histogram(group: str, help: str) -> Metric:
    """A job's histogram: ``<group>/le=<bound>/bucket`` counters and a ``<group>/count``."""
    return Metric(USER_PREFIX + group, Kind.HISTOGRAM, (), (Source.FEATURE_JOB,), help,
                  unit="seconds",
                  flink=FlinkPath("bucket", ("le",), group))


FEATURE = (Source.FEATURE_JOB,)
SCORING = (Source.SCORING_JOB,)
JOBS = (Source.FEATURE_JOB, Source.SCORING_JOB)
FLINK = (Source.FLINK,)
READER = (Source.READER,)

# -- the feature job
SOURCE_EVENTS = _user("source_events", Kind.COUNTER, (), FEATURE,
                      "Source records the sharding stage read, good or bad.")
EVENTS_IN = _user("events_in", Kind.COUNTER, (), FEATURE,
                  "Events counted into the entity shards (one per entity an event updates).")
DEAD_LETTERS = _user(
    "dead_letters", Kind.COUNTER, ("stage", "reason"), JOBS,
    "Records sent to the dead-letter topic, by stage (decode, window, features, model) and "
    "reason (the error class: LateEvent, ExpiredEvent, FutureEvent, MalformedRecord...).")
ROWS_WRITTEN = _user("rows_written", Kind.COUNTER, (), FEATURE,
                     "Feature rows written to Redis (one per changed entity per bundle).")
CAPTURED_ROWS = _user("captured_rows", Kind.COUNTER, (), FEATURE,
                      "Rows captured for scored events (point in time), written to Redis.")
EVENT_FRESHNESS = _user_histogram(
    "event_freshness_seconds",
    "Seconds from an event's event time to its entity's row being written to Redis.")
APPEND_FRESHNESS = _user_histogram(
    "append_freshness_seconds",
    "Seconds from an event's Kafka record timestamp to its entity's row being written to Redis.")

# -- the scoring job (registered by jobs/scoring/function.py)
SCORES = _user("scores", Kind.COUNTER, ("model", "version", "variant"), SCORING,
               "Scores produced, by model, version and experiment variant.")
FALLBACKS = _user("fallbacks", Kind.COUNTER, ("model", "version"), SCORING,
                  "Scored vectors that used a model's default for a missing feature or row.")
SHADOW_FAILURES = _user("shadow_failures", Kind.COUNTER, ("model", "version"), SCORING,
                        "Shadow-model predictions that failed (the live score is unaffected).")
MODEL_RELOADS = _user("reloads", Kind.COUNTER, ("model",), SCORING,
                      "Times the scoring task loaded a new set of live model versions.")

# -- Flink's own metrics the dashboard and the alerts read
PENDING_RECORDS = Metric(
    TASK_OPERATOR + "pendingRecords", Kind.GAUGE, (), FLINK,
    "Consumer lag: records behind the log end, over the source subtask's partitions.")
CURRENT_OFFSET = Metric(
    TASK_OPERATOR + "KafkaSourceReader_topic_partition_currentOffset", Kind.GAUGE,
    ("topic", "partition"), FLINK, "The source's position in each partition it reads.")
CONSUMER_GROUP_LAG = Metric(
    "kafka_consumergroup_lag", Kind.GAUGE, ("consumergroup", "topic", "partition"),
    (Source.KAFKA_EXPORTER,),
    "Consumer lag per partition: the log end minus the group's committed offset (the jobs "
    "commit at each checkpoint, so it reads high by up to a checkpoint interval).")
RECORDS_IN = Metric(
    TASK_OPERATOR + "numRecordsIn", Kind.COUNTER, (), FLINK,
    "Records each operator received (the pipeline's throughput per operator).")
LAST_CHECKPOINT_DURATION = Metric(
    JOB_MANAGER_JOB + "lastCheckpointDuration", Kind.GAUGE, (), FLINK,
    "Duration of the last completed checkpoint.", unit="milliseconds")
LAST_CHECKPOINT_SIZE = Metric(
    JOB_MANAGER_JOB + "lastCheckpointSize", Kind.GAUGE, (), FLINK,
    "Size of the last completed checkpoint.", unit="bytes")
COMPLETED_CHECKPOINTS = Metric(
    JOB_MANAGER_JOB + "numberOfCompletedCheckpoints", Kind.COUNTER, (), FLINK,
    "Checkpoints completed since the job started.")
FAILED_CHECKPOINTS = Metric(
    JOB_MANAGER_JOB + "numberOfFailedCheckpoints", Kind.COUNTER, (), FLINK,
    "Checkpoints failed since the job started.")
RESTARTS = Metric(
    JOB_MANAGER_JOB + "numRestarts", Kind.COUNTER, (), FLINK,
    "Times the job restarted after a failure.")

# -- the reader (serving/metrics.py; prometheus_client adds _total to counters)
READER_REQUEST_SECONDS = Metric(
    "featurestream_reader_request_seconds", Kind.HISTOGRAM, ("route", "status"), READER,
    "Request latency by route and status.", unit="seconds",
    series_names=tuple(f"featurestream_reader_request_seconds_{s}"
                       for s in ("bucket", "count", "sum")))
READER_REDIS_ERRORS = Metric(
    "featurestream_reader_redis_errors_total", Kind.COUNTER, ("kind",), READER,
    "Failed Redis calls by kind (timeout, connection, reply; circuit_open: refused by the "
    "open circuit breaker without calling).")
READER_CACHE_HITS = Metric(
    "featurestream_reader_cache_hits_total", Kind.COUNTER, (), READER,
    "Keys answered from the in-process cache.")
READER_CACHE_MISSES = Metric(
    "featurestream_reader_cache_misses_total", Kind.COUNTER, (), READER,
    "Keys the cache did not hold (read from Redis).")
READER_CACHE_INVALIDATIONS = Metric(
    "featurestream_reader_cache_invalidations_total", Kind.COUNTER, ("kind",), READER,
    "Keys Redis said changed (kind=key) and whole-cache flushes (kind=flush: tracking lost, "
    "FLUSHALL).")

READER_BREAKER_STATE = Metric(
    "featurestream_reader_breaker_state", Kind.GAUGE, ("dependency",), READER,
    "Circuit breaker state by dependency (redis, model:NAME:vN; 0 closed, 1 half-open, 2 "
    "open); the worst of the live workers.")
READER_BREAKER_TRANSITIONS = Metric(
    "featurestream_reader_breaker_transitions_total", Kind.COUNTER, ("dependency", "state"),
    READER, "Circuit breaker transitions by dependency and the state entered.")
READER_FALLBACKS = Metric(
    "featurestream_reader_fallbacks_total", Kind.COUNTER, ("route", "level"), READER,
    "Answers served from a fallback by route and level (cached_row: rows last read from "
    "Redis).")
READER_PREDICTIONS = Metric(
    "featurestream_reader_predictions_total", Kind.COUNTER,
    ("model", "version", "variant", "fallback"), READER,
    "Predictions (/v1/predict) by model, version, variant and fallback (none, "
    "cached_features, defaults, fallback_model).")

# -- drift and data quality against training (the reader, from the scoring job's drift buckets)
FEATURE_PSI = Metric(
    "featurestream_model_feature_psi", Kind.GAUGE, ("model", "version", "feature"), READER,
    "Population stability index of a feature's scored values against training, over the "
    "drift window.")
SCORE_PSI = Metric(
    "featurestream_model_score_psi", Kind.GAUGE, ("model", "version"), READER,
    "Population stability index of the scores against training, over the drift window.")
FEATURE_NULL_RATE = Metric(
    "featurestream_model_feature_null_rate", Kind.GAUGE, ("model", "version", "feature"),
    READER, "Fraction of scored vectors whose feature was null, over the drift window.")
FEATURE_OUT_OF_RANGE_RATE = Metric(
    "featurestream_model_feature_out_of_range_rate", Kind.GAUGE,
    ("model", "version", "feature"), READER,
    "Fraction of scored vectors whose feature lay outside the training range, over the drift "
    "window.")
DRIFT_SAMPLES = Metric(
    "featurestream_model_drift_samples", Kind.GAUGE, ("model", "version"), READER,
    "Scored vectors in the drift window (PSI over few samples is noise).")

CATALOG: tuple[Metric, ...] = (
    SOURCE_EVENTS, EVENTS_IN, DEAD_LETTERS, ROWS_WRITTEN, CAPTURED_ROWS, EVENT_FRESHNESS,
    APPEND_FRESHNESS,
    SCORES, FALLBACKS, SHADOW_FAILURES, MODEL_RELOADS,
    PENDING_RECORDS, CURRENT_OFFSET, CONSUMER_GROUP_LAG, RECORDS_IN, LAST_CHECKPOINT_DURATION,
    LAST_CHECKPOINT_SIZE, COMPLETED_CHECKPOINTS, FAILED_CHECKPOINTS, RESTARTS,
    READER_REQUEST_SECONDS, READER_REDIS_ERRORS, READER_CACHE_HITS, READER_CACHE_MISSES,
    READER_CACHE_INVALIDATIONS,
    READER_BREAKER_STATE, READER_BREAKER_TRANSITIONS, READER_FALLBACKS,
    READER_PREDICTIONS,
    FEATURE_PSI, SCORE_PSI, FEATURE_NULL_RATE, FEATURE_OUT_OF_RANGE_RATE, DRIFT_SAMPLES,
)

def by_series(name: str) -> Metric | None:
    """The family a scraped series name belongs to (e.g. a histogram's ``..._bucket``)."""
    for metric in CATALOG:
        if name in metric.series:
            return metric
    return None


def markdown_table() -> str:
    """The docs' metrics table (docs/observability.md holds exactly this text)."""
    lines = ["| Metric (as scraped) | Kind | Labels | Source | Meaning |",
             "|---|---|---|---|---|"]
    for m in CATALOG:
        names = "<br>".join(f"`{s}`" for s in m.series)
        labels = ", ".join(f"`{label}`" for label in
                           (*m.labels, *(("le",) if m.kind is Kind.HISTOGRAM else ())))
        unit = f" ({m.unit})" if m.unit else ""
        lines.append(f"| {names} | {m.kind}{unit} | {labels} | "
                     f"{', '.join(s.value for s in m.sources)} | {m.help} |")
    return "\n".join(lines) + "\n"
