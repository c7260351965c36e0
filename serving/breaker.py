"""A dependency's circuit breaker in the reader: the pure policy
(:mod:`featurestream.udfs.resilience.breaker`) with its state and transitions as metrics and log
lines.

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
from collections.abc import Callable
from types import TracebackType

from featurestream.serving.metrics import Metrics
from featurestream.udfs.resilience.breaker import BreakerPolicy, BreakerState

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
