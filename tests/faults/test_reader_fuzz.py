"""The reader fuzzed from its own OpenAPI document (issue 13, "Hostile input"): schemathesis
builds requests for every operation the document lists, valid ones and ones that break it
(wrong types, missing and extra fields, hostile strings in paths and queries), and sends them
to the reader over HTTP, on a real redis-server with rows and a model. No answer may be a 500;
a 5xx is only the documented 503 of an unavailable dependency, with its JSON error body.
Bounded for CI: a fixed number of examples per operation and mode (about 20 s in all)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from testing import model_fixtures
from testing.chaos import ChaosRow
from testing.reader_fixtures import RedisProcess, http, reader_in_thread
from tests.integration.test_reader_breaker import seed, settings_for

pytestmark = pytest.mark.redis

EXAMPLES = 25  # per operation and generation mode
UNAVAILABLE = {"redis_unavailable", "model_unavailable", "model_circuit_open"}


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = Path(tmp_path_factory.mktemp("reader-fuzz"))
    server = RedisProcess(tmp_path)
    server.start()
    seed(server)
    model_fixtures.publish(tmp_path / "models", 1)
    try:
        with reader_in_thread(settings_for(server, tmp_path, model_name=model_fixtures.NAME,
                                           redis_timeout_ms=1_000)) as url:
            yield url
    finally:
        server.stop()


def server_error(status: int, text: str) -> bool:
    """A 5xx other than a documented 503 with its JSON error body."""
    if status < 500:
        return False
    try:
        body = json.loads(text)
    except ValueError:
        return True
    return status != 503 or not isinstance(body, dict) or body.get("error") not in UNAVAILABLE


def test_no_request_built_from_the_openapi_document_gets_a_500(
        reader: str, chaos: Callable[[ChaosRow], None]) -> None:
    schema = schemathesis.openapi.from_url(reader + "/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) >= 10, results  # every operation can be generated
    failures: list[str] = []
    statuses: Counter[int] = Counter()

    def fuzz(cases: st.SearchStrategy[schemathesis.Case]) -> None:
        @settings(max_examples=EXAMPLES * 2, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(cases)
        def call(case: schemathesis.Case) -> None:
            response = case.call(base_url=reader, timeout=10)
            statuses[response.status_code] += 1
            if server_error(response.status_code, response.text):
                failures.append(f"{response.status_code} from {case.as_curl_command()}:"
                                f" {response.text[:300]}")

        call()

    for operation in operations:
        fuzz(st.one_of([operation.as_strategy(mode) for mode in schemathesis.GenerationMode]))
    assert not failures, "\n".join(failures[:10])
    chaos(ChaosRow(
        "reader fuzzed from its OpenAPI document (schemathesis)", statuses.total(),
        statuses.total(), 0, 0, 0, None,
        f"{len(operations)} operations, valid and invalid requests: no 500; answers "
        + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))))


@pytest.mark.parametrize("body", [b'"user_id": 0', b"[1] x", b'{"user_ids": ["a"]} x'])
@pytest.mark.parametrize("route", ["/v1/features/batch", "/v1/features/item/batch",
                                   "/v1/predict", "/v1/predict/batch"])
def test_a_wrong_type_then_no_json_is_a_400(reader: str, route: str, body: bytes) -> None:
    """What the fuzzing found: msgspec reports the wrong type before the broken JSON after it,
    and the batch routes' second, untyped decode for the message raised (a 500)."""
    reply = http("POST", reader + route, body, {"Content-Type": "application/json"})
    assert reply.status == 400, reply.body
    assert reply.body["error"] in ("invalid_body", "invalid_json"), reply.body
