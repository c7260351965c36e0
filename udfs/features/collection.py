"""Python's garbage collector, tuned for processes that hold many entities' windows.

Shards hold millions of long-lived objects (buckets, accumulator states). Python's default runs
a full collection whenever they grow by a quarter, checked every 10 younger collections, which
spent a third of the feature job's worker time walking them. Full collections then wait for
1,000 younger ones: the feature job's keyed worker and the offline replay (backfill, training,
verify) both call :func:`few_full_collections` once.
"""

from __future__ import annotations

import gc

_FULL_COLLECTION_EVERY = 1_000  # younger (generation 1) collections


def few_full_collections() -> None:
    """Run a full collection only every 1,000 generation-1 collections (this process)."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _FULL_COLLECTION_EVERY)
