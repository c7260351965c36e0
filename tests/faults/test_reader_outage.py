"""The reader under load while its Redis restarts (issue 13, scenario 7): concurrent clients on
``GET /v1/features/{user_id}`` and ``POST /v1/predict`` against the real ``featurestream
serve``, while its redis-server is stopped for a few seconds and started again (empty, then
written again as the feature job would). No request hangs (each answers within the client's
timeout, far above the reader's 250 ms Redis timeout), none is a 500; during the outage each
is a 503 naming Redis, or, when the caller allows staleness, a row labelled stale; after it
the breaker closes and every answer is a fresh 200 with the rows' values."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testing import model_fixtures
from testing.chaos import ChaosRow
from testing.reader_fixtures import (
    RedisProcess,
    Reply,
    ServeProcess,
    http,
    scrape,
    start_serve,
    wait_until,
)
from tests.integration.test_reader_breaker import FAILURES, PREFIX, ROWS, seed

pytestmark = pytest.mark.redis

CLIENTS = 6
HANG_S = 5.0  # a request not answered by then counts as hung (the test fails)
REDIS_TIMEOUT_MS = 250  # the reader waits this long for Redis (load on a 2-core box)
OUTAGE_S = 3.0
PHASE_S = 2.0  # load before the outage, and after recovery


@dataclass(frozen=True)
class Answer:
    """One request of the load: when it was sent, what, and what came back (None: hung or
    the connection failed)."""

    sent: float
    route: str
    stale_allowed: bool
    reply: Reply | None
    error: str = ""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RedisProcess, ServeProcess]]:
    server = RedisProcess(tmp_path)
    server.start()
    seed(server)
    models = tmp_path / "models"
    model_fixtures.publish(models, 1)
    reader = start_serve({
        "FEATURESTREAM_REDIS_URL": server.url, "FEATURESTREAM_REDIS_KEY_PREFIX": PREFIX,
        "FEATURESTREAM_REDIS_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
        "FEATURESTREAM_MODELS_DIR": str(models), "FEATURESTREAM_MODEL_NAME": model_fixtures.NAME,
        "FEATURESTREAM_CACHE_TTL_MS": "0",
        "FEATURESTREAM_BREAKER_FAILURES": str(FAILURES),
        "FEATURESTREAM_BREAKER_RESET_MS": "300"}, tmp_path / "serve.log")
    try:
        yield server, reader
    finally:
        reader.stop()
        server.stop()


def load(url: str, stop: threading.Event, answers: list[Answer], client: int) -> None:
    """One client: features and predictions in turn, every third read allowing stale rows."""
    user = f"user-{client % 2 + 1}"
    n = 0
    while not stop.is_set():
        n += 1
        ask(url, user, n % 2 == 1, n % 3 == 0, answers)


def ask(url: str, user: str, features: bool, stale: bool, answers: list[Answer]) -> None:
    """One read of ``user``'s features (or one prediction for them), allowing stale rows if
    ``stale``; its answer, or how it failed, appended to ``answers``."""
    if features:
        route = "/v1/features"
        path, body = f"/v1/features/{user}" + ("?max_staleness_ms=60000" if stale else ""), None
    else:
        route, path = "/v1/predict", "/v1/predict"
        body = {"user_id": user, "type": "purchase", "amount": 12.5,
                **({"max_staleness_ms": 60_000} if stale else {})}
    sent = time.monotonic()
    try:
        reply = http("POST" if body else "GET", url + path, body, timeout=HANG_S)
        answers.append(Answer(sent, route, stale, reply))
    except OSError as exc:  # a timeout or a broken connection: the reader failed us
        answers.append(Answer(sent, route, stale, None, f"{type(exc).__name__}: {exc}"))


def ended(answer: Answer) -> float:
    return answer.sent + (answer.reply.seconds if answer.reply else HANG_S)


def is_fresh(answer: Answer) -> bool:
    """A 200 with the rows' current values, not a fallback."""
    reply = answer.reply
    if reply is None or reply.status != 200 or reply.body.get("stale"):
        return False
    if answer.route == "/v1/features":
        user = reply.body["user_id"]
        return reply.body["features"]["clicks_1h"] == ROWS[user]["clicks_1h"]
    return reply.body["fallback"] == "none" and reply.body["entities"]["user"]["found"] is True


