"""Where the jobs write in Redis: one typed value, built from the settings on the client and
pickled to the Python workers, which open their connections from it."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from featurestream.jobs.redis_retry import LOGIN_REFUSED, login_refusal
from featurestream.settings import DEFAULT_POINT_IN_TIME_TTL_MS, Settings, masked_url

# A cluster writer's bound on each call: a frozen or cut-off master never answers, and only a
# timeout lets the write's retries read the slot map again and reach the replica elected in
# its place. Far above any healthy call (a batch's upsert takes milliseconds); the writes are
# idempotent, so a call that timed out but ran is safely repeated. A single Redis has no other
# node to turn to: its writes wait it out (docs/reliability.md).
CLUSTER_CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """The Redis a job writes to and the layout's parameters.

    ``key_prefix``, ``ttl_seconds`` and ``point_in_time_ttl_ms`` are the layout's
    (:mod:`udfs.store.redis_layout`); ``batch_size`` is how many users' rows the feature job
    buffers before it writes them; ``cluster``: the URL names a node of a Redis Cluster;
    ``write_retry_ms``: how long a write is retried while Redis (a cluster: failing over)
    cannot take it (:mod:`.redis_retry`).
    """

    url: str
    key_prefix: str
    ttl_seconds: int
    batch_size: int
    point_in_time_ttl_ms: int = DEFAULT_POINT_IN_TIME_TTL_MS
    cluster: bool = False
    write_retry_ms: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTarget:
        """The target the settings name (``FEATURESTREAM_REDIS_*``)."""
        return cls(settings.redis_url, settings.redis_key_prefix, settings.redis_ttl_seconds,
                   settings.redis_batch_size, settings.point_in_time_ttl_ms,
                   settings.redis_cluster, settings.redis_write_retry_ms)

    def __repr__(self) -> str:  # the URL may carry a password: never show it
        return (f"RedisTarget(url={masked_url(self.url)!r}, key_prefix={self.key_prefix!r}, "
                f"ttl_seconds={self.ttl_seconds}, batch_size={self.batch_size}, "
                f"point_in_time_ttl_ms={self.point_in_time_ttl_ms}, cluster={self.cluster}, "
                f"write_retry_ms={self.write_retry_ms})")

    def connect(self) -> redis.Redis | RedisCluster:
        """A client with its own connection pool (made in a function's ``open()``), its login
        checked: a wrong user or password, or an ACL without PING, is a :class:`RedisLoginError`
        naming the setting now, not a bare AuthenticationError at the first write. An
        unreachable Redis is not an error yet: the first write's retries and failure handle it
        (a cluster client needs one node to read the slot map from: none is a ConnectionError
        now, and Flink restarts the function). A cluster client's calls are bounded by
        :data:`CLUSTER_CALL_TIMEOUT_S`."""
        try:
            client = sync_client(self.url, self.cluster,
                                 CLUSTER_CALL_TIMEOUT_S if self.cluster else None)
        except LOGIN_REFUSED as exc:  # a cluster client logs in to read the slot map
            raise self._login_error(exc) from None
        try:
            client.ping()
        except LOGIN_REFUSED as exc:
            client.close()
            raise self._login_error(exc) from None
        except redis.RedisError:
            pass
        return client

    def _login_error(self, refusal: Exception) -> RedisLoginError:
        return RedisLoginError(
            f"Redis at {masked_url(self.url)} refused the login ({refusal}); fix the user and "
            "password in FEATURESTREAM_REDIS_URL, or the ACL user (docs/security.md)")


def sync_client(url: str, cluster: bool, timeout_s: float | None = None
                ) -> redis.Redis | RedisCluster:
    """The redis-py client of ``url``: a :class:`RedisCluster` (``cluster``: the URL names any
    one node; the others, and which serves which slot, are discovered from it) or a plain
    client; ``timeout_s`` bounds connecting and every call (None: no bound). The one place the
    jobs and the CLI make their synchronous clients (``FEATURESTREAM_REDIS_CLUSTER``).

    A cluster client reads the slot map as it is made: a refused login is raised as Redis
    answered it (AuthenticationError, NoPermissionError), no node answering is a
    :class:`redis.ConnectionError` (redis-py wraps both in a RedisClusterException, no
    RedisError)."""
    if cluster:
        try:
            return RedisCluster.from_url(url, socket_timeout=timeout_s,
                                         socket_connect_timeout=timeout_s)
        except RedisClusterException as exc:
            refusal = login_refusal(exc)
            if isinstance(refusal, LOGIN_REFUSED):
                raise refusal from None
            if refusal is not None:
                raise redis.AuthenticationError(str(refusal)) from None
            raise redis.ConnectionError(str(exc)) from None
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


class RedisLoginError(Exception):
    """Redis refused the job's user or password: no restart will fix it."""
