"""Which Redis errors the jobs' writes wait out: on a cluster a failover's (CLUSTERDOWN,
TRYAGAIN, MOVED past redis-py's retries, a refused connection), each retry after the slot map is
read again; on a single Redis only an unreachable server, as before."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MovedError,
    ResponseError,
    TryAgainError,
)

from featurestream.jobs.redis_retry import WriteRetry


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
