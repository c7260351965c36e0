"""``/v1/status`` from a fake Flink REST API: metric ids become labelled series, two samplings
give rates and the recent freshness histogram, one sampling serves a second of polls, and an
unreachable Flink is an answer (with the models), not an error."""

from __future__ import annotations

import asyncio
import math
import urllib.parse
from typing import Any

import msgspec
import pytest

from featurestream.flink_rest import FlinkRest, metric_series, metrics_query
from featurestream.serving.drift import ModelDrift
from featurestream.serving.routes import ROUTES
from featurestream.serving.status import FlinkJobs, PipelineStatus, StatusBody
from featurestream.settings import Settings
from featurestream.udfs.telemetry.pipeline_stats import JOB_NAMES

OP = "MaterializeFeatures"
GROUP = f"{OP}.featurestream"


def test_metric_ids_become_series() -> None:
    assert metric_series(f"{GROUP}.stage.window.reason.LateEvent.dead_letters") == (
        "dead_letters", (("reason", "LateEvent"), ("stage", "window")))
    assert metric_series(f"{GROUP}.append_freshness_seconds.le.0_25.bucket") == (
        "append_freshness_seconds_bucket", (("le", "0.25"),))
    assert metric_series(f"{GROUP}.append_freshness_seconds.le.+Inf.bucket") == (
        "append_freshness_seconds_bucket", (("le", "+Inf"),))
    assert metric_series(f"{GROUP}.rows_written") == ("rows_written", ())
    assert metric_series("Source__events.pendingRecords") == ("pendingRecords", ())


class FakeFlink(FlinkRest):
    """Answers the REST paths the status reads from ``metrics`` (id -> summed value)."""

    def __init__(self) -> None:
        super().__init__("http://ops:s3cret@flink.invalid:8081")
        self.metrics: dict[str, float] = {}
        self.calls = 0
        self.down = False

    def call(self, path: str, method: str = "GET", body: Any = None) -> Any:
        self.calls += 1
        if self.down:
            raise OSError("connection refused")
        if path == "/jobs/overview":
            return {"jobs": [{"jid": "j1", "name": JOB_NAMES["features"], "state": "RUNNING"},
                             {"jid": "j0", "name": JOB_NAMES["features"], "state": "CANCELED"},
                             {"jid": "x", "name": "someone-else", "state": "RUNNING"}]}
        if path == "/jobs/j1":
            return {"jid": "j1", "name": JOB_NAMES["features"], "state": "RUNNING",
                    "vertices": [{"id": "v1", "name": OP}]}
        if path == "/jobs/j1/checkpoints":
            return {"counts": {"completed": 3, "failed": 1, "in_progress": 0},
                    "latest": {"completed": {"end_to_end_duration": 42, "checkpointed_size": 2048,
                                             "latest_ack_timestamp": 1}}}
        listing = "/jobs/j1/vertices/v1/subtasks/metrics"
        if path == listing:
            return [{"id": i} for i in [*self.metrics, f"{OP}.numRecordsIn"]]
        if path.startswith(listing + "?get="):
            names = path.split("=", 1)[1].split("&")[0]
            wanted = [urllib.parse.unquote(n) for n in names.split(",")]
            assert f"{OP}.numRecordsIn" not in wanted  # only ours and the named ones are read
            return [{"id": i, "sum": self.metrics[i]} for i in wanted]
        raise AssertionError(path)


def freshness_ids(counts: dict[str, float]) -> dict[str, float]:
    return {f"{GROUP}.append_freshness_seconds.le.{le}.bucket": c for le, c in counts.items()}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_metric_ids_are_percent_encoded_in_the_query() -> None:
    # a bare '+' reads as a space, and one bad id emptied the JobManager's whole answer
    ids = ["entity_features_->_redis.featurestream.event_freshness_seconds.le.+Inf.bucket",
           "entity_features_->_redis.featurestream.rows_written"]
    query = metrics_query("/jobs/j/vertices/v/subtasks/metrics", ids)
    path, _, params = query.partition("?")
    assert path == "/jobs/j/vertices/v/subtasks/metrics"
    assert "+" not in params and ">" not in params and params.endswith("&agg=sum")
    names = urllib.parse.unquote(params.removeprefix("get=").removesuffix("&agg=sum"))
    assert names.split(",") == ids


