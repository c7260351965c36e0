"""The reader's in-process cache of decoded Redis values: an LRU whose entries also expire
(off unless ``cache_ttl_ms`` > 0).

Hand-written on an OrderedDict rather than ``cachetools.TTLCache`` (also an LRU with a TTL):
``python -m bench.reader_cache`` (100,000 keys, a busy 2-core box) measures a hit at
0.3-0.6 µs here against 1.5-3.3 µs there, a miss then put at 0.9-2 µs against 6.5-9 µs; and
the invalidation guard below needs a hook into every miss that cachetools has no place for.

Invalidated mode (Redis client-side caching, :mod:`.tracking`): a value may be cached only if
no invalidation of its key arrived while it was being read. Each miss leaves its own
placeholder (the :class:`Miss` it returns); an invalidation removes the key, placeholder or
value; a put is cached only if its own miss is still the key's placeholder (else the value is
just returned to its caller). One placeholder per miss, not a shared one: a read that started
before an invalidation must not be cached under the placeholder of a read that started after
it. This is the race guard Redis's own
client-side caching guide describes: the reply and the invalidation travel on different
connections, so either may arrive first. While tracking is down the cache is *paused*: it
holds nothing and serves nothing, so no entry whose changes nobody watches is ever served.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any


class Miss:
    """What :meth:`TTLCache.get` returns for an absent or expired key; in invalidated mode a
    new one per miss, to hand back to :meth:`TTLCache.put` (the read it started)."""

    __slots__ = ()


MISS = Miss()  # the miss of a cache without invalidation (every one alike)


class TTLCache:
    """Values by key for ``ttl_ms`` (> 0) each, at most ``max_entries`` of them, least
    recently used out first.

    ``invalidated``: entries are also removed by :meth:`invalidate` and the cache starts
    paused, serving nothing until :meth:`resume` (tracking is on).
    """

    def __init__(self, ttl_ms: int, max_entries: int,
                 clock: Callable[[], float] = time.monotonic, invalidated: bool = False) -> None:
        self._ttl_s = ttl_ms / 1000
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._guarded = invalidated
        self._serving = not invalidated

    def get(self, key: Hashable) -> Any:
        """The cached value (which may be None: "known absent"), or a :class:`Miss`; a hit
        makes the key the most recently used."""
        entries = self._entries
        entry = entries.get(key)
        if entry is not None and entry[0] > self._clock() and not isinstance(entry[1], Miss):
            entries.move_to_end(key)
            return entry[1]
        if self._guarded and self._serving:
            miss = Miss()
            self._store(key, miss)  # the read this miss starts; an invalidation clears it
            return miss
        if entry is not None:
            del entries[key]
        return MISS

    def put(self, key: Hashable, value: Any, miss: Miss = MISS) -> None:
        """Cache ``value`` for the TTL as the most recently used key, evicting the least
        recently used beyond ``max_entries``; in invalidated mode only if ``miss`` (what
        :meth:`get` returned) is still the key's placeholder: no invalidation and no later
        miss since (else nothing is cached)."""
        if not self._serving:
            return
        if self._guarded:
            entry = self._entries.get(key)
            if entry is None or entry[1] is not miss:
                return
        self._store(key, value)

    def invalidate(self, keys: Iterable[Hashable]) -> None:
        """Forget ``keys`` (newer values were written), reads of them in flight included."""
        pop = self._entries.pop
        for key in keys:
            pop(key, None)

    def clear(self) -> None:
        """Forget everything, reads in flight included (their puts won't be cached)."""
        self._entries.clear()

    def pause(self) -> None:
        """Hold and serve nothing until :meth:`resume` (changes are not watched now)."""
        self._serving = False
        self._entries.clear()

    def resume(self, invalidated: bool = True) -> None:
        """Serve again, from empty; ``invalidated=False`` drops the guard (TTL only)."""
        self._entries.clear()
        self._guarded = invalidated
        self._serving = True

    @property
    def serving(self) -> bool:
        """Whether values are cached and served now."""
        return self._serving

    def _store(self, key: Hashable, value: Any) -> None:
        """Insert as the most recent; then drop the least recent while over the bound or
        expired (expired entries would otherwise stay until evicted, holding memory)."""
        entries = self._entries
        now = self._clock()
        entries[key] = (now + self._ttl_s, value)
        entries.move_to_end(key)
        while len(entries) > self._max_entries or entries[next(iter(entries))][0] <= now:
            entries.popitem(last=False)
