"""Request-time scoring against the scoring job's own scorer: for any events and rows, the
request scorer routes each user to the same version and variant, builds the same vector and
gives the same score as :class:`BatchScorer` given the same rows (hypothesis); answers are
labelled by fallback level; what cannot be scored is refused naming why; a failing version
opens its own breaker and the experiment's other arm serves its users."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from featurestream.serving.breaker import ModelBreakers
from featurestream.serving.metrics import Metrics
from featurestream.serving.predict_contract import EventType
from featurestream.udfs.contract.events import EVENT_TYPES, Event
from featurestream.udfs.resilience.breaker import BreakerState
from featurestream.udfs.scoring.live_models import ServingModels
from featurestream.udfs.scoring.model_registry import LoadedModel, ModelRegistry
from featurestream.udfs.scoring.request_scorer import (
    CACHED,
    FetchedRow,
    Prediction,
    Reason,
    Refusal,
    RequestScorer,
    Routed,
)
from featurestream.udfs.scoring.variants import parse_experiment
from featurestream.udfs.scoring.vector import Row
from testing.model_fixtures import CATALOG, NAME, publish
from tests.unit.test_scorer import ENCODER, FakeStore, RowKey, frame, scorer

EXPERIMENT = "v1:60,v2:40"
ITEM_MODEL = ("amount", "hour_of_day", "purchases_5m", "item.views_1h", "item.purchases_1h")


def request_scorer(directory: Path, experiment: str = "") -> RequestScorer:
    models = ServingModels(ModelRegistry(directory, NAME), parse_experiment(experiment), None,
                           1_000)
    return RequestScorer(models, CATALOG)


def answer(scorer_: RequestScorer, events: list[Event], rows: dict[RowKey, Row | None],
           now_ms: int = 1_700_000_100_000, cached: frozenset[RowKey] = frozenset()
           ) -> list[Prediction | Refusal]:
    """Route, read ``rows`` (absent: no row) as a caller would, score."""
    routed = scorer_.route(events)
    fetched = {key: FetchedRow(rows.get(key), CACHED if key in cached else "redis")
               for key in scorer_.keys(routed)}
    return scorer_.score(routed, fetched, now_ms)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 (defaults for every row feature) and v2 (needs purchases_5m) of the user model."""
    directory = tmp_path_factory.mktemp("models")
    publish(directory, 1)
    publish(directory, 2, defaults={"amount": 0.0, "spend_1h": 0.0}, seed=1)
    return directory


@pytest.fixture(scope="module")
def item_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("item-models")
    publish(directory, 1, features=ITEM_MODEL,
            defaults={"amount": 0.0, "item.views_1h": 0.0, "item.purchases_1h": 0.0})
    return directory


values = st.one_of(st.none(), st.integers(0, 50),
                   st.floats(0, 1e6, allow_nan=False, allow_infinity=False))
user_rows = st.one_of(st.none(), st.fixed_dictionaries(
    {"as_of": st.integers(1_699_000_000_000, 1_700_000_000_000), "version": st.just(1),
     "purchases_5m": values, "spend_1h": values, "views_1h": values}))
item_rows = st.one_of(st.none(), st.fixed_dictionaries(
    {"as_of": st.integers(1_699_000_000_000, 1_700_000_000_000), "version": st.just(1),
     "views_1h": values, "purchases_1h": values}))
events = st.builds(
    Event, event_id=st.just("e"), user_id=st.sampled_from([f"u-{i}" for i in range(12)]),
    event_type=st.just("purchase"), item_id=st.sampled_from([None, "sku-1", "sku-2"]),
    amount=st.floats(0, 1e5, allow_nan=False, allow_infinity=False),
    ts=st.integers(1_600_000_000_000, 1_800_000_000_000), context=st.none())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(events, min_size=1, max_size=8),
       users=st.dictionaries(st.sampled_from([f"u-{i}" for i in range(12)]), user_rows),
       items=st.dictionaries(st.sampled_from(["sku-1", "sku-2"]), item_rows),
       item_model=st.booleans())
def test_the_request_scorer_scores_as_the_scoring_job(
        registry: Path, item_registry: Path, batch: list[Event],
        users: dict[str, Row | None], items: dict[str, Row | None], item_model: bool) -> None:
    directory, experiment = (item_registry, "") if item_model else (registry, EXPERIMENT)
    rows: dict[RowKey, Row | None] = {("user", u): r for u, r in users.items()}
    rows.update({("item", i): r for i, r in items.items()})
    batch = [e._replace(event_id=f"e{n}") for n, e in enumerate(batch)]
    store = FakeStore({key: row for key, row in rows.items() if row is not None})
    streamed = scorer(directory, experiment, store=store).score(
        [frame(ENCODER.avro(e), n) for n, e in enumerate(batch)])
    by_event = {s["event_id"]: s for s in streamed.scores}
    answers = answer(request_scorer(directory, experiment), batch, rows)
    for event, got in zip(batch, answers, strict=True):
        stream = by_event.get(event.event_id)
        if stream is None:  # the stream dead-lettered it: the API refuses it
            assert isinstance(got, Refusal), got
            assert got.reason is Reason.MISSING_FEATURES
            continue
        assert isinstance(got, Prediction), got
        assert (got.version, got.variant) == (stream["version"], stream["variant"])
        assert got.score == stream["score"]  # bit-identical: same vector, same predict
        assert got.features == stream["features"]
        assert got.as_of == stream["as_of"]
        assert (got.fallback == "defaults") == stream["features_missing"]
        assert got.fallback != "cached_features"