def is_outage_answer(answer: Answer) -> bool:
    """A 503 naming Redis, or a row labelled stale (only when the caller allowed it)."""
    reply = answer.reply
    if reply is None:
        return False
    if reply.status == 503:
        return reply.body["error"] == "redis_unavailable" and "Redis" in reply.body["message"]
    return answer.stale_allowed and reply.status == 200 and (
        reply.body.get("stale") is True or reply.body.get("fallback") not in (None, "none"))


def test_reader_under_load_while_redis_restarts(
        served: tuple[RedisProcess, ServeProcess], chaos: Callable[[ChaosRow], None]) -> None:
    server, reader = served
    answers: list[Answer] = []
    stop = threading.Event()
    clients = [threading.Thread(target=load, args=(reader.url, stop, answers, i))
               for i in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        time.sleep(PHASE_S)
        down = time.monotonic()
        server.stop()
        time.sleep(OUTAGE_S)
        back = time.monotonic()  # then, until seeded, an empty Redis: 404s and defaults
        server.start()  # empty: the feature job writes the rows again
        seed(server)
        up = time.monotonic()
        wait_until(lambda: sum(is_fresh(a) for a in answers if a.sent > up) >= 20, 20,
                   "fresh answers after Redis came back")
        time.sleep(PHASE_S)
    finally:
        stop.set()
        for client in clients:
            client.join(HANG_S * 2)

    hung = [a for a in answers if a.reply is None]
    assert not hung, hung[:5]
    assert not [a for a in answers if a.reply and a.reply.status >= 500 and a.reply.status != 503]
    before = [a for a in answers if ended(a) < down]
    during = [a for a in answers if down + 0.2 < a.sent and ended(a) < back]
    after = [a for a in answers if a.sent > up]
    assert before and all(is_fresh(a) for a in before), [a.reply for a in before
                                                         if not is_fresh(a)][:3]
    assert during and all(is_outage_answer(a) for a in during), [
        (a.route, a.reply) for a in during if not is_outage_answer(a)][:3]
    assert {a.route for a in during} == {"/v1/features", "/v1/predict"}
    # the breaker opened: most outage answers are refusals without a Redis call
    assert (scrape(reader.url, "featurestream_reader_breaker_transitions_total",
                   dependency="redis", state="open") or 0) >= 1
    # from the first answer after which every answer is fresh
    stale_after = [a.sent for a in after if not is_fresh(a)]
    recovered = min(a.sent for a in after if not stale_after or a.sent > max(stale_after))
    assert sum(a.sent >= recovered for a in after) >= 20
    assert scrape(reader.url, "featurestream_reader_breaker_state", dependency="redis") == 0
    slowest = max(a.reply.seconds for a in during if a.reply)
    refusals = sorted(a.reply.seconds for a in during if a.reply and a.reply.status == 503)
    print(f"{len(answers)} requests from {CLIENTS} clients; {len(during)} during the "
          f"{OUTAGE_S:.0f} s outage (slowest {slowest * 1000:.0f} ms, median 503 "
          f"{refusals[len(refusals) // 2] * 1000:.1f} ms); fresh again "
          f"{recovered - up:.2f} s after Redis was back")
    chaos(ChaosRow(
        "reader under load, Redis stopped 3 s and restarted", len(answers),
        len(before) + len(after), 0, 0, 0, recovered - up,
        f"{CLIENTS} clients on /v1/features and /v1/predict: none hung, no 500; outage "
        f"answers 503 redis_unavailable or labelled stale (slowest {slowest * 1000:.0f} ms); "
        "fresh 200s with the rows' values after, breaker closed"))
