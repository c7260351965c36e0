"""Benchmark of request-time scoring: ``python -m bench predict`` (about two minutes).

Starts a private redis-server and ``featurestream serve`` (two workers, cache off) on free
ports, seeds 10,000 users in the feature job's layout (:func:`bench.reader.seed`), publishes a
model trained on generated history (:func:`bench.scoring_job.publish_model`: every built-in
feature), then measures with the reader bench's tools (:func:`bench.reader.hey`,
:func:`bench.reader.wrk`):

- the reader's own time per request (the answers' ``timing.total_ms``, sequential requests);
- the request scorer's own CPU per call (route, assemble, predict; no HTTP, no Redis) for one
  request and for 100: what runs on the event loop, so whether it needs a thread;
- ``/v1/predict`` at 1,000 req/s offered (hey -q; ceiling p99 5 ms) and at saturation (wrk,
  closed loop, random users), beside ``GET /v1/features/{user_id}`` at the same offered load
  (the same box's baseline: what the HTTP path costs without scoring);
- ``/v1/predict/batch`` of 100 at 20 req/s offered (ceiling p99 20 ms) and at saturation;
- ``/v1/predict`` with Redis frozen (SIGSTOP) at 1,000 req/s offered, the requests allowing
  cached rows (``max_staleness_ms``), after the breaker opened (ceiling p99 10 ms): the answers'
  status and fallback are counted.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.reader import USERS, box_busy_percent, ensure_tools, hey, seed, wrk
from bench.scoring_job import publish_model
from featurestream.settings import Settings
from featurestream.udfs.contract.events import Event
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.request_scorer import FetchedRow, RequestScorer
from featurestream.udfs.scoring.vector import FeatureCatalog
from testing.reader_fixtures import RedisProcess, feature_row, http, start_serve

CEILINGS_MS = {"single": 5.0, "batch": 20.0, "frozen": 10.0, "features": 2.0}  # p99
BATCH = 100
SECONDS = 5
STALENESS_MS = 600_000  # what the frozen-Redis requests allow

WRK_PREDICT = """
local headers = {["Content-Type"] = "application/json"}
init = function(args) math.randomseed(42) end
request = function()
  local body = string.format(
    '{"user_id":"user-%05d","type":"purchase","amount":%d.5,"item_id":"sku-%d"}',
    math.random(0, USERS - 1), math.random(1, 500), math.random(1, 50))
  return wrk.format("POST", "/v1/predict", headers, body)
end
"""
WRK_PREDICT_BATCH = """
local headers = {["Content-Type"] = "application/json"}
init = function(args) math.randomseed(42) end
request = function()
  local reqs = {}
  for j = 1, BATCH do
    reqs[j] = string.format('{"user_id":"user-%05d","type":"purchase","amount":%d.5}',
                            math.random(0, USERS - 1), math.random(1, 500))
  end
  return wrk.format("POST", "/v1/predict/batch", headers,
                    '{"requests":[' .. table.concat(reqs, ",") .. ']}')