def test_fallback_levels(registry: Path) -> None:
    scorer_ = request_scorer(registry)  # latest: v2, which needs purchases_5m
    row: Row = {"as_of": 1_700_000_000_000, "purchases_5m": 3, "spend_1h": 10.0}
    base = Event("e", "u-1", "purchase", None, 5.0, 1_700_000_050_000, None)
    fresh, cached, nulled = answer(
        scorer_, [base, base._replace(user_id="u-2"), base._replace(user_id="u-3")],
        {("user", "u-1"): row, ("user", "u-2"): row,
         ("user", "u-3"): {**row, "spend_1h": None}},
        now_ms=1_700_000_100_000, cached=frozenset({("user", "u-2")}))
    assert isinstance(fresh, Prediction) and fresh.fallback == "none"
    assert fresh.staleness_ms == 100_000 and fresh.as_of == 1_700_000_000_000
    assert fresh.entities["user"].source == "redis"
    assert isinstance(cached, Prediction) and cached.fallback == "cached_features"
    assert cached.entities["user"].source == CACHED and cached.score == fresh.score
    assert isinstance(nulled, Prediction) and nulled.fallback == "none", \
        "a null value in a row is the feature's value (it takes its default), not a fallback"
    assert nulled.features["spend_1h"] == 0.0
    [unknown] = answer(scorer_, [base._replace(user_id="u-4")], {})
    assert isinstance(unknown, Refusal), "v2 has no default for purchases_5m"
    latest_v1 = request_scorer(registry, "v1:1")
    [unknown] = answer(latest_v1, [base._replace(user_id="u-4")], {})
    assert isinstance(unknown, Prediction) and unknown.fallback == "defaults"
    assert not unknown.entities["user"].found and unknown.as_of is None


def test_missing_values_without_defaults_are_refused_naming_all(tmp_path: Path) -> None:
    publish(tmp_path, 1, defaults={})
    event = Event("e", "u-1", "view", None, None, 1_700_000_000_000, None)
    [refused] = answer(request_scorer(tmp_path), [event], {})
    assert isinstance(refused, Refusal) and refused.reason is Reason.MISSING_FEATURES
    assert refused.features == ("amount", "purchases_5m", "spend_1h")
    assert "amount, purchases_5m, spend_1h" in refused.message


def test_a_row_value_that_is_not_a_finite_number_is_refused(registry: Path) -> None:
    row: Row = {"as_of": 1, "purchases_5m": math.inf, "spend_1h": 1.0}
    event = Event("e", "u-1", "purchase", None, 1.0, 1_700_000_000_000, None)
    [refused] = answer(request_scorer(registry), [event], {("user", "u-1"): row})
    assert isinstance(refused, Refusal) and refused.reason is Reason.CORRUPT_FEATURES


def test_no_model_or_an_unusable_one_is_refused(tmp_path: Path) -> None:
    event = Event("e", "u-1", "purchase", None, 1.0, 1_700_000_000_000, None)
    [refused] = request_scorer(tmp_path / "empty").route([event])
    assert isinstance(refused, Refusal) and refused.reason is Reason.MODEL_UNAVAILABLE
    publish(tmp_path, 1, features=("amount", "merchant.payments_1h"), defaults={})
    [refused] = request_scorer(tmp_path).route([event])
    assert isinstance(refused, Refusal) and refused.reason is Reason.MODEL_UNAVAILABLE
    assert "merchant" in refused.message


def test_a_failing_or_non_finite_model_is_refused_per_request(tmp_path: Path) -> None:
    publish(tmp_path, 1)
    scorer_ = request_scorer(tmp_path)
    event = Event("e", "u-1", "purchase", None, 1.0, 1_700_000_000_000, None)
    routed = [r for r in scorer_.route([event, event]) if isinstance(r, Routed)]
    rows = {key: FetchedRow(None) for key in scorer_.keys(routed)}

    class HalfNaN(LoadedModel):
        def predict(self, vectors: np.ndarray) -> np.ndarray:
            return np.array([0.5, math.nan])

    class Failing(LoadedModel):
        def predict(self, vectors: np.ndarray) -> np.ndarray:
            raise RuntimeError("boom")

    model = routed[0].model
    half = [replace(r, model=HalfNaN(model.metadata, model.booster)) for r in routed]
    ok, nan = scorer_.score(half, rows, 0)
    assert isinstance(ok, Prediction) and ok.score == 0.5
    assert isinstance(nan, Refusal) and nan.reason is Reason.PREDICT_FAILED
    failing = [replace(r, model=Failing(model.metadata, model.booster)) for r in routed]
    answers = scorer_.score(failing, rows, 0)
    assert all(isinstance(a, Refusal) and "boom" in a.message for a in answers)


