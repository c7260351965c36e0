"""One-command benchmark: ``python -m bench`` (about twelve minutes).

Starts a private local stack (tansu, redis-server, Flink) on free ports in a temporary home and
measures, on this machine with everything on it:

- raw limits: confluent-kafka consume-only (one Python consumer: not the job's client, so not
  its ceiling) and with json.loads, Avro decode, Redis pipelined HSET and single GET;
- the feature job's ceilings at parallelism 1 and 2 (bench/ceilings.py): Flink's own Kafka
  source into a discarding sink, and that source batched into a Python operator that only
  counts; the job's figures are printed as a share of each (``python -m bench ceilings`` runs
  only these and the feature job's two throughput runs, in about five minutes);
- the feature job: sustained events/s at parallelism 1 and 2 (preloaded backlog; the last run
  over ~100k equally active users, with the resident memory of the whole stack as it ends; one
  more at P=2 with an item entity and approximate distinct counts beside the user features,
  with the memory per active key), and
  produce-to-Redis freshness p50/p95/p99 at fixed offered loads (5k/s at P=1 and P=2; 10k/s at
  P=2, about what the generator sustains beside the job on two cores; 1k/s);
- the scoring job: sustained events/s (every event scored, from rows captured ahead) at
  parallelism 1 and 2, and produce-to-score latency at 2k/s offered, for exactly-once (the
  default) and at-least-once, with the rows captured ahead and with the feature job beside
  (``python -m bench scoring`` runs only this section, on a stack of its own, in about eleven
  minutes);
- the reader: single GET and 100-user batch with wrk (saturation) and hey -q (fixed load);
- backfill: one process replaying 200k generated events from a JSON-lines and an Avro file into
  a training set, beside the Avro decode ceiling (no stack; ``python -m bench backfill`` runs
  only this section, in about a minute);
- predictors: compiled predictors (lleaves; tl2cgen and ONNX Runtime with ``--compare-python``)
  against ``Booster.predict``, per row and per 1,000 rows (no stack; ``python -m bench
  predictors`` runs only this section, in about a minute: bench/predictors.py);
- request-time scoring: ``/v1/predict`` at 1,000 req/s offered and at saturation, batches of
  100, and with Redis frozen (a reader and Redis of their own; ``python -m bench predict`` runs
  only this section, in about two minutes: bench/predict.py).

Prints one table with each figure next to its ceiling or target, writes JSON to
``bench/results/``, and stops everything it started.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.backfill import backfill_rows, measure_backfill
from bench.ceiling_job import MODES
from bench.ceilings import measure_ceiling
from bench.feature_job import measure_freshness, measure_throughput
from bench.predict import predict_rows, predict_section
from bench.predictors import predictor_rows, predictors_section
from bench.raw_limits import measure_raw_limits
from bench.reader import run_reader_bench
from bench.scoring_job import run_scoring, scoring_rows, scoring_section
from featurestream.devstack import LocalStack
from featurestream.devstack.private import private_stack

RESULTS = Path(__file__).resolve().parent / "results"
# The memory run: uniform users, enough events that ~100k of the 120k have state at the end.
MEMORY_EVENTS, MEMORY_USERS = 1_500_000, 120_000
WARM_UP_EVENTS = 300_000
READER_SETTLE_S = 15  # the stack's processes take a while to go; the reader's tails notice


def run(events: int, reader_seconds: int) -> dict[str, Any]:
    """Every measurement; returns the report."""
    report = _header()
    print("bench: starting a private stack ...", flush=True)
    with private_stack(echo=lambda line: None) as stack:
        report["raw"] = measure_raw_limits(stack.settings)
        print(f"bench: raw limits {report['raw']}", flush=True)
        # Warm-up, not reported: a fresh TaskManager JVM runs the first job's code cold.
        measure_throughput(stack, 2, WARM_UP_EVENTS, 10_000, 0.9)
        report["ceilings"] = ceilings(stack, events)
        report["feature_throughput"] = [
            dataclasses.asdict(measure_throughput(stack, p, n, users, skew))
            for p, n, users, skew in ((1, events, 10_000, 0.9), (2, events, 10_000, 0.9),
                                      (2, MEMORY_EVENTS, MEMORY_USERS, 0.0))]
        report["feature_items"] = dataclasses.asdict(
            measure_throughput(stack, 2, events, 10_000, 0.9, items=True))
        report["feature_freshness"] = [
            dataclasses.asdict(measure_freshness(stack, rate, 20, 10_000, p))
            for rate, p in ((5_000, 1), (5_000, 2), (10_000, 2), (1_000, 1))]
        report |= run_scoring(stack, events)
    time.sleep(READER_SETTLE_S)
    report["reader"] = run_reader_bench(reader_seconds, workers=2, cache_ttl_ms=1_000,
                                        caches=("off",))["results"]
    report["backfill"] = dataclasses.asdict(measure_backfill())
    return report


def ceilings(stack: LocalStack, events: int) -> list[dict[str, Any]]:
    """The feature job's ceilings at parallelism 1 and 2 (bench/ceilings.py)."""
    return [dataclasses.asdict(measure_ceiling(stack, mode, p, events, 10_000))
            for p in (1, 2) for mode in MODES]


