"""The circuit breaker: the pure policy on a fake clock, and the reader's adapter (metrics,
what counts as a failure, the Redis breaker in the store)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestream.serving.breaker import CircuitBreaker
from featurestream.serving.metrics import Metrics
from featurestream.serving.redis_client import RedisUnavailable
from featurestream.serving.store import FeatureStore, redis_breaker
from featurestream.settings import Settings, SettingsError
from featurestream.udfs.resilience.breaker import BreakerPolicy, BreakerState

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


class FakeClock:
    """Seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def policy(clock: FakeClock, failures: int = 3, reset_ms: int = 1_000
           ) -> tuple[BreakerPolicy, list[tuple[BreakerState, BreakerState]]]:
    changes: list[tuple[BreakerState, BreakerState]] = []
    return BreakerPolicy(failures, reset_ms, clock,
                         lambda a, b: changes.append((a, b))), changes


@given(st.lists(st.booleans(), max_size=30), st.integers(1, 5))
def test_closed_it_opens_at_the_nth_failure_in_a_row(outcomes: list[bool], n: int) -> None:
    breaker, _ = policy(FakeClock(), failures=n)
    in_a_row = 0
    for ok in outcomes:
        if breaker.state is OPEN:
            assert not breaker.admit()
            continue
        assert breaker.admit()
        if ok:
            breaker.succeeded()
            in_a_row = 0
        else:
            breaker.failed()
            in_a_row += 1
        assert (breaker.state is OPEN) == (in_a_row >= n)


def test_open_refuses_until_the_reset_then_lets_one_probe_through() -> None:
    clock = FakeClock()
    breaker, changes = policy(clock)
    for _ in range(3):
        assert breaker.admit()
        breaker.failed()
    assert changes == [(CLOSED, OPEN)]
    clock.now += 0.999
    assert not breaker.admit()
    assert breaker.retry_after_ms() == 1
    clock.now += 0.001
    assert breaker.admit()  # the probe
    assert breaker.state is HALF_OPEN
    assert not breaker.admit()  # the others wait for its outcome
    assert not breaker.admit()
    breaker.succeeded()
    assert breaker.state is CLOSED and breaker.admit()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_a_failed_probe_opens_it_for_another_reset() -> None:
    clock = FakeClock()
    breaker, changes = policy(clock, failures=1)
    breaker.admit()
    breaker.failed()
    clock.now += 1
    assert breaker.admit()
    breaker.failed()
    assert breaker.state is OPEN
    clock.now += 0.5
    assert not breaker.admit()
    clock.now += 0.5
    assert breaker.admit()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]


def test_a_probe_that_never_reports_is_replaced_after_a_reset() -> None:
    clock = FakeClock()
    breaker, _ = policy(clock, failures=1)
    breaker.admit()
    breaker.failed()
    clock.now += 1
    assert breaker.admit()  # this probe's caller is cancelled: no outcome
    clock.now += 0.9
    assert not breaker.admit()
    clock.now += 0.1
    assert breaker.admit()
    breaker.succeeded()
    assert breaker.state is CLOSED


def test_a_late_success_does_not_close_an_open_breaker() -> None:
    breaker, _ = policy(FakeClock(), failures=1)
    assert breaker.admit()  # admitted while closed; answers after the breaker opened
    breaker.admit()
    breaker.failed()
    breaker.succeeded()
    assert breaker.state is OPEN


def test_the_policy_needs_positive_limits() -> None:
    with pytest.raises(ValueError, match="positive"):
        BreakerPolicy(0, 1_000)
    with pytest.raises(ValueError, match="positive"):
        BreakerPolicy(1, 0)


# --- the reader's adapter ----------------------------------------------------------------

def test_the_adapter_counts_only_the_dependencys_failures_and_exports_each_state() -> None:
    clock = FakeClock()
    metrics = Metrics()
    breaker = CircuitBreaker("model", metrics, failures_in_a_row=2, reset_ms=100,
                             failures=(OSError,), refuse=lambda b: LookupError(b.name),
                             clock=clock)
    sample = metrics.registry.get_sample_value
    assert sample("featurestream_reader_breaker_state", {"dependency": "model"}) == 0
    for _ in range(3):  # another exception: the dependency answered
        with pytest.raises(ValueError), breaker:
            raise ValueError("bad input")
    with pytest.raises(OSError), breaker:
        raise OSError("down")
    assert breaker.state is CLOSED
    with pytest.raises(OSError), breaker:
        raise OSError("down")
    assert sample("featurestream_reader_breaker_state", {"dependency": "model"}) == 2
    with pytest.raises(LookupError, match="model"), breaker:
        pytest.fail("an open breaker must not call")
    clock.now += 0.1
    with breaker:  # the probe
        assert sample("featurestream_reader_breaker_state", {"dependency": "model"}) == 1
    assert sample("featurestream_reader_breaker_state", {"dependency": "model"}) == 0
    for state in ("open", "half_open", "closed"):
        assert sample("featurestream_reader_breaker_transitions_total",
                      {"dependency": "model", "state": state}) == 1


def test_a_cancelled_call_is_neither_success_nor_failure() -> None:
    breaker = CircuitBreaker("redis", Metrics(), failures_in_a_row=1, reset_ms=100,
                             failures=(OSError,), refuse=lambda b: LookupError(b.name))
    with pytest.raises(asyncio.CancelledError), breaker:
        raise asyncio.CancelledError
    assert breaker.state is CLOSED
    breaker.policy.failed()
    breaker.policy._since -= 1  # the reset has passed: the next call is the probe
    with pytest.raises(asyncio.CancelledError), breaker:
        raise asyncio.CancelledError
    assert breaker.state is HALF_OPEN


class DownRedis:
    """Every call fails as a refused connection does; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def execute(self, commands: list[tuple[str, ...]]) -> list[list[str]]:
        self.calls += 1
        raise RedisUnavailable("connection", "connection refused")


def test_the_store_stops_calling_redis_once_its_breaker_opens() -> None:
    redis, metrics = DownRedis(), Metrics()
    store = FeatureStore(redis, "fs:", None, metrics,  # type: ignore[arg-type]
                         breaker=redis_breaker(metrics, 2, 60_000))
    kinds = []
    for _ in range(5):
        with pytest.raises(RedisUnavailable) as error:
            asyncio.run(store.rows_with_fallback("user", ["a"], None))
        kinds.append(error.value.kind)
    assert redis.calls == 2
    assert kinds == ["connection", "connection", "circuit_open", "circuit_open", "circuit_open"]
    assert "circuit breaker open" in str(error.value)


@pytest.mark.parametrize(("variable", "value"), [
    ("BREAKER_FAILURES", "0"), ("BREAKER_FAILURES", "many"), ("BREAKER_RESET_MS", "0"),
    ("BREAKER_RESET_MS", "-1s"), ("FALLBACK_MAX_ENTRIES", "0")])
def test_bad_breaker_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({f"FEATURESTREAM_{variable}": value})
    assert f"FEATURESTREAM_{variable}" in str(error.value)


def test_breaker_settings_take_durations() -> None:
    settings = Settings.from_env({"FEATURESTREAM_BREAKER_RESET_MS": "2s",
                                  "FEATURESTREAM_BREAKER_FAILURES": "3"})
    assert (settings.breaker_reset_ms, settings.breaker_failures) == (2_000, 3)
