"""Per-call cost of a circuit breaker around an awaited call: ``python -m bench.breaker`` (~5 s).

Why the reader has its own small breaker (:mod:`featurestream.udfs.resilience.breaker`): this
times the closed-state path (the one every request takes) of ours and of the libraries that
fit asyncio: pybreaker (``calling()``: its ``call_async`` needs tornado), purgatory and
aiobreaker. The libraries are not dependencies: install them beside it to compare
(``pip install --target /tmp/breakers pybreaker purgatory aiobreaker`` and
``PYTHONPATH=/tmp/breakers``); a missing one is skipped. Prints µs per call over the bare await.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from typing import Any

from featurestream.serving.breaker import CircuitBreaker
from featurestream.serving.metrics import Metrics

CALLS = 50_000

Call = Callable[[], Awaitable[None]]


async def dependency() -> None:
    """The guarded call: returns at once (what is timed is the breaker around it)."""


async def timed(call: Call) -> float:
    """Seconds per ``call``, best of 7 runs of :data:`CALLS`."""
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(CALLS):
            await call()
        best = min(best, (time.perf_counter() - start) / CALLS)
    return best


def ours() -> Call:
    breaker = CircuitBreaker("bench", Metrics(), failures_in_a_row=5, reset_ms=1_000,
                             failures=(OSError,), refuse=lambda b: OSError("open"))

    async def call() -> None:
        with breaker:
            await dependency()
    return call


def pybreaker_call() -> Call:
    import pybreaker  # type: ignore[import-not-found]
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=1)

    async def call() -> None:
        with breaker.calling():
            await dependency()
    return call


def purgatory_call() -> Call:
    from purgatory import AsyncCircuitBreakerFactory  # type: ignore[import-not-found]
    factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=1)

    async def call() -> None:
        async with await factory.get_breaker("bench"):
            await dependency()
    return call


def aiobreaker_call() -> Call:
    from datetime import timedelta

    import aiobreaker  # type: ignore[import-not-found]
    breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=1))

    async def call() -> None:
        await breaker.call_async(dependency)
    return call


CANDIDATES: dict[str, tuple[str, Callable[[], Call]]] = {
    "featurestream (ours)": ("featurestream", ours),
    "pybreaker": ("pybreaker", pybreaker_call),
    "purgatory": ("purgatory", purgatory_call),
    "aiobreaker": ("aiobreaker", aiobreaker_call),
}


async def main() -> None:
    """Print each breaker's cost per call beyond the bare await."""
    bare = await timed(dependency)
    print(f"bare await: {bare * 1e6:.2f} µs per call")
    for name, (module, build) in CANDIDATES.items():
        if importlib.util.find_spec(module) is None:
            print(f"{name}: not installed, skipped")
            continue
        call: Any = build()
        print(f"{name}: +{(await timed(call) - bare) * 1e6:.2f} µs per call")


if __name__ == "__main__":
    asyncio.run(main())
