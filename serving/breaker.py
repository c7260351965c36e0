"""The reader's circuit breakers, one per dependency (Redis) and one per model version: the pure
policy (:mod:`featurestream.udfs.resilience.breaker`) with its state and transitions as metrics
and log lines.

Guard each call with ``with breaker:`` (sync or async code alike)::

    with redis_breaker:
        replies = await redis.execute(commands)

While the breaker is open, entering raises the error ``refuse`` builds (for Redis a
:class:`RedisUnavailable` of kind ``circuit_open``: a 503 at once, or a fallback). Inside, one
of ``failures`` (exception types) counts against the dependency; another exception means the
dependency answered; a cancelled call counts as neither.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from types import TracebackType

from featurestream.serving.metrics import Metrics
from featurestream.udfs.resilience.breaker import BreakerPolicy, BreakerState
from featurestream.udfs.scoring.model_registry import LoadedModel

log = logging.getLogger(__name__)


class CircuitBreaker:
    """The breaker of one dependency (``name``: the metrics' ``dependency`` label)."""

    def __init__(self, name: str, metrics: Metrics, *, failures_in_a_row: int, reset_ms: int,
                 failures: tuple[type[BaseException], ...],
                 refuse: Callable[[CircuitBreaker], Exception],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._failures = failures
        self._refuse = refuse
        self._gauge = metrics.breaker_state.labels(name)
        self._transitions = metrics.breaker_transitions
        self._gauge.set(BreakerState.CLOSED)
        self.policy = BreakerPolicy(failures_in_a_row, reset_ms, clock, self._changed)

    @property
    def state(self) -> BreakerState:
        """Closed, half-open or open."""
        return self.policy.state

    def __enter__(self) -> None:
        if not self.policy.admit():
            raise self._refuse(self)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None or not issubclass(kind, self._failures):
            if kind is None or issubclass(kind, Exception):
                self.policy.succeeded()
        else:
            self.policy.failed()

    def _changed(self, before: BreakerState, after: BreakerState) -> None:
        self._gauge.set(after)
        self._transitions.labels(self.name, after.name.lower()).inc()
        level = logging.WARNING if after is BreakerState.OPEN else logging.INFO
        log.log(level, "circuit breaker %s: %s -> %s", self.name, before.name.lower(),
                after.name.lower())


class ModelBreakers:
    """A breaker per model version (dependency ``model:NAME:vN``), made on first use: a failing
    version (a broken canary arm) opens its own breaker only, and its users are served by the
    other arm meanwhile (:class:`~featurestream.udfs.scoring.request_scorer.RequestScorer`).
    A version that leaves the rollout has its breaker dropped and its gauge set closed, so an
    alert never stays on for a version nobody is routed to."""

    def __init__(self, metrics: Metrics, *, failures_in_a_row: int, reset_ms: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._clock = clock
        self._failures_in_a_row = failures_in_a_row
        self._reset_ms = reset_ms
        self._breakers: dict[tuple[str, int], CircuitBreaker] = {}

    def admit(self, model: LoadedModel) -> bool:
        return self._of(model).policy.admit()

    def succeeded(self, model: LoadedModel) -> None:
        self._of(model).policy.succeeded()

    def failed(self, model: LoadedModel) -> None:
        self._of(model).policy.failed()

    def retry_after_ms(self, model: LoadedModel) -> int:
        return self._of(model).policy.retry_after_ms()

    def retain(self, name: str, versions: Collection[int]) -> None:
        """Drop the breakers of ``name``'s versions not in ``versions`` (no longer live)."""
        for key in [k for k in self._breakers if k[0] == name and k[1] not in versions]:
            breaker = self._breakers.pop(key)
            self._metrics.breaker_state.labels(breaker.name).set(BreakerState.CLOSED)

    def _of(self, model: LoadedModel) -> CircuitBreaker:
        key = (model.metadata.name, model.metadata.version)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(
                f"model:{key[0]}:v{key[1]}", self._metrics,
                failures_in_a_row=self._failures_in_a_row, reset_ms=self._reset_ms,
                failures=(), refuse=lambda b: RuntimeError(f"{b.name} breaker open"),
                clock=self._clock)
        return breaker
