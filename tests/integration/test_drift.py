"""Drift on the real stack: a model trained on the generator's history (its sidecar records the
training distribution), both jobs running, events like the training ones, then the same stream
with the purchase amounts of half the users tripled (``generate --shift-amount 3
--shift-users 0.5``). The PSI of ``amount`` is low first, then rises above 0.2 within a minute
in ``featurestream drift``, on ``GET /v1/models/{name}/drift`` and in the reader's gauge."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from featurestream.cli.submit import submit_job
from featurestream.cli.train import TrainingRun, train
from featurestream.devstack import LocalStack
from featurestream.devstack.generator import Shift, StreamConfig, generate_events
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.telemetry import catalog
from testing.reader_fixtures import FEATURESTREAM, http, reader_in_thread
from tests.integration.conftest import cancel_job, job_diagnostics, wait_for

pytestmark = pytest.mark.flink

RUN = TrainingRun(events=60_000, users=500, rounds=20)
PHASE = 20_000  # events per phase: about 500 purchases (scored events) each
SHIFT = Shift(amount_factor=3.0, user_share=0.5, after_events=RUN.events + PHASE)
DRIFT_PSI = 0.2


def live_stream() -> Iterable[Event]:
    """The training history's stream (same users, seed and catalogue) past its end: events
    like the training ones, then shifted."""
    config = StreamConfig(users=RUN.users, events_per_second=RUN.events_per_second,
                          seed=RUN.seed, shift=SHIFT)
    return itertools.islice(generate_events(config), RUN.events, RUN.events + 2 * PHASE)


def produce(settings: Settings, events: Iterable[Event], chunk: int = 0,
            pause_s: float = 0.0) -> None:
    """Send ``events`` (with ``chunk``: that many at a time, ``pause_s`` apart)."""
    encoder = EventEncoder(registry_for(settings.schema_registry))
    with EventProducer(settings) as producer:
        for number, event in enumerate(events, start=1):
            producer.send(event.user_id, encoder.avro(event), event.ts)
            if chunk and number % chunk == 0:
                producer.flush()
                time.sleep(pause_s)
    assert producer.failed == 0


def amount_psi(url: str) -> tuple[float | None, int]:
    """The live version's PSI of ``amount`` and its samples, from the reader."""
    body = http("GET", f"{url}/v1/models/{Settings().model_name}/drift").body
    [version] = body["versions"]
    psi = {f["feature"]: f["psi"] for f in version["features"]}
    return psi["amount"], version["samples"]


def test_a_shift_of_the_amounts_shows_as_drift_within_a_minute(stack: LocalStack,
                                                                 tmp_path: Path) -> None:
    settings = isolated(stack, "drift", models_dir=str(tmp_path / "models"),
                        drift_window_ms=60_000, drift_bucket_ms=5_000)
    model_text, metadata = train(settings, RUN)
    assert metadata.training_distribution is not None
    ModelRegistry(settings.effective_models_dir, settings.model_name).publish(model_text,
                                                                             metadata)
    events = list(live_stream())
    features = submit_job(settings, "features")
    scoring = submit_job(settings, "scoring")
    try:
        def diagnostics() -> str:
            client = redis.Redis.from_url(settings.redis_url)
            drift_keys = sorted(k.decode() for k in client.scan_iter(
                match=f"{settings.redis_key_prefix}_drift:*", count=1_000))
            scores = sum(1 for _ in client.scan_iter(
                match=f"{settings.redis_key_prefix}score:*", count=1_000))
            client.close()
            return (f"drift buckets: {drift_keys}; users with a score: {scores}\n"
                    + job_diagnostics(settings, features) + job_diagnostics(settings, scoring))

        with reader_in_thread(settings) as url:
            # paced: the job flushes its counts at most once a second, after a batch
            produce(settings, events[:PHASE], 1_000, 1.0)
            wait_for(lambda: amount_psi(url)[1] >= 300, 150, "the first 300 drift samples",
                     diagnostics)
            psi, samples = amount_psi(url)
            print(f"without shift: PSI(amount) {psi:.3f} over {samples} samples")
            assert psi is not None and psi < 0.1

            # the shifted half, paced over about 40 s so the window keeps getting samples
            shifted = threading.Thread(target=produce, args=(settings, events[PHASE:], 1_000,
                                                             2.0))
            started = time.monotonic()
            shifted.start()
            wait_for(lambda: (amount_psi(url)[0] or 0.0) > DRIFT_PSI, 60,
                     "PSI(amount) above 0.2 within a minute of the shift", diagnostics)
            print(f"with shift: PSI(amount) {amount_psi(url)[0]:.3f} "
                  f"{time.monotonic() - started:.1f} s after the shift began")
            # the gauge and the CLI read the same buckets a moment later (the PSI only grows
            # while shifted samples replace the others in the window)
            wait_for(lambda: gauge_amount_psi(url) > DRIFT_PSI, 30, "the PSI gauge above 0.2",
                     diagnostics)
            wait_for(lambda: cli_amount_psi(settings) > DRIFT_PSI, 30,
                     "featurestream drift showing PSI(amount) above 0.2", diagnostics)
            shifted.join()
    finally:
        for job in (scoring, features):
            cancel_job(settings, job)


def gauge_amount_psi(url: str) -> float:
    """``featurestream_model_feature_psi{feature="amount"}`` on the reader's /metrics."""
    scrape = http("GET", f"{url}/metrics").body
    gauge = {s.labels["feature"]: s.value for family in text_string_to_metric_families(scrape)
             if family.name == catalog.FEATURE_PSI.name for s in family.samples}
    return gauge.get("amount", 0.0)


def cli_amount_psi(settings: Settings) -> float:
    """PSI(amount) as ``featurestream drift`` prints it (a drift flag above 0.2)."""
    cli = drift_cli(settings)
    assert cli.returncode == 0, cli.stderr
    print(cli.stdout)
    [amount] = [line for line in cli.stdout.splitlines() if line.startswith("  amount ")]
    psi = float(amount.split()[1])
    assert amount.endswith("<- drift") == (psi > DRIFT_PSI)
    return psi


def drift_cli(settings: Settings) -> subprocess.CompletedProcess[str]:
    """``featurestream drift`` with exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTREAM_")}
    return subprocess.run([str(FEATURESTREAM), "drift"], env={**env, **settings.to_env()},
                          capture_output=True, text=True, timeout=60, check=False)