end
"""


def request(user: int, **extra: Any) -> dict[str, Any]:
    return {"user_id": f"user-{user:05d}", "type": "purchase", "amount": 42.5, **extra}


def scorer_cpu(settings: Settings) -> dict[str, float]:
    """Median wall time (us) of route + score for 1 and for BATCH requests, rows given (as
    seeded)."""
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name,
                             settings.compiled_predictor)
    scorer = RequestScorer(ServingModels(registry, (), None, 60_000),
                           FeatureCatalog.from_definitions(settings.load_definitions()))
    now = int(time.time() * 1000)
    row = feature_row(now - 1_000, clicks_1h=3, spend_24h=12.5, events_24h=17)
    timings = {}
    for size in (1, BATCH):
        events = [Event(f"e{i}", f"user-{i:05d}", "purchase", None, 42.5, now, None)
                  for i in range(size)]
        rows = {("user", e.user_id): FetchedRow(row) for e in events}
        samples = []
        for _ in range(300 if size == 1 else 50):
            start = time.perf_counter()
            scorer.score(scorer.route(events), rows, now)
            samples.append((time.perf_counter() - start) * 1e6)
        timings[f"scorer_{size}_us"] = statistics.median(samples)
    return timings


def server_time(url: str, path: str, body: bytes, count: int) -> dict[str, float]:
    """The reader's own time (the answers' ``timing.total_ms``) over ``count`` sequential
    requests: what the box's load adds to the clients' figures shows as the gap."""
    totals = sorted(http("POST", url + path, body).body["timing"]["total_ms"]
                    for _ in range(count))
    return {"server_p50_ms": totals[count // 2], "server_p99_ms": totals[count * 99 // 100]}


def frozen(url: str, redis: RedisProcess, seconds: int) -> dict[str, Any]:
    """hey -q 1,000/s on one user while Redis is stopped, after the breaker opened; and how
    the answers were labelled (sampled before and after the run)."""
    body = request(4242, max_staleness_ms=STALENESS_MS)
    for _ in range(20):  # each worker reads the row once, so it has a last known row
        http("POST", url + "/v1/predict", body)
    redis.freeze()
    try:
        opening = []
        for _ in range(40):  # until both workers' breakers are open
            reply = http("POST", url + "/v1/predict", body)
            opening.append(reply.seconds * 1000)
        measured = hey(url + "/v1/predict", 1_000, 4, seconds, json.dumps(body).encode())
        labels: Counter[str] = Counter()
        for _ in range(50):
            reply = http("POST", url + "/v1/predict", body)
            labels[f"{reply.status} {reply.body.get('fallback', reply.body.get('error'))}"] += 1
    finally:
        redis.thaw()
    return {**measured, "opening_max_ms": max(opening), "answers": dict(labels)}


def predict_section(seconds: int = SECONDS, workers: int = 2) -> dict[str, Any]:
    """Every measurement; returns the report (not yet written)."""
    ensure_tools()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="featurestream-bench-") as tmp:
        workdir = Path(tmp)
        models = workdir / "models"
        settings = Settings().replace(models_dir=str(models), home=workdir)
        print("bench: training a model ...", flush=True)
        publish_model(settings)
        redis = RedisProcess(workdir)
        redis.start()
        try:
            seed(redis)
            cpu = scorer_cpu(settings)
            print(f"bench: request scorer CPU, median: {cpu['scorer_1_us']:.0f} us for one, "
                  f"{cpu['scorer_100_us']:.0f} us for {BATCH}", flush=True)
            served = start_serve({
                "FEATURESTREAM_REDIS_URL": redis.url, "FEATURESTREAM_SERVE_WORKERS": str(workers),
                "FEATURESTREAM_MODELS_DIR": str(models), "FEATURESTREAM_CACHE_TTL_MS": "0"},
                workdir / "serve.log")
            try:
                url = served.url
                one = json.dumps(request(4242)).encode()
                batch = json.dumps({"requests": [request(i * 97 % USERS)
                                                 for i in range(BATCH)]}).encode()
                wrk(url, WRK_PREDICT, 4, 1)  # warm-up
                plan: list[tuple[str, str, str, Callable[[], dict[str, Any]]]] = [
                    ("single", "hey -q", "1000/s c=4",
                     lambda: hey(url + "/v1/predict", 1_000, 4, seconds, one)),
                    ("features", "hey -q", "1000/s c=4",  # the same box's baseline
                     lambda: hey(url + "/v1/features/user-04242", 1_000, 4, seconds)),
                    ("single", "wrk", "c=16", lambda: wrk(url, WRK_PREDICT, 16, seconds)),
                    ("single", "wrk", "c=64", lambda: wrk(url, WRK_PREDICT, 64, seconds)),
                    ("batch", "hey -q", "20/s c=2",
                     lambda: hey(url + "/v1/predict/batch", 20, 2, seconds, batch)),
                    ("batch", "wrk", "c=4", lambda: wrk(url, WRK_PREDICT_BATCH, 4, seconds)),
                    ("frozen", "hey -q", "1000/s c=4", lambda: frozen(url, redis, seconds)),
                ]
                served_time = {
                    "single": server_time(url, "/v1/predict", one, 500),
                    "batch": server_time(url, "/v1/predict/batch", batch, 200)}
                print(f"bench: server time p50/p99 (timing.total_ms, sequential): single "
                      f"{served_time['single']['server_p50_ms']:.2f}/"
                      f"{served_time['single']['server_p99_ms']:.2f} ms, batch "
                      f"{served_time['batch']['server_p50_ms']:.2f}/"
                      f"{served_time['batch']['server_p99_ms']:.2f} ms", flush=True)
                for endpoint, tool, load, measure in plan:
                    busy = box_busy_percent()
                    result = {"endpoint": endpoint, "tool": tool, "load": load,
                              "busy_before_pct": busy, **measure()}
                    results.append(result)
                    print(_line(result), flush=True)
            finally:
                served.stop()
        finally:
            redis.stop()
    return {"workers": workers, "seconds": seconds, "users": USERS, "batch_size": BATCH,
            "ceilings_p99_ms": CEILINGS_MS, **cpu, "server_time": served_time,
            "results": results}


def _line(r: dict[str, Any]) -> str:
    extra = f"  answers {r['answers']}" if "answers" in r else ""
    return (f"{r['endpoint']:<8}{r['tool']:<8}{r['load']:<12}{r['rps']:>8.0f} req/s"
            f"{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f} ms p50/p99  errors {r['errors']}"
            f"  busy {r['busy_before_pct']:.0f}%{extra}")


def predict_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The table's rows: each figure beside its ceiling."""
    rows = [("request scorer CPU, 1 / 100 requests (median)",
             f"{report['scorer_1_us']:.0f}/{report['scorer_100_us']:.0f} us",
             "inline on the event loop")]
    for endpoint, served in report["server_time"].items():
        rows.append((f"reader's own time (timing.total_ms), {endpoint}, p50/p99",
                     f"{served['server_p50_ms']:.2f}/{served['server_p99_ms']:.2f} ms",
                     "sequential requests"))
    names = {"single": "/v1/predict", "batch": f"/v1/predict/batch of {BATCH}",
             "features": "baseline: GET /v1/features/{user_id} (its own target)",
             "frozen": "/v1/predict, Redis frozen (breaker open)"}
    for r in report["results"]:
        ceiling = CEILINGS_MS[r["endpoint"]]
        verdict = ("" if r["tool"] == "wrk" else
                   " ok" if r["p99_ms"] < ceiling and not r["errors"] else " MISSED")
        rows.append((f"{names[r['endpoint']]} {r['tool']} {r['load']}, p50/p99 ms",
                     f"{r['rps']:,.0f} {r['p50_ms']:.1f}/{r['p99_ms']:.1f}",
                     f"p99 < {ceiling:.0f} ms{verdict}" if r["tool"] != "wrk"
                     else "saturation"))
    return rows
