"""Keeps the reader's cache fresh with Redis server-assisted client-side caching (RESP2).

The reader's data connection turns ``CLIENT TRACKING on REDIRECT <id>`` on (default mode:
Redis remembers the keys that connection read, which costs the server little), and this
listener's own connection, client ``<id>``, subscribes to ``__redis__:invalidate``. Redis names
a watched key there once it is written (HSET, DEL, inside the feature job's Lua upsert too),
expires or is evicted, and the key leaves the cache; FLUSHALL empties it.

Whatever could lose an invalidation flushes the cache and pauses it until tracking is back:
this connection dropping, or staying silent to a PING for the Redis timeout, and the data
connection reconnecting. A Redis that refuses tracking (older than 6.0, CLIENT denied) leaves
the cache on its TTL alone, said in one log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import hiredis
from prometheus_client import Counter

from featurestream.serving.cache import TTLCache
from featurestream.serving.metrics import Metrics
from featurestream.serving.redis_client import (
    RedisClient,
    RedisUnavailable,
    TrackingRefused,
    auth_command,
    open_transport,
)

log = logging.getLogger(__name__)

CHANNEL = "__redis__:invalidate"
PING_INTERVAL_S = 1.0  # how often the listener's connection is checked for life
RETRY_S = 0.5  # between attempts to re-establish tracking


class _Subscriber(asyncio.Protocol):
    """The listener's connection: invalidation messages go to the cache, other replies
    (handshake, subscribe, pong) to :attr:`replies` in order."""

    def __init__(self, listener: InvalidationListener) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self._listener = listener
        self._transport: asyncio.Transport | None = None
        self.replies: asyncio.Queue[Any] = asyncio.Queue()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.client_id = 0  # this connection's CLIENT ID, the REDIRECT target

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio callback: keep the transport."""
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """asyncio callback: evict invalidated keys at once, queue the rest."""
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if isinstance(reply, list) and reply[:2] == ["message", CHANNEL]:
                    self._listener.invalidated(reply[2])
                else:
                    self.replies.put_nowait(reply)
        except hiredis.ProtocolError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio callback: wake the listener."""
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, *commands: tuple[str, ...]) -> None:
        """Write ``commands``; their replies arrive on :attr:`replies`."""
        assert self._transport is not None
        # hiredis's stub types the command as a 1-tuple; any length is packed
        self._transport.write(b"".join(hiredis.pack_command(c)  # type: ignore[arg-type]
                                       for c in commands))

    async def reply(self, timeout_s: float) -> Any:
        """The next reply, or TimeoutError; RedisUnavailable if the connection goes first."""
        get = asyncio.ensure_future(self.replies.get())
        done, _ = await asyncio.wait([get, self.lost], timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        if self.lost.done():
            raise RedisUnavailable("connection", "the tracking connection was lost")
        raise TimeoutError(f"no reply on the tracking connection within {timeout_s * 1000:.0f} ms")

    def close(self) -> None:
        """Close the connection (the listener sees :attr:`lost`)."""
        if self._transport is not None:
            self._transport.close()


class InvalidationListener:
    """Invalidates ``cache`` from Redis while :meth:`run` runs (a task of the reader's
    worker); the cache serves only while tracking is known to be on."""

    def __init__(self, redis: RedisClient, cache: TTLCache, metrics: Metrics) -> None:
        self._redis = redis
        self._cache = cache
        # here, not in .metrics: the listener is its only writer
        self._invalidations = Counter(
            "featurestream_reader_cache_invalidations", "Keys Redis said changed (kind=key) "
            "and whole-cache flushes (kind=flush: tracking lost, FLUSHALL).", ["kind"],
            registry=metrics.registry)
        self._tracked: bool | None = None  # last logged state
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background of the worker's event loop (its lifespan)."""
        self._task = asyncio.create_task(self.run(), name="cache-invalidation")

    async def stop(self) -> None:
        """Cancel the background run and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        """Until cancelled: subscribe, turn tracking on, evict what Redis names; on any loss,
        flush and pause the cache and try again."""
        while True:
            try:
                await self._session()
            except TrackingRefused as exc:
                log.warning("reader cache: redis at %s refuses client-side caching (%s); the "
                            "cache is invalidated by its TTL alone",
                            self._redis.target.describe(), exc)
                self._cache.resume(invalidated=False)
                return
            except (RedisUnavailable, OSError, TimeoutError) as exc:
                self._log(False, str(exc) or type(exc).__name__)
            except Exception:  # a bug: said once; the cache stays paused until a session works
                if self._tracked is not False:
                    log.exception("reader cache: the invalidation listener failed")
                self._tracked = False
            await asyncio.sleep(RETRY_S)

    async def _session(self) -> None:
        """Tracking from subscribing until the connection is lost; the cache serves only
        in between."""
        subscriber = await self._subscribe()
        try:
            await self._redis.track(subscriber.client_id, self._tracking)
            self._log(True, "")
            await self._watch(subscriber)
            self._log(False, "the tracking connection was lost")
        finally:
            self._redis.untrack()
            self._tracking(False)
            subscriber.close()

    def invalidated(self, keys: list[str] | None) -> None:
        """Redis's message: these keys changed (None: every key, after FLUSHALL/FLUSHDB)."""
        if keys is None:
            self._cache.clear()
            self._invalidations.labels("flush").inc()
        else:
            self._cache.invalidate(keys)
            self._invalidations.labels("key").inc(len(keys))

    def _tracking(self, on: bool) -> None:
        """The data connection's reads are watched (serve, from empty), or no longer (pause)."""
        if on:
            self._cache.resume()
        elif self._cache.serving:
            self._cache.pause()
            self._invalidations.labels("flush").inc()

    async def _subscribe(self) -> _Subscriber:
        """A connection subscribed to the invalidations, its client id known."""
        redis = self._redis
        timeout_s = redis.timeout_s
        async with asyncio.timeout(timeout_s):
            subscriber = await open_transport(redis.target, lambda: _Subscriber(self))
        handshake = [*auth_command(redis.target), ("CLIENT", "ID"), ("SUBSCRIBE", CHANNEL)]
        subscriber.send(*handshake)
        try:
            replies = [await subscriber.reply(timeout_s) for _ in handshake]
        except BaseException:
            subscriber.close()
            raise
        errors = [r for r in replies if isinstance(r, hiredis.ReplyError)]
        if errors:
            subscriber.close()
            raise TrackingRefused(str(errors[0]))
        subscriber.client_id = replies[-2]
        return subscriber

    async def _watch(self, subscriber: _Subscriber) -> None:
        """Return when the connection is lost or fails to answer a PING in time."""
        timeout_s = self._redis.timeout_s
        while True:
            await asyncio.wait([subscriber.lost], timeout=PING_INTERVAL_S)
            if subscriber.lost.done():
                return
            subscriber.send(("PING",))
            try:
                await subscriber.reply(timeout_s)  # ["pong", ""]
            except TimeoutError:
                return

    def _log(self, tracked: bool, detail: str) -> None:
        """One line per change of state."""
        if tracked == self._tracked:
            return
        target = self._redis.target.describe()
        if tracked:
            log.info("reader cache: invalidated by redis at %s (client-side caching on)", target)
        else:
            log.warning("reader cache: tracking at %s lost (%s); the cache is flushed and "
                        "paused until it is back", target, detail)
        self._tracked = tracked