def test_two_samplings_give_rates_and_recent_freshness() -> None:
    flink, clock = FakeFlink(), Clock()
    jobs = FlinkJobs(flink, cache_s=1.0, clock=clock)
    flink.metrics = {f"{GROUP}.source_events": 100, f"{GROUP}.rows_written": 40,
                     f"{GROUP}.stage.decode.reason.MalformedRecord.dead_letters": 2,
                     f"{OP}.pendingRecords": 5,
                     **freshness_ids({"0_5": 10, "1_0": 10, "+Inf": 10})}
    state, [first] = asyncio.run(jobs.status())
    assert state.reachable and first.job == "features" and first.id == "j1"
    assert first.events_in == 100 and first.events_per_s is None
    assert first.dead_letters == {"MalformedRecord": 2} and first.lag == 5
    assert first.freshness["append"].window == "since_start"
    assert first.checkpoints is not None and first.checkpoints.completed == 3
    assert first.checkpoints.last_size_bytes == 2048

    calls = flink.calls
    clock.now += 0.5
    asyncio.run(jobs.status())  # within the cache time: no sampling
    assert flink.calls == calls

    flink.metrics.update({f"{GROUP}.source_events": 300,
                          f"{GROUP}.stage.decode.reason.MalformedRecord.dead_letters": 6,
                          **freshness_ids({"0_5": 10, "1_0": 30, "+Inf": 30})})
    clock.now += 1.5  # two seconds after the first sampling (by the fake clock)
    _, [second] = asyncio.run(jobs.status())
    assert flink.calls > calls
    # rates are per second of the monotonic time between the samples the REST client took
    assert second.events_per_s is not None and second.events_per_s > 0
    assert second.dead_letters == {"MalformedRecord": 6}
    recent = second.freshness["append"]
    assert recent.window == "recent"
    counts = {b.le: b.count for b in recent.buckets}
    assert counts[1.0] == 20 and sum(counts.values()) == 20 and None in counts
    assert recent.p50_s == pytest.approx(0.875)  # halfway through (0.75, 1]


class NoDrift:
    """A drift monitor whose registry holds no model."""

    def unknown(self, model: str) -> str | None:
        return f"no model {model!r} in the registry"

    async def drift(self, model: str, now_ms: int) -> ModelDrift:
        raise AssertionError("not asked for a model without versions")


def test_unreachable_flink_is_an_answer(tmp_path: Any) -> None:
    flink = FakeFlink()
    flink.down = True
    settings = Settings().replace(models_dir=str(tmp_path), experiment="v3:90,v4:10")
    status = PipelineStatus(settings, NoDrift(), FlinkJobs(flink))  # type: ignore[arg-type]
    body = asyncio.run(status.status())
    assert not body.flink.reachable and "connection refused" in (body.flink.message or "")
    assert "s3cret" not in (body.flink.message or "")  # a password in the URL is masked
    assert body.jobs == []
    [model] = body.models
    assert model.split == {"v3": 0.9, "v4": 0.1} and model.drift is None
    assert "no model" in (model.message or "")
    decoded = msgspec.json.decode(msgspec.json.encode(body), type=StatusBody)
    assert decoded == body
    assert b"/v1/status" in status.page and b"data-metric" in status.page
    assert math.isfinite(body.as_of)


def test_status_is_behind_the_token_and_the_page_is_not() -> None:
    routes = {e.path: e for e in ROUTES}
    assert routes["/v1/status"].protected and routes["/v1/status"].answer is StatusBody
    assert not routes["/ui"].protected and routes["/ui"].media_type == "text/html"
