"""Which Redis errors the jobs' writes wait out: on a cluster a failover's (CLUSTERDOWN,
TRYAGAIN, MOVED past redis-py's retries, a refused connection, no node answering the slot map),
each retry after the slot map is read again; on a single Redis only an unreachable server, as
before; a refused login never."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoPermissionError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

from featurestream.jobs.redis_retry import WriteRetry, login_refusal


class Flaky:
    """Raises the given errors in turn, then answers ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_a_failover_is_waited_out_on_a_cluster() -> None:
    refreshed: list[Exception] = []
    write = Flaky(ClusterDownError("CLUSTERDOWN The cluster is down"),
                  TryAgainError("TRYAGAIN"), MovedError("3999 127.0.0.1:7001"),
                  ConnectionError("refused"))
    assert WriteRetry(60_000, cluster=True, before_retry=refreshed.append)(write) == "ok"
    assert write.calls == 5 and len(refreshed) == 4


def test_a_single_redis_retries_only_an_unreachable_server() -> None:
    assert WriteRetry(60_000)(Flaky(ConnectionError("refused"))) == "ok"
    with pytest.raises(ClusterDownError):
        WriteRetry(60_000)(Flaky(ClusterDownError("CLUSTERDOWN")))


def test_other_errors_and_the_deadline_raise() -> None:
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        WriteRetry(60_000, cluster=True)(Flaky(ResponseError("WRONGTYPE")))
    write = Flaky(TryAgainError("TRYAGAIN"))
    with pytest.raises(TryAgainError):
        WriteRetry(0, cluster=True)(write)
    assert write.calls == 1


def test_a_cluster_with_no_node_answering_is_waited_out() -> None:
    # redis-py raises this (no RedisError) from its own ConnectionError handlers when it reads
    # the slot map again and no node answers.
    write = Flaky(RedisClusterException("Redis Cluster cannot be connected"))
    assert WriteRetry(60_000, cluster=True)(write) == "ok"
    assert write.calls == 2
    with pytest.raises(RedisClusterException):
        WriteRetry(60_000)(Flaky(RedisClusterException("Redis Cluster cannot be connected")))


def wrapped_login_refusal(refusal: Exception) -> RedisClusterException:
    """What redis-py's cluster client raises when a node refuses its login."""
    try:
        try:
            raise refusal
        except Exception as exc:
            raise RedisClusterException(f"Redis Cluster cannot be connected: {exc}") from exc
    except RedisClusterException as wrapped:
        return wrapped


@pytest.mark.parametrize("refusal", [
    AuthenticationError("invalid username-password pair or user is disabled."),
    NoPermissionError("this user has no permissions to run the 'cluster' command"),
], ids=["wrongpass", "noperm"])
def test_a_refused_login_is_never_retried(refusal: Exception) -> None:
    write = Flaky(wrapped_login_refusal(refusal))
    with pytest.raises(RedisClusterException):
        WriteRetry(60_000, cluster=True)(write)
    assert write.calls == 1
    assert login_refusal(wrapped_login_refusal(refusal)) is not None


def test_a_login_refusal_is_found_in_the_cause_chain_or_the_message() -> None:
    assert login_refusal(RedisClusterException("cannot be connected: WRONGPASS invalid")) \
        is not None
    assert login_refusal(RedisClusterException("cannot be connected: refused")) is None
    assert login_refusal(ConnectionError("refused")) is None