def ceilings_section(events: int) -> dict[str, Any]:
    """The ceilings and the feature job's throughput at P=1 and P=2, on a stack of its own."""
    report = _header()
    print("bench: starting a private stack ...", flush=True)
    with private_stack(echo=lambda line: None) as stack:
        measure_throughput(stack, 2, WARM_UP_EVENTS, 10_000, 0.9)  # warm-up
        report["ceilings"] = ceilings(stack, events)
        report["feature_throughput"] = [dataclasses.asdict(
            measure_throughput(stack, p, events, 10_000, 0.9)) for p in (1, 2)]
    return report


def _header() -> dict[str, Any]:
    return {
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB",
    }


def table(report: dict[str, Any]) -> str:
    """The figures next to their ceilings and the issue's targets (the sections run)."""
    lines = [f"featurestream benchmark, {report['started_at']}, {report['machine']}", "",
             f"{'what':<62}{'figure':>18}  {'ceiling / target'}"]

    def add(what: str, figure: str, versus: str) -> None:
        lines.append(f"{what:<62}{figure:>18}  {versus}")

    if "raw" in report:
        _stack_rows(report, add)
    elif "ceilings" in report:  # the ceilings section alone
        _throughput_rows(report, add)
    elif "scoring_throughput" in report:  # the scoring section alone
        for row in scoring_rows(report, None):
            add(*row)
    if "backfill" in report:
        for row in backfill_rows(report["backfill"]):
            add(*row)
    if "predictors" in report:
        for row in predictor_rows(report["predictors"]):
            add(*row)
    if "predict" in report:
        for row in predict_rows(report["predict"]):
            add(*row)
    return "\n".join(lines)


