"""``featurestream status``: a running job's health line (lag, freshness p99, dead letters,
checkpoints) and the model line (split, worst PSI), rendered from plain reports."""

from __future__ import annotations

from featurestream.devstack.commands import JobReport, ModelReport, model_line, status_lines
from featurestream.devstack.component import ComponentStatus, Job
from featurestream.flink_rest import CheckpointStats
from featurestream.udfs.telemetry.pipeline_stats import FEATURE_JOB as NAMES
from featurestream.udfs.telemetry.pipeline_stats import Snapshot, job_stats, series

NOW_MS = 1_700_000_000_000


def snapshot(at: float, dead: float, fresh: float, lag: float) -> Snapshot:
    bucket = NAMES.freshness["append"]
    return Snapshot(at, {
        series(NAMES.dead_letters, reason="MalformedRecord", stage="decode"): dead,
        series(bucket, le="0.25"): fresh, series(bucket, le="+Inf"): fresh,
        series(NAMES.lag, ): lag,
    })


def test_a_running_job_gets_its_health_line() -> None:
    stats = job_stats(snapshot(0.0, 2, 10, 0), snapshot(1.0, 5, 30, 12), NAMES)
    checkpoints = CheckpointStats(7, 1, 0, 35, 3 * 1024 * 1024, NOW_MS - 4_000)
    flink = ComponentStatus("flink", True, "http://127.0.0.1:8081", 12, "2 slots",
                            (Job("abc", "featurestream-features", "RUNNING"),
                             Job("def", "featurestream-scoring", "RUNNING")))
    lines = status_lines([flink], {"abc": JobReport(stats, checkpoints)},
                         [ModelReport("purchase_risk", {3: 0.9, 4: 0.1}, (4, "amount", 0.31))],
                         NOW_MS)
    assert lines == [
        "flink   up    http://127.0.0.1:8081  pid 12  2 slots",
        "         job featurestream-features  abc  RUNNING",
        "             lag 12  freshness p99 0.248 s (append), - (event)  "
        "dead letters 3.0/s (MalformedRecord 3.0/s), 5 in all  "
        "checkpoints 7 (1 failed), last 35 ms 3.0 MiB 4 s ago",
        "         job featurestream-scoring  def  RUNNING",
        "model  purchase_risk  live v3 90%, v4 10%  worst PSI v4 amount 0.310 (drift)",
    ]


def test_quiet_job_and_models_without_drift() -> None:
    stats = job_stats(None, Snapshot(0.0, {}), NAMES)
    flink = ComponentStatus("flink", True, "u", None, "", (Job("abc", "f", "RUNNING"),))
    [_, _, health] = status_lines([flink], {"abc": JobReport(stats, None)}, [], NOW_MS)
    assert health == ("             lag ?  freshness p99 - (append), - (event)  "
                      "dead letters 0.0/s, 0 in all  checkpoints ?")
    assert model_line(ModelReport("m", {}, problem="no version published")) == (
        "model  m  live none  no version published")
    assert model_line(ModelReport("m", {2: 1.0}, (2, "x", 0.05))) == (
        "model  m  live v2 100%  worst PSI v2 x 0.050")


def test_the_model_line_names_the_experiment_record_and_the_shadow() -> None:
    report = ModelReport("m", {1: 0.5, 2: 0.5}, problem="no scored samples in the drift window",
                         experiment="exp-3", shadow=4)
    assert model_line(report) == ("model  m  live v1 50%, v2 50% (exp-3)  shadow v4  "
                                  "no scored samples in the drift window")
