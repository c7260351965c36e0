"""The circuit breaker's policy, without I/O: when to stop calling a failing dependency and when
to try it again.

Closed: calls go through; ``failures`` failures in a row open it. Open: calls are refused at once
(the caller falls back or answers 503 without waiting for a timeout). ``reset_ms`` after opening,
the next call is let through as the one probe (half-open); the others are still refused. The
probe's success closes the breaker, its failure opens it for another ``reset_ms``. A probe that
never reports (its caller was cancelled) is replaced by the next call ``reset_ms`` later.

Why not pybreaker 1.4.1, purgatory 3.0.1 or aiobreaker 1.2.0: none lets a single probe through
when half-open (every concurrent call goes, which is what the breaker should spare a recovering
dependency); pybreaker's async path needs tornado (its ``calling()`` holds a thread lock across
the await), purgatory and aiobreaker read the wall clock (no fake clock in tests, a jump of the
clock opens or closes). Speed does not decide: around an awaited call ours adds 0.8-1.5 µs,
purgatory 1.5-3.7, aiobreaker 1.3-2.8, pybreaker 3.7-9.2 (``python -m bench.breaker``, four runs
on a busy 2-core box), all small beside a Redis round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    """The state, valued as the ``featurestream_reader_breaker_state`` gauge shows it."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


Transition = Callable[[BreakerState, BreakerState], None]  # (from, to)


class BreakerPolicy:
    """One dependency's breaker. Ask :meth:`admit` before a call, then report its outcome with
    :meth:`succeeded` or :meth:`failed`; ``on_change`` hears every transition."""

    def __init__(self, failures: int, reset_ms: int, clock: Callable[[], float] = time.monotonic,
                 on_change: Transition | None = None) -> None:
        if failures <= 0 or reset_ms <= 0:
            raise ValueError("failures and reset_ms must be positive")
        self._failures = failures
        self._reset_s = reset_ms / 1000
        self._clock = clock
        self._on_change = on_change
        self.state = BreakerState.CLOSED
        self._consecutive = 0  # failures in a row while closed
        self._since = 0.0  # when it opened, or when the probe was let through

    def admit(self) -> bool:
        """Whether the call may go to the dependency now (False: refuse it without calling)."""
        if self.state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if now - self._since < self._reset_s:
            return False  # open and cooling down, or half-open with the probe out
        self._since = now
        self._move(BreakerState.HALF_OPEN)  # this call is the (new) probe
        return True

    def succeeded(self) -> None:
        """An admitted call worked: closes a half-open breaker, clears the failures in a row.
        (A call admitted before the breaker opened and answering late changes nothing.)"""
        if self.state is BreakerState.HALF_OPEN:
            self._move(BreakerState.CLOSED)
        if self.state is BreakerState.CLOSED:
            self._consecutive = 0

    def failed(self) -> None:
        """An admitted call failed or timed out: the ``failures``-th in a row, or the probe's,
        opens the breaker."""
        if self.state is BreakerState.OPEN:
            return
        self._consecutive += 1
        if self.state is BreakerState.HALF_OPEN or self._consecutive >= self._failures:
            self._since = self._clock()
            self._move(BreakerState.OPEN)

    def retry_after_ms(self) -> int:
        """How long until a probe may go (0 when closed)."""
        if self.state is BreakerState.CLOSED:
            return 0
        return max(0, round((self._since + self._reset_s - self._clock()) * 1000))

    def _move(self, to: BreakerState) -> None:
        before, self.state = self.state, to
        if to is BreakerState.CLOSED:
            self._consecutive = 0
        if self._on_change is not None and before is not to:
            self._on_change(before, to)
