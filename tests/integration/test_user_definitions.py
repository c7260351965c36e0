"""A team's own events and features on the real stack.

A payments source that is not the built-in contract and a refunds source with another schema on
a second topic, two entities (merchant, card: the merchant's row draws on both sources),
filters, and most aggregation kinds; records produced as Avro and as JSON. Every row in Redis
equals an oracle written here, independently of the engine. Then the definitions change under
the running job (stop with a savepoint, add a window and a feature, remove another, resume):
unchanged features continue exactly, the new one reports warming up, the removed one is gone,
nothing crashes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.flink_rest import FlinkRest
from featurestream.settings import Settings
from featurestream.udfs.contract.records import RecordEncoder
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.definitions.model import Source
from featurestream.udfs.store.redis_layout import decode_row
from featurestream.udfs.wire.dead_letters import HEADER_EXCEPTION_CLASS
from tests.integration.conftest import cancel_job, job_diagnostics, job_exceptions, read_topic

pytestmark = pytest.mark.flink

MINUTE = 60_000
T0 = 1_750_000_000_000 - 1_750_000_000_000 % (60 * MINUTE)  # on the hour: readable edges

DEFINITIONS = '''
from featurestream.definitions import Entity, Feature, FeatureGroup, Source, all_of, eq, gt, isin

payments = Source("payments", topic="{topic}", timestamp="paid_at", fields={{
    "payment_id": "string", "merchant_id": "string", "card_id": "string?",
    "amount": "double", "status": "string", "country": "string", "paid_at": "long"}})
refunds = Source("refunds", topic="{topic}.refunds", timestamp="refunded_at", fields={{
    "refund_id": "string", "merchant_id": "string", "amount": "double", "refunded_at": "long"}})
merchant = Entity("merchant", keys=("merchant_id",))
card = Entity("card", keys=("card_id",))

merchant_refunds = FeatureGroup("merchant_refunds", merchant, refunds, [
    Feature("refunds_1h", "count", window="1h"),
    Feature("refunded_1h", "sum", field="amount", window="1h"),
])

merchant_activity = FeatureGroup("merchant_activity", merchant, payments, [
    Feature("payments_5m", "count", window="5m"),
    Feature("declined_5m", "count", window="5m", where=eq("status", "declined")),
    Feature("big_eu_1h", "count", window="1h",
            where=all_of(gt("amount", 100.0), isin("country", ["DE", "FR"]))),
    Feature("amount_max_5m", "max", field="amount", window="5m"),
    {min_feature}
    Feature("amount_sum_1h", "sum", field="amount", window="1h"),
    Feature("cards_1h", "distinct", field="card_id", window="1h"),
    Feature("payments_total", "count", window="lifetime"),
    {added_feature}
])
card_activity = FeatureGroup("card_activity", card, payments, [
    Feature("payments_1h", "count", window="1h"),
    Feature("last_status", "last", field="status", window="1h"),
    Feature("last_amounts", "last_n", field="amount", window="1h", n=3),
    Feature("mean_amount_1h", "mean", field="amount", window="1h"),
    Feature("since_decline", "time_since_last", window="1h", where=eq("status", "declined")),
])
'''
MIN_FEATURE = 'Feature("amount_min_1h", "min", field="amount", window="1h"),'
ADDED_FEATURE = 'Feature("payments_15m", "count", window="15m"),'


def write_definitions(path: Path, topic: str, changed: bool) -> Path:
    path.write_text(DEFINITIONS.format(
        topic=topic, min_feature="" if changed else MIN_FEATURE,
        added_feature=ADDED_FEATURE if changed else ""))
    return path


def payments(seed: int, count: int, start: int, span_ms: int) -> list[dict[str, Any]]:
    """Payments in event-time order (unique times), a few out of order by < 2 s."""
    rnd = random.Random(seed)
    times = sorted(rnd.sample(range(start, start + span_ms), count))
    records: list[dict[str, Any]] = []
    for i, ts in enumerate(times):
        if i and rnd.random() < 0.05:
            ts = max(times[i - 1] - rnd.randint(1, 2000), start)
            while any(r["paid_at"] == ts for r in records[-50:]):
                ts += 1
        records.append({
            "payment_id": f"p{seed}-{i}", "merchant_id": f"m{rnd.randint(0, 7)}",
            "card_id": None if rnd.random() < 0.1 else f"c{rnd.randint(0, 19)}",
            "amount": round(rnd.uniform(1, 300), 2),
            "status": rnd.choice(["ok", "ok", "ok", "declined"]),
            "country": rnd.choice(["DE", "FR", "US"]), "paid_at": ts,
        })
    return records


def refunds(seed: int, count: int, start: int, span_ms: int) -> list[dict[str, Any]]:
    """Refunds at unique times, in order."""
    rnd = random.Random(seed)
    return [{"refund_id": f"r{seed}-{i}", "merchant_id": f"m{rnd.randint(0, 7)}",
             "amount": round(rnd.uniform(1, 50), 2), "refunded_at": ts}
            for i, ts in enumerate(sorted(rnd.sample(range(start, start + span_ms), count)))]


# -- The oracle: the window rule of docs/features.md, by brute force ----------------------


def in_window(ts: int, as_of: int, window: str) -> bool:
    if window == "lifetime":
        return ts <= as_of
    length = {"5m": 5, "15m": 15, "1h": 60}[window] * MINUTE
    hop = length // 60
    return (as_of // hop + 1) * hop - length <= ts <= as_of


def merchant_row(events: list[dict[str, Any]], returned: list[dict[str, Any]], as_of: int,
                 changed: bool, since: int | None = None) -> dict[str, Any]:
    def during(window: str) -> list[dict[str, Any]]:
        return [e for e in events if in_window(e["paid_at"], as_of, window)]

    hour_of_refunds = [r for r in returned if in_window(r["refunded_at"], as_of, "1h")]

    row: dict[str, Any] = {
        "payments_5m": len(during("5m")),
        "declined_5m": sum(e["status"] == "declined" for e in during("5m")),
        "big_eu_1h": sum(e["amount"] > 100 and e["country"] in ("DE", "FR")
                         for e in during("1h")),
        "amount_max_5m": max((e["amount"] for e in during("5m")), default=None),
        "amount_sum_1h": sum(e["amount"] for e in during("1h")),
        "cards_1h": len({e["card_id"] for e in during("1h") if e["card_id"] is not None}),
        "payments_total": len(during("lifetime")),
        "refunds_1h": len(hour_of_refunds),
        "refunded_1h": sum(r["amount"] for r in hour_of_refunds),
    }
    if changed:  # counts only what arrived after the change
        row["payments_15m"] = sum(e["paid_at"] >= (since or 0) for e in during("15m"))
    else:
        row["amount_min_1h"] = min((e["amount"] for e in during("1h")), default=None)
    return row


def card_row(events: list[dict[str, Any]], as_of: int) -> dict[str, Any]:
    hour = sorted((e for e in events if in_window(e["paid_at"], as_of, "1h")),
                  key=lambda e: e["paid_at"])
    declined = [e["paid_at"] for e in hour if e["status"] == "declined"]
    return {
        "payments_1h": len(hour),
        "last_status": hour[-1]["status"] if hour else None,
        "last_amounts": [e["amount"] for e in reversed(hour[-3:])],
        "mean_amount_1h": sum(e["amount"] for e in hour) / len(hour) if hour else None,
        "since_decline": as_of - max(declined) if declined else None,
    }


def assert_equal(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for name, value in expected.items():
        got = actual.get(name)
        if isinstance(value, float) and isinstance(got, float):
            assert got == pytest.approx(value, rel=1e-9), f"{where}.{name}"
        else:
            assert got == value, f"{where}.{name}: {got!r} != {value!r}"


# -- Running it --------------------------------------------------------------------------


def produce(settings: Settings, source: Source, records: list[dict[str, Any]]) -> None:
    encoder = RecordEncoder(source, registry_for(settings.schema_registry))
    with EventProducer(settings, topic=source.topic) as producer:
        for i, record in enumerate(records):
            value = encoder.json(record) if i % 3 == 0 else encoder.avro(record)
            producer.send(record["merchant_id"], value, record[source.timestamp])
    assert producer.failed == 0


def wait_for_rows(settings: Settings, keys: list[str], ready: Callable[[dict], bool],
                  diagnostics: Callable[[], str], timeout_s: float = 180) -> dict[str, dict]:
    """Rows of ``keys`` (``entity:id``) once ``ready(rows)`` holds and they stop changing."""
    client = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    rows: dict[str, dict] = {}
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(settings.redis_key_prefix + key)
        rows = {k: decode_row(h) for k, h in zip(keys, pipe.execute(), strict=True) if h}
        snapshot = sorted((k, r.get("as_of"), r.get("version")) for k, r in rows.items())
        if snapshot != last:
            last, since = snapshot, time.monotonic()
        elif len(rows) == len(keys) and ready(rows) and time.monotonic() - since > 4:
            return rows
        time.sleep(1)
    pytest.fail(f"rows did not settle ({len(rows)}/{len(keys)})\n{diagnostics()}")


def by_entity(records: list[dict[str, Any]], field: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record[field] is not None:
            grouped.setdefault(record[field], []).append(record)
    return grouped


def check_rows(rows: dict[str, dict], records: list[dict[str, Any]],
               returned: list[dict[str, Any]], changed: bool, since: int | None = None) -> None:
    refunds_of = by_entity(returned, "merchant_id")
    for merchant, events in by_entity(records, "merchant_id").items():
        row = rows[f"merchant:{merchant}"]
        assert row["as_of"] >= max(e["paid_at"] for e in events)
        expected = merchant_row(events, refunds_of.get(merchant, []), row["as_of"], changed,
                                since)
        assert_equal(row, expected, merchant)
        assert ("amount_min_1h" in row) is not changed, merchant
    for card, events in by_entity(records, "card_id").items():
        row = rows[f"card:{card}"]
        assert_equal(row, card_row(events, row["as_of"]), card)


def test_own_events_two_entities_and_a_live_definition_change(stack: LocalStack,
                                                             tmp_path: Path) -> None:
    name = "userdefs"
    path = write_definitions(tmp_path / "payments.py", f"{name}.payments", changed=False)
    settings = isolated(stack, name, definitions=str(path))
    sources = {s.name: s for s in settings.load_definitions().sources}
    source, refund_source = sources["payments"], sources["refunds"]
    rest = FlinkRest(settings.flink_rest_url)
    first = payments(seed=1, count=600, start=T0, span_ms=20 * MINUTE)
    merchants = sorted({f"merchant:{r['merchant_id']}" for r in first})
    cards = sorted({f"card:{r['card_id']}" for r in first if r["card_id"]})

    job_id = submit_job(settings, "features")
    try:
        produce(settings, source, first)
        returned = refunds(seed=3, count=80, start=T0, span_ms=20 * MINUTE)
        produce(settings, refund_source, returned)
        with EventProducer(settings, topic=source.topic) as producer:  # bad records
            producer.send("m0", b'{"payment_id": "x", "amount": 1.0}', T0)
            producer.send("m0", b'{"payment_id": "y", "merchant_id": "", "card_id": null,'
                          b' "amount": 1.0, "status": "ok", "country": "DE",'
                          b' "paid_at": ' + str(T0).encode() + b"}", T0)
        newest = max(r["paid_at"] for r in first)
        rows = wait_for_rows(settings, merchants + cards, lambda rows: True,
                             lambda: job_diagnostics(settings, job_id))
        check_rows(rows, first, returned, changed=False)
        dlq = read_topic(settings, settings.events_dlq_topic, settings.topic_partitions)
        classes = sorted(dict(m.headers())[HEADER_EXCEPTION_CLASS].decode() for m in dlq)
        assert classes == ["InvalidValue", "SchemaViolation"], classes

        savepoint = rest.stop_with_savepoint(job_id, settings.effective_savepoint_dir)
        assert job_exceptions(settings, job_id) == [], "the job failed before the change"
    except BaseException:
        cancel_job(settings, job_id)
        raise

    write_definitions(path, source.topic, changed=True)
    job_id = submit_job(settings, "features", savepoint)
    try:
        second = payments(seed=2, count=300, start=newest + 1, span_ms=5 * MINUTE)
        produce(settings, source, second)
        everything = first + second
        touched = sorted({f"merchant:{r['merchant_id']}" for r in second})
        assert touched == merchants  # so every merchant row is rebuilt under the new layout
        rows = wait_for_rows(
            settings, merchants + cards,
            lambda rows: all(rows[m]["as_of"] >= max(
                r["paid_at"] for r in second if f"merchant:{r['merchant_id']}" == m)
                for m in touched),
            lambda: job_diagnostics(settings, job_id))
        for key in touched:  # the new feature counts from the change, and says so
            warming = rows[key].get("warming_up")
            assert warming is not None and "payments_15m" in warming, (key, rows[key])
            assert warming["payments_15m"] > rows[key]["as_of"], (key, warming)
        check_rows(rows, everything, returned, changed=True, since=newest + 1)
        assert job_exceptions(settings, job_id) == [], job_diagnostics(settings, job_id)
    finally:
        cancel_job(settings, job_id)
