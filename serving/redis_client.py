"""A small asyncio Redis client: one pipelined connection per worker, every call time-bounded.

Why not ``redis.asyncio`` (with hiredis too): its pool checkout and layered parsing cost ~3.5x
the CPU per concurrent single HGETALL (57 vs 17 µs on this 2-core box) and ~3x per key of a
pipelined batch of 100 (16 vs 6 µs); here commands go straight onto one connection and hiredis
parses the replies. ``python -m bench.redis_client`` measures both.
Concurrent requests share the connection: their commands are pipelined (those issued in the
same event-loop turn leave in one write) and Redis answers in order, so one connection per
worker is the right pool size.

Every call (connect and handshake included) is bounded by ``timeout_s`` and fails with
:class:`RedisUnavailable`. A lost connection, or one that stayed silent for a whole timeout, is
dropped and the next call opens a new one, so recovery after a Redis restart is automatic.
With the cache invalidated (:mod:`.tracking`), every connection turns Redis's client-side
caching on as it opens (``CLIENT TRACKING on REDIRECT``), so the keys read on it are watched.
URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS (system CAs, or
``?ssl_ca_certs=FILE``; ``?ssl_cert_reqs=none`` skips verification) and ``unix:///path?db=N``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

log = logging.getLogger(__name__)

Command = tuple[str, ...]
ConnectionT = TypeVar("ConnectionT", bound=asyncio.Protocol)


class RedisUnavailable(Exception):
    """Redis did not answer in time, could not be reached, or answered with an error.

    ``kind`` is ``timeout``, ``connection`` or ``reply`` (the label of the error metric).
    ``about_the_data``: Redis is well and refused what a key holds (``WRONGTYPE``): not a
    reason to stop asking it (the circuit breaker does not count it).
    """

    def __init__(self, kind: str, message: str, about_the_data: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.about_the_data = about_the_data


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to connect, parsed from a Redis URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str = ""
    db: int = 0
    username: str = ""
    password: str = ""
    tls: ssl.SSLContext | None = None

    def describe(self) -> str:
        """The address without credentials, for logs and error messages."""
        if self.unix_path:
            return f"unix://{self.unix_path}?db={self.db}"
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisTarget:
    """A :class:`RedisTarget` from a redis://, rediss:// or unix:// URL.

    ValueError if malformed; the message never repeats the URL (it may hold a password).
    """
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    username, password = unquote(parts.username or ""), unquote(parts.password or "")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs a socket path")
        return RedisTarget(unix_path=parts.path, db=int(query.get("db", 0)), username=username,
                           password=password)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"scheme {parts.scheme!r}: use redis://, rediss:// or unix://")
    tls = None
    if parts.scheme == "rediss":
        tls = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
        if query.get("ssl_cert_reqs", "required").lower() == "none":
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
    db = parts.path.strip("/") or query.get("db", "0")
    return RedisTarget(host=parts.hostname or "127.0.0.1", port=parts.port or 6379,
                       db=int(db), tls=tls, username=username, password=password)


class _Pending:
    """The replies a caller waits for: ``expected`` of them, then ``future`` resolves."""

    __slots__ = ("expected", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []


class TrackingRefused(Exception):
    """This Redis refuses client-side caching (older than 6, or CLIENT denied by its ACL)."""


def tracking_command(redirect: int) -> Command:
    """Turn tracking on for the connection, its invalidations sent to client ``redirect``."""
    return ("CLIENT", "TRACKING", "ON", "REDIRECT", str(redirect))


async def open_transport(target: RedisTarget, factory: Callable[[], ConnectionT]) -> ConnectionT:
    """A connection to ``target`` (TCP, TLS or unix socket) served by ``factory()``'s protocol;
    the caller bounds the time and does the handshake."""
    loop = asyncio.get_running_loop()
    if target.unix_path:
        _, protocol = await loop.create_unix_connection(factory, target.unix_path)
    else:
        _, protocol = await loop.create_connection(
            factory, target.host, target.port, ssl=target.tls,
            server_hostname=target.host if target.tls else None)
    return protocol


def auth_command(target: RedisTarget) -> list[Command]:
    """The AUTH a connection to ``target`` starts with, if it needs one."""
    if not target.password:
        return []
    return [("AUTH", target.username, target.password) if target.username
            else ("AUTH", target.password)]


class _Connection(asyncio.Protocol):
    """One Redis connection: pipelined writes, hiredis-parsed replies matched in order.

    ``tracking``: the client its invalidations go to, if tracking is on; ``on_lost`` is called
    once when it closes, however that happens.
    """

    def __init__(self, on_lost: Callable[[_Connection], None] | None = None) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self._on_lost = on_lost
        self.tracking: int | None = None
        self._pending: deque[_Pending] = deque()
        self._outgoing: list[bytes] = []  # written together at the end of the loop turn
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.last_read = 0.0  # monotonic time of the last bytes received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio callback: keep the transport."""
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """asyncio callback: hand complete replies to their callers, in order."""
        self.last_read = time.monotonic()
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                head = self._pending[0]
                head.replies.append(reply)
                if len(head.replies) == head.expected:
                    self._pending.popleft()
                    if not head.future.done():  # a caller that timed out is gone
                        head.future.set_result(head.replies)
        except hiredis.ProtocolError as exc:
            self._fail(RedisUnavailable("reply", f"unreadable reply from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio callback: fail every waiting caller."""
        self._fail(RedisUnavailable("connection", f"connection to Redis lost: {exc or 'closed'}"))

    def send(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """Write ``commands`` in one go; the future resolves to their replies.

        No commands, no write: the future is already resolved (a caller waiting for zero
        replies in the queue would otherwise wait forever, and take the next caller's).
        """
        if self.closed or self._transport is None:
            raise RedisUnavailable("connection", "connection to Redis lost")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not commands:
            future.set_result([])
            return future
        self._pending.append(_Pending(future, len(commands)))
        if not self._outgoing:
            loop.call_soon(self._flush)
        # hiredis's stub types the command as a 1-tuple; any length is packed
        self._outgoing.extend(hiredis.pack_command(c) for c in commands)  # type: ignore[arg-type]
        return future

    def _flush(self) -> None:
        if self._outgoing and self._transport is not None and not self.closed:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def close(self, error: RedisUnavailable | None = None) -> None:
        """Close the connection; waiting callers fail with ``error``."""
        self._fail(error or RedisUnavailable("connection", "connection to Redis closed"))

    def _fail(self, error: RedisUnavailable) -> None:
        if not self.closed and self._on_lost is not None:
            self._on_lost(self)
        self.closed = True
        self._outgoing.clear()
        if self._transport is not None:
            self._transport.close()
        while self._pending:
            future = self._pending.popleft().future
            if not future.done():
                future.set_exception(error)


class RedisClient:
    """Time-bounded, pipelined Redis calls over one lazily (re)opened connection."""

    def __init__(self, target: RedisTarget, timeout_s: float) -> None:
        self.target = target
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._up: bool | None = None  # last known state, to log each change once
        self._tracking: tuple[int, Callable[[bool], None]] | None = None

    async def execute(self, commands: Sequence[Command], *,
                      inline_errors: bool = False) -> list[Any]:
        """Send ``commands`` in one round trip and return their replies (RedisUnavailable).

        No commands: no replies, at once, without connecting. ``inline_errors``: an error
        reply is returned in its place (a ``hiredis.ReplyError``: the cluster client reads
        its redirects) instead of raised.
        """
        if not commands:
            return []
        connection: _Connection | None = None
        sent_at = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                connection = await self._connect()
                replies = await connection.send(commands)
        except TimeoutError:
            error = RedisUnavailable("timeout", f"Redis at {self.target.describe()} did not "
                                     f"answer within {self._timeout_s * 1000:.0f} ms")
            if connection is not None and connection.last_read < sent_at:
                connection.close(error)  # silent for a whole timeout: stalled, start afresh
            self._state(False, str(error))
            raise error from None
        except OSError as exc:
            error = RedisUnavailable("connection", f"cannot reach Redis at "
                                     f"{self.target.describe()}: {exc}")
            self._state(False, str(error))
            raise error from None
        except RedisUnavailable as exc:
            self._state(False, str(exc))
            raise
        if not inline_errors:
            raise_reply_errors(replies)
        self._state(True, "")
        return replies

    def describe(self) -> str:
        """Where it connects, without credentials."""
        return self.target.describe()

    @property
    def timeout_s(self) -> float:
        """The bound on every call."""
        return self._timeout_s

    async def track(self, redirect: int, on_change: Callable[[bool], None]) -> None:
        """Turn client-side caching on, invalidations to client ``redirect`` (a connection
        subscribed to ``__redis__:invalidate``), for the open connection and each one opened
        later: ``on_change(True)`` once one has it on, ``on_change(False)`` when one that had
        it is lost or a new one could not turn it on (its reads are watched no more).

        RedisUnavailable if Redis does not answer or ``redirect`` is gone; TrackingRefused if
        this Redis refuses tracking.
        """
        self._tracking = (redirect, on_change)
        try:
            async with asyncio.timeout(self._timeout_s):
                connection = await self._connect()
                if connection.tracking != redirect:
                    [reply] = await connection.send([tracking_command(redirect)])
                    if isinstance(reply, hiredis.ReplyError):
                        raise _tracking_error(reply)
                    connection.tracking = redirect
        except BaseException as exc:
            self._tracking = None
            if isinstance(exc, TimeoutError | OSError):
                raise RedisUnavailable("timeout" if isinstance(exc, TimeoutError)
                                       else "connection", f"tracking: {exc or 'timed out'}") \
                    from None
            raise
        on_change(True)

    def untrack(self) -> None:
        """Stop turning tracking on for new connections (the redirect client is gone)."""
        self._tracking = None

    async def close(self) -> None:
        """Close the connection, if open."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _connect(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        async with self._connecting:  # concurrent callers share one attempt
            if self._connection is None or self._connection.closed:
                self._connection = await self._open()
            return self._connection

    async def _open(self) -> _Connection:
        target, tracking = self.target, self._tracking
        connection = await open_transport(target, lambda: _Connection(self._lost))
        handshake = auth_command(target)
        if target.db:
            handshake.append(("SELECT", str(target.db)))
        if tracking is not None:
            handshake.append(tracking_command(tracking[0]))
        try:
            replies = await connection.send(handshake)
        except BaseException:  # timed out or cancelled mid-handshake: don't leak the socket
            connection.close()
            raise
        if tracking is not None:
            tracked = replies.pop()
            if not isinstance(tracked, hiredis.ReplyError):
                connection.tracking = tracking[0]
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                connection.close()
                raise RedisUnavailable("reply", f"Redis refused the connection: {reply}; "
                                       "check the user, password and database in "
                                       "FEATURESTREAM_REDIS_URL")
        if tracking is not None and tracking is self._tracking:
            if connection.tracking is None:  # its redirect client is gone: the listener re-tracks
                log.warning("redis at %s: tracking refused on a new connection (%s); the "
                            "cache is paused until it is back", target.describe(), tracked)
            tracking[1](connection.tracking is not None)
        return connection

    def _lost(self, connection: _Connection) -> None:
        """A connection closed: if its reads were tracked, cached values lose their watch."""
        if connection.tracking is not None and self._tracking is not None:
            self._tracking[1](False)

    def _state(self, up: bool, detail: str) -> None:
        if up != self._up:
            if self._up is not None:  # the first state is in the worker's start line
                if up:
                    log.info("redis at %s: reachable again", self.target.describe())
                else:
                    log.warning("redis at %s: unavailable (%s)", self.target.describe(), detail)
            self._up = up


def raise_reply_errors(replies: Sequence[Any]) -> None:
    """RedisUnavailable for the first error reply (``about_the_data`` for ``WRONGTYPE``)."""
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise RedisUnavailable("reply", f"Redis answered with an error: {reply}",
                                   about_the_data=str(reply).startswith("WRONGTYPE"))


class RedisCalls(Protocol):
    """What the reader's stores need of Redis: :class:`RedisClient`, or on Redis Cluster
    :class:`~featurestream.serving.redis_cluster_client.ClusterClient`."""

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Replies in command order (RedisUnavailable)."""
        ...

    def describe(self) -> str:
        """Where, without credentials."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...


def _tracking_error(reply: hiredis.ReplyError) -> Exception:
    """RedisUnavailable if the redirect client is gone (its listener reconnects), else
    TrackingRefused: the server will not track (unknown command, denied)."""
    if "redirect" in str(reply):  # "ERR The client ID you want redirect to does not exist"
        return RedisUnavailable("reply", f"tracking: {reply}")
    return TrackingRefused(str(reply))
