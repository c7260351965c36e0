"""The reader with Redis frozen: ``python -m bench.reader_breaker`` (about a minute).

Starts a private redis-server and ``featurestream serve`` (2 workers, Redis timeout 100 ms,
cache off), reads a user once per connection so each worker remembers the row, freezes Redis
(SIGSTOP: connections stay open, nothing answers) and offers a fixed load (hey -q) of single
GETs:

- ``healthy``: Redis answering (the baseline);
- ``frozen, stale ok``: ``?max_staleness_ms=600000``, the breaker open: the cached row, stale;
- ``frozen, 503``: without it, the breaker open: a 503 at once;
- ``frozen, no breaker``: the breaker kept closed (``BREAKER_FAILURES`` huge): every request
  waits out the timeout, as the reader did before it had breakers.

While open, each worker lets one probe through per reset interval (1 s), which waits out the
timeout (0.2% of the requests at 1,000/s). Prints rps, p50/p99 and the answers other than 200;
writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.reader import RESULTS, box_busy_percent, ensure_tools, hey
from testing.reader_fixtures import RedisProcess, feature_row, http, seed_rows, start_serve

USER = "user-00042"
ALLOW_MS = 600_000


def serve_env(redis_url: str, breaker_failures: int) -> dict[str, str]:
    return {"FEATURESTREAM_REDIS_URL": redis_url, "FEATURESTREAM_SERVE_WORKERS": "2",
            "FEATURESTREAM_REDIS_TIMEOUT_MS": "100", "FEATURESTREAM_CACHE_TTL_MS": "0",
            "FEATURESTREAM_BREAKER_FAILURES": str(breaker_failures),
            "FEATURESTREAM_BREAKER_RESET_MS": "1000"}


def measure(name: str, url: str, rate: int, seconds: int) -> dict[str, Any]:
    busy = box_busy_percent()
    return {"case": name, "busy%": round(busy), **hey(url, rate, 4, seconds)}


def run(seconds: int, rate: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-breaker-") as tmp:
        workdir = Path(tmp)
        server = RedisProcess(workdir)
        server.start()
        now = int(time.time() * 1000)
        seed_rows(server.client(), "fs:", {USER: feature_row(now - 1_000)}, updated_at=now)
        try:
            for breaker_failures in (5, 1_000_000_000):
                served = start_serve(serve_env(server.url, breaker_failures),
                                     workdir / f"serve-{breaker_failures}.log")
                single = f"{served.url}/v1/features/{USER}"
                stale_ok = f"{single}?max_staleness_ms={ALLOW_MS}"
                try:
                    for _ in range(40):  # a connection each: both workers remember the row
                        assert http("GET", stale_ok).status == 200
                    if breaker_failures == 5:
                        results.append(measure("healthy", stale_ok, rate, seconds))
                    server.freeze()
                    if breaker_failures == 5:
                        results.append(measure("frozen, stale ok", stale_ok, rate, seconds))
                        results.append(measure("frozen, 503", single, rate, seconds))
                    else:
                        results.append(measure("frozen, no breaker", single, rate, seconds))
                finally:
                    server.thaw()
                    served.stop()
        finally:
            server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.reader_breaker", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each measurement")
    parser.add_argument("--rate", type=int, default=1_000, help="offered requests/s")
    args = parser.parse_args(argv)
    ensure_tools()
    results = run(args.seconds, args.rate)
    print(f"{'case':<20} {'offered':>8} {'rps':>7} {'p50 ms':>8} {'p99 ms':>8} {'not 200':>8}"
          f" {'busy%':>6}")
    for r in results:
        print(f"{r['case']:<20} {args.rate:>8} {r['rps']:>7.0f} {r['p50_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f} {r['errors']:>8} {r['busy%']:>6}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"reader-breaker-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"rate": args.rate, "seconds": args.seconds,
                               "results": results}, indent=2))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