def test_rows_are_read_once_per_key(registry: Path) -> None:
    scorer_ = request_scorer(registry)
    event = Event("e", "u-1", "purchase", "sku-1", 1.0, 1_700_000_000_000, None)
    routed = scorer_.route([event, event._replace(user_id="u-2"), event])
    assert scorer_.keys(routed) == [("user", "u-1"), ("user", "u-2")]


def test_the_api_takes_the_event_contracts_types() -> None:
    assert get_args(EventType) == EVENT_TYPES


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def state(metrics: Metrics, dependency: str) -> float | None:
    return metrics.registry.get_sample_value("featurestream_reader_breaker_state",
                                             {"dependency": dependency})


class Failing(LoadedModel):
    """A version that raises, counting its calls."""

    calls = 0

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        Failing.calls += 1
        raise RuntimeError("boom")


ROW: Row = {"as_of": 1_699_999_000_000, "purchases_5m": 2, "spend_1h": 5.0, "views_1h": 3}


def breaking(scorer_: RequestScorer, events: list[Event], version: int) -> list[Routed]:
    """Route ``events``, with ``version``'s model swapped for one that raises."""
    routed = [r for r in scorer_.route(events) if isinstance(r, Routed)]
    return [replace(r, model=Failing(r.model.metadata, r.model.booster))
            if r.model.metadata.version == version else r for r in routed]


def test_a_failing_arm_opens_its_own_breaker_and_the_other_arm_serves_its_users(
        registry: Path) -> None:
    """v2 (the canary) raises: its users get v1's score labelled fallback_model, v1's users are
    untouched; after BREAKER_FAILURES calls v2 is not called at all until the reset interval
    passes; a probe that succeeds closes its breaker and v2 serves its users again."""
    clock, metrics = Clock(), Metrics()
    breakers = ModelBreakers(metrics, failures_in_a_row=2, reset_ms=1_000, clock=clock)
    scorer_ = request_scorer(registry, EXPERIMENT)
    guarded = RequestScorer(scorer_.models, CATALOG, breakers)
    only_v1 = request_scorer(registry, "v1:100")
    events = [Event(f"e{i}", f"u-{i}", "purchase", None, 10.0 + i, 1_700_000_000_000, None)
              for i in range(20)]
    routed = breaking(guarded, events, version=2)
    rows = {key: FetchedRow(ROW) for key in guarded.keys(routed)}
    on_v2 = {r.event.user_id for r in routed if r.model.metadata.version == 2}
    assert on_v2 and len(on_v2) < len(events)
    expected = dict(zip([e.user_id for e in events],
                        answer(only_v1, events, {key: ROW for key in rows}),
                        strict=True))
    Failing.calls = 0
    for call in range(4):
        answers = guarded.score(routed, rows, 0)
        for item, got in zip(routed, answers, strict=True):
            want = expected[item.event.user_id]
            assert isinstance(got, Prediction) and isinstance(want, Prediction)
            assert got.version == 1 and got.variant == "v1" and got.score == want.score
            assert got.fallback == ("fallback_model" if item.event.user_id in on_v2
                                    else "none")
        assert Failing.calls == min(call + 1, 2)  # open after 2: v2 is not called any more
    assert state(metrics, f"model:{NAME}:v2") == BreakerState.OPEN
    assert state(metrics, f"model:{NAME}:v1") == BreakerState.CLOSED
    clock.now += 1.0  # the reset interval: the next call is the probe, and v2 works again
    healthy = [r for r in guarded.route(events) if isinstance(r, Routed)]
    answers = guarded.score(healthy, rows, 0)
    assert {a.version for a in answers if isinstance(a, Prediction)} == {1, 2}
    assert all(isinstance(a, Prediction) and a.fallback == "none" for a in answers)
    assert state(metrics, f"model:{NAME}:v2") == BreakerState.CLOSED


def test_without_another_arm_a_failing_version_is_refused_and_its_breaker_opens(
        registry: Path) -> None:
    clock, metrics = Clock(), Metrics()
    breakers = ModelBreakers(metrics, failures_in_a_row=2, reset_ms=1_000, clock=clock)
    guarded = RequestScorer(request_scorer(registry).models, CATALOG, breakers)
    event = Event("e", "u-1", "purchase", None, 1.0, 1_700_000_000_000, None)
    routed = breaking(guarded, [event], version=2)
    rows = {key: FetchedRow(ROW) for key in guarded.keys(routed)}
    messages = []
    for _ in range(3):
        [refused] = guarded.score(routed, rows, 0)
        assert isinstance(refused, Refusal) and refused.reason is Reason.PREDICT_FAILED
        messages.append(refused.message)
    assert "boom" in messages[0] and "circuit breaker open, next try in 1000 ms" in messages[2]
    breakers.retain(NAME, {1})  # v2 rolled back: its breaker goes, its gauge reads closed
    assert state(metrics, f"model:{NAME}:v2") == BreakerState.CLOSED
    assert breakers.admit(routed[0].model)
