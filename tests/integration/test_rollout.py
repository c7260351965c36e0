"""Model rollout as registry operations on the real stack: a running scoring job and a reader
pick up ``featurestream models canary | promote | shadow | rollback`` without a restart.

The scoring job starts with the settings' split (``v1:100``); each command writes an experiment
record into the registry, and the purchases produced after it (past the poll interval) follow the
new split: variant and version as :class:`VariantAssigner` assigns them, the record's id on every
score, the shadow's scores beside the served ones. Every purchase is scored exactly once and
nothing is dead-lettered; the reader's ``GET /v1/models/{name}/drift`` marks the record's
versions live, ``/v1/scores`` shows the experiment id, and ``models compare`` counts each arm as
the topic holds it.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from featurestream.cli.models import (
    canary_command,
    compare_command,
    promote_command,
    rollback_command,
    shadow_command,
)
from featurestream.cli.submit import submit_job
from featurestream.devstack import LocalStack
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.devstack.private import isolated
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.scoring.experiments import Rollout, Split, live_rollout
from featurestream.udfs.scoring.model_registry import ModelRegistry
from featurestream.udfs.scoring.variants import LATEST, VariantAssigner
from testing.reader_fixtures import http, reader_in_thread
from tests.integration.conftest import cancel_job, job_diagnostics, wait_for
from tests.integration.test_scoring_job import Topics, capture_ahead, publish_trained

pytestmark = pytest.mark.flink

USERS = 60
PHASE = 60  # purchases per phase


def phase_events(name: str, ts: int) -> list[Event]:
    return [Event(f"{name}-{i}", f"ro-{i % USERS}", "purchase", "item-3", 5.0 + i, ts + i, None)
            for i in range(PHASE)]


Handler = Callable[[Settings, argparse.Namespace], int]


def command(settings: Settings, handler: Handler, **args: object) -> None:
    assert handler(settings, argparse.Namespace(model=None, **args)) == 0


def expected_route(rollout: Rollout, user_id: str) -> tuple[str, int]:
    """The variant and version the rollout gives ``user_id`` (written without ServingModels)."""
    if not rollout.arms:
        assert rollout.latest is not None
        return LATEST, rollout.latest
    arm = VariantAssigner(rollout.arms).assign(user_id)
    return arm.label, arm.version


def test_canary_promote_shadow_rollback_on_a_running_job(
        stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = isolated(stack, "rollout", models_dir=str(tmp_path / "models"),
                        model_poll_interval_ms=1_000, experiment="v1:100", shadow_model="")
    publish_trained(settings, seed=1)
    publish_trained(settings, seed=2)
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    default = Split.parse(settings.experiment, settings.shadow_model)
    encoder = EventEncoder(registry_for(settings.schema_registry))
    reader = Topics(settings)
    sent: list[Event] = []
    phases: list[tuple[list[Event], Rollout]] = []

    def run_phase(name: str, ts: int) -> None:
        """Produce a phase's purchases under the rollout in effect and wait for their scores."""
        events = phase_events(name, ts)
        capture_ahead(settings, events)
        with EventProducer(settings) as producer:
            for event in events:
                producer.send(event.user_id, encoder.avro(event), event.ts)
        assert producer.failed == 0
        sent.extend(events)
        phases.append((events, live_rollout(registry, default)))
        wait_for(reader.settled(len(sent), 0), 180, f"scores of phase {name}",
                 lambda: job_diagnostics(settings, job))

    def live_in_drift(base: str) -> set[int]:
        reply = http("GET", f"{base}/v1/models/{settings.model_name}/drift")
        assert reply.status == 200, reply.body
        return {v["version"] for v in reply.body["versions"] if v["live"]}

    def rolled_out(handler: Handler, **args: object) -> None:
        command(settings, handler, **args)
        time.sleep(2.5)  # > the poll interval: the next batch looks at the registry

    job = submit_job(settings, "scoring")
    try:
        with reader_in_thread(settings) as base:
            run_phase("a", 1_700_000_000_000)
            assert live_in_drift(base) == {1}
            rolled_out(canary_command, version="v2", percent=50)
            assert live_in_drift(base) == {1, 2}
            run_phase("b", 1_700_000_100_000)
            rolled_out(promote_command, version="v2")
            assert live_in_drift(base) == {2}
            run_phase("c", 1_700_000_200_000)
            rolled_out(shadow_command, version="v1", off=False)
            assert live_in_drift(base) == {1, 2}
            run_phase("d", 1_700_000_300_000)
            rolled_out(rollback_command)
            assert live_in_drift(base) == {2}
            run_phase("e", 1_700_000_400_000)
            latest = http("GET", f"{base}/v1/scores/ro-0").body
            assert latest["scores"][settings.model_name]["experiment"] == "exp-2"
    finally:
        cancel_job(settings, job)

    assert [(r.experiment, r.shares, r.shadow) for _, r in phases] == [
        (None, {1: 1.0}, None), ("exp-1", {1: 0.5, 2: 0.5}, None), ("exp-2", {2: 1.0}, None),
        ("exp-3", {2: 1.0}, 1), ("exp-2", {2: 1.0}, None)]
    assert Counter(s["event_id"] for s in reader.scores) == Counter(
        e.event_id for e in sent), "a rollout lost or repeated a record"
    assert not reader.dead
    by_event = {s["event_id"]: s for s in reader.scores}
    for events, rollout in phases:
        for event in events:
            score = by_event[event.event_id]
            assert (score["variant"], score["version"]) == expected_route(rollout, event.user_id)
            assert score["experiment"] == rollout.experiment
            shadow = score["shadow"]
            assert (shadow and shadow["version"]) == rollout.shadow
            assert shadow is None or shadow["score"] is not None
    canaried = Counter(by_event[e.event_id]["version"] for e in phases[1][0])
    assert set(canaried) == {1, 2}, f"both arms serve in the 50/50 canary: {canaried}"

    capsys.readouterr()
    assert compare_command(settings, argparse.Namespace(
        model=None, labels=None, limit=0, experiment=None)) == 0
    counts = {line[:12].strip(): int(line[12:].split()[0].replace(",", ""))
              for line in capsys.readouterr().out.splitlines()[1:]}
    assert counts == {**Counter(s["variant"] for s in reader.scores), "shadow v1": PHASE}