def _stack_rows(report: dict[str, Any], add: Callable[[str, str, str], None]) -> None:
    """The rows of the sections that ran on the stack."""
    raw = report["raw"]
    consume = raw["kafka_consume_per_s"]

    add("kafka consume-only (1 Python consumer)", f"{consume:,.0f}/s", "not the job's client")
    add("kafka consume + json.loads", f"{raw['kafka_consume_json_per_s']:,.0f}/s", "")
    add("avro decode (EventDecoder)", f"{raw['avro_decode_per_s']:,.0f}/s", "")
    add("redis pipelined HSET", f"{raw['redis_pipelined_hset_per_s']:,.0f}/s", "")
    add("redis single HGETALL p50 / p99",
        f"{raw['redis_get_p50_us']:.0f}/{raw['redis_get_p99_us']:.0f} us", "")
    _throughput_rows(report, add)
    t = report["feature_throughput"][-1]
    add(f"stack memory (RSS, all processes), {t['users_with_rows']:,} users in state",
        f"{t['stack_rss_mib']['total']:,.0f} MiB", "target < 6,144 MiB")
    t = report["feature_items"]
    add("feature job, P=2, users + items (approx distinct), events/s",
        f"{t['events_per_s']:,.0f}/s", _share(report, t))
    add(f"  memory per active key ({t['users_with_rows']:,} users, "
        f"{t['items_with_rows']:,} items)", f"{t['bytes_per_key'] / 1024:,.1f} KiB",
        "stack RSS over the idle stack / keys")
    for f in report["feature_freshness"]:
        add(f"feature freshness, P={f['parallelism']}, {f['offered_per_s']:,.0f}/s offered "
            f"({f['achieved_per_s']:,.0f}/s sent), p50/p95/p99",
            f"{f['p50_ms']:.0f}/{f['p95_ms']:.0f}/{f['p99_ms']:.0f} ms", "target p99 < 1,000 ms")
    for row in scoring_rows(report, consume):
        add(*row)
    for r in report["reader"]:
        target = {"single": "p99 < 2 ms", "batch": "p99 < 10 ms"}[r["endpoint"]]
        add(f"reader {r['endpoint']} {r['tool']} {r['load']} req/s, p50/p99 ms",
            f"{r['rps']:,.0f} {r['p50_ms']:.1f}/{r['p99_ms']:.1f}", target)


def _throughput_rows(report: dict[str, Any], add: Callable[[str, str, str], None]) -> None:
    """The ceilings, then each feature job run as a share of its parallelism's ceilings."""
    names = {"discard": "ceiling: Flink Kafka source -> discarding sink",
             "python": "ceiling: same source, batches into Python, no work"}
    for c in report["ceilings"]:
        add(f"{names[c['mode']]}, P={c['parallelism']}", f"{c['events_per_s']:,.0f}/s", "")
    for t in report["feature_throughput"]:
        add(f"feature job, parallelism {t['parallelism']}, {t['users']:,} users",
            f"{t['events_per_s']:,.0f}/s", _share(report, t) + "; target 30,000 at P=2")


def _share(report: dict[str, Any], run: dict[str, Any]) -> str:
    """A feature job run's events/s as a share of the ceilings at its parallelism."""
    by_mode = {c["mode"]: c["events_per_s"] for c in report["ceilings"]
               if c["parallelism"] == run["parallelism"]}
    return (f"{run['events_per_s'] / by_mode['discard']:.0%} of the Kafka source, "
            f"{run['events_per_s'] / by_mode['python']:.0%} of the Python hand-off")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=600_000,
                        help="backlog size for the throughput runs")
    parser.add_argument("--reader-seconds", type=int, default=3)
    parser.add_argument("section", nargs="?",
                        choices=("all", "ceilings", "backfill", "scoring", "predictors",
                                 "predict"),
                        default="all", help="all (default), or only the ceilings and the feature "
                        "job's throughput (a stack of its own), or only the backfill section (no "
                        "stack), or only the scoring section (a stack of its own), or only the "
                        "compiled predictors (no stack), or only request-time scoring (a "
                        "reader and Redis of its own: bench/predict.py)")
    parser.add_argument("--compare-python", metavar="PYTHON",
                        help="predictors: also measure tl2cgen and ONNX Runtime in this "
                        "interpreter's environment (bench/predictors.py)")
    args = parser.parse_args(argv)
    if args.section == "backfill":
        report = {**_header(), "backfill": dataclasses.asdict(measure_backfill())}
    elif args.section == "ceilings":
        report = ceilings_section(args.events)
    elif args.section == "scoring":
        report = {**_header(), **scoring_section(args.events)}
    elif args.section == "predictors":
        report = {**_header(), "predictors": predictors_section(args.compare_python)}
    elif args.section == "predict":
        report = {**_header(), "predict": predict_section()}
    else:
        report = run(args.events, args.reader_seconds)
    text = table(report)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
