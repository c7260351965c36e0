"""A small in-process TTL cache of decoded Redis values (off unless ``cache_ttl_ms`` > 0)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

MISS = object()  # returned by :meth:`TTLCache.get` when the key is absent or expired


class TTLCache:
    """Values by key for ``ttl_ms``, at most ``max_entries`` of them.

    Every entry lives the same TTL and a put moves its key to the end, so insertion order is
    expiry order: expired entries are dropped from the front, and when full the oldest go first.
    """

    def __init__(self, ttl_ms: int, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_ms / 1000
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        """The cached value (which may be None: "known absent"), or :data:`MISS`."""
        entry = self._entries.get(key)
        if entry is None:
            return MISS
        if entry[0] <= self._clock():
            del self._entries[key]
            return MISS
        return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        """Cache ``value`` for the TTL, evicting expired and then the oldest entries."""
        now = self._clock()
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (now + self._ttl_s, value)
        while len(entries) > self._max_entries or entries[next(iter(entries))][0] <= now:
            entries.popitem(last=False)
