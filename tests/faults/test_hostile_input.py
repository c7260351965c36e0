"""Hostile input on the real stack (issue 13): the corpus of :mod:`testing.hostile` -- truncated
Avro, an unknown schema id, wrong types, missing fields, empty keys, 1 MB strings, a 10 MB
record, NaN and infinity, 1970 and the year 3000, non-UTF-8 bytes, JSON nested 100,000 deep --
mixed into a valid stream for the feature job. No job failure; each bad record in the DLQ once
with its stage and precise reason; the valid ones (a 1 MB item id, a 10 MB record) counted, so
every row equals the oracle; the dead-letter metric counts each reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.private import isolated
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.telemetry import catalog
from featurestream.udfs.wire.dead_letters import (
    HEADER_EXCEPTION_CLASS,
    HEADER_EXCEPTION_MESSAGE,
    HEADER_ORIGINAL_BYTES,
    HEADER_STAGE,
    MAX_VALUE_BYTES,
)
from testing.chaos import ChaosRow
from testing.hostile import MB, hostile_corpus
from tests.integration.conftest import (
    cancel_job,
    job_diagnostics,
    job_exceptions,
    read_topic,
    wait_for,
)
from tests.integration.test_feature_job import (
    assert_rows_equal_oracle,
    encoded,
    good_events,
    produce,
    wait_until_stable,
)
from tests.integration.test_metrics import Scrape

pytestmark = pytest.mark.flink

# tansu takes a 10 MB record (and more: it has no limit of its own); the test's producer must
# be told, librdkafka refuses messages over 1,000,000 bytes by default. The job runs with the
# Java producer's default max.request.size (1 MiB): its dead letters are bounded
# (udfs/wire/dead_letters.py), so a ~1 MB bad record must not fail it.
BIG_RECORD = 10 * MB
PRODUCER_LIMIT = f"message.max.bytes={BIG_RECORD + MB}"


def test_a_hostile_corpus_in_a_valid_stream(stack: LocalStack,
                                            chaos: Callable[[ChaosRow], None]) -> None:
    settings = isolated(stack, "hostile")
    job_id = submit_job(settings, "features")
    try:
        events, by_user = good_events(seed=41, count=1200)
        encoder = EventEncoder(registry_for(settings.schema_registry))
        victim = events[600]
        corpus = hostile_corpus(encoder, victim, BIG_RECORD)
        bad = {h.value: h for h in corpus if h.reasons}
        assert len(bad) == sum(1 for h in corpus if h.reasons), "two bad records are the same"
        by_user[victim.user_id] += [h.event for h in corpus if h.event is not None]
        records = encoded(encoder, events)
        # right after the victim's own event, with its key: same partition, judged after it
        records[601:601] = [(victim.user_id, h.value, victim.ts) for h in corpus]
        produce(settings.replace(kafka_properties=PRODUCER_LIMIT), records)  # the test's own

        dlq: list = []

        def dlq_complete() -> bool:
            dlq[:] = read_topic(settings, settings.events_dlq_topic, settings.topic_partitions)
            return len(dlq) >= len(bad)

        rows = wait_until_stable(settings, sorted(by_user), dlq_complete,
                                 lambda: job_diagnostics(settings, job_id), timeout_s=150)
        assert_rows_equal_oracle(rows, by_user)  # the valid hostile records counted too
        assert job_exceptions(settings, job_id) == [], "a record crashed the job"

        def original(message: Any) -> bytes:
            """The bad record a dead letter holds (its first MAX_VALUE_BYTES, when cut)."""
            size = dict(message.headers()).get(HEADER_ORIGINAL_BYTES)
            if size is None:
                return bytes(message.value())
            assert len(message.value()) == MAX_VALUE_BYTES
            [whole] = [v for v in bad if len(v) == int(size) and v.startswith(message.value())]
            return whole

        # each bad record once, with its stage and reason
        assert sorted(map(original, dlq)) == sorted(bad), "missing or duplicated"
        assert any(len(v) > MAX_VALUE_BYTES for v in bad), "no dead letter had to be cut"
        reasons: Counter[tuple[str, str]] = Counter()
        for message in dlq:
            hostile = bad[original(message)]
            headers = {k: v.decode() for k, v in message.headers()}
            assert headers[HEADER_STAGE] == hostile.stage, hostile.kind
            assert headers[HEADER_EXCEPTION_CLASS] in hostile.reasons, hostile.kind
            assert hostile.fragment in headers[HEADER_EXCEPTION_MESSAGE], hostile.kind
            assert len(headers[HEADER_EXCEPTION_MESSAGE]) < 400, hostile.kind
            reasons[headers[HEADER_STAGE], headers[HEADER_EXCEPTION_CLASS]] += 1

        # ... and counted by reason in the feature job's dead-letter metric (Prometheus)
        dead = catalog.DEAD_LETTERS.series[0]

        def counted() -> bool:
            scrape = Scrape(stack, job_id)
            return all(scrape.total(dead, stage=stage, reason=reason) == count
                       for (stage, reason), count in reasons.items()
                       ) and scrape.total(dead) == len(bad)

        wait_for(counted, 30, f"dead letters by reason in the metrics: {dict(reasons)}")
        chaos(ChaosRow(
            f"hostile input: {len(corpus)}-record corpus in a valid stream", len(records),
            len(rows), 0, 0,
            0, None, f"{len(bad)} bad records in the DLQ once each by reason "
            f"({len(reasons)} reasons, metric equal); 1 MB and 10 MB valid records counted; "
            "rows = oracle; no job failure"))
    finally:
        cancel_job(settings, job_id)

