"""The jobs' Redis writes retried while Redis cannot be reached: exponential backoff from 0.1 s
doubling to 5 s (so a Redis that comes back is written to within 5 s), for up to a deadline.

On Redis Cluster a failover is routine, not an outage: while a replica takes over, the nodes
answer ``CLUSTERDOWN``/``TRYAGAIN``, refuse connections or redirect (``MOVED``). A batch that
meets any of these is retried whole here, the caller reading the slot map again first (redis-py
follows redirects itself only for the commands it routes, e.g. the scoring job's ``MGET``s).
The writes are idempotent (the upserts keep the newer row or score, ``SET NX`` the first
capture), so repeating a whole batch after a partial failure is safe.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterError,
    ConnectionError,
    NoPermissionError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

T = TypeVar("T")
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 5.0
# redis-py's own default: what a single Redis answers while it cannot be reached.
UNREACHABLE = (ConnectionError, TimeoutError, socket.timeout)
# ... and what a cluster answers during a failover (ClusterError: CLUSTERDOWN, MASTERDOWN;
# AskError: ASK and MOVED past redis-py's own retries; READONLY: a demoted master;
# RedisClusterException, no RedisError: redis-py reading the slot map when no node answers or
# the slots are not all covered yet, raised even from its own ConnectionError handlers).
FAILING_OVER = (ClusterError, TryAgainError, AskError, SlotNotCoveredError, ReadOnlyError,
                NoScriptError, RedisClusterException)
LOGIN_REFUSED = (AuthenticationError, NoPermissionError)


def login_refusal(error: BaseException) -> BaseException | None:
    """The error in ``error``'s cause chain that says Redis refused the login (a wrong user or
    password, an ACL without the command), or None. redis-py's cluster client wraps it in a
    RedisClusterException when it reads the slot map, and no retry can fix it."""
    link: BaseException | None = error
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        if isinstance(link, LOGIN_REFUSED) or any(
                word in str(link) for word in ("WRONGPASS", "NOPERM")):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


class WriteRetry:
    """Calls a write, retrying it with backoff on :data:`UNREACHABLE` (and, ``cluster``, on
    :data:`FAILING_OVER`) errors for up to ``retry_ms``, then raising the last error.
    ``before_retry(error)`` runs before each retry (a cluster writer reads the slot map
    again)."""

    def __init__(self, retry_ms: int, cluster: bool = False,
                 before_retry: Callable[[Exception], None] = lambda error: None) -> None:
        self._retry_s = retry_ms / 1000
        errors = UNREACHABLE + FAILING_OVER if cluster else UNREACHABLE
        self._retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), -1,
                            supported_errors=errors)
        self._before_retry = before_retry

    def __call__(self, write: Callable[[], T]) -> T:
        """``write()``, retried as the class says."""
        deadline = time.monotonic() + self._retry_s

        def give_up_past_deadline(error: Exception) -> None:
            if time.monotonic() >= deadline or login_refusal(error):
                raise error
            self._before_retry(error)
        return self._retry.call_with_retry(write, give_up_past_deadline)
