"""Event-time order over an input larger than memory: an external merge sort.

Backfill replays history in log order by default (the job's rule: what precedes an event in its
partition or file counts before it); ``--order time`` replays it sorted by event time instead,
for inputs written out of order (a dump of several partitions, files concatenated). The input
may not fit in memory, so it is cut into sorted runs of ``run_size`` items, each run but the
last spilled to a file in ``spill_dir``, and the runs merged lazily (:func:`heapq.merge`).
Equal times keep their input order (the sort key is ``(time, input position)``), so the result
equals ``sorted(items, key=key)``, which is stable. At most :data:`MAX_FAN_IN` runs are merged
at once (open files); beyond that the oldest runs are first merged into one bigger run.

Items are pickled to the spill files, so they must be picklable (the backfill's records are
plain tuples of bytes and ints).
"""

from __future__ import annotations

import heapq
import pickle
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator
from itertools import count
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")
Keyed = tuple[int, int, T]  # (time, input position, item): positions are unique

MAX_FAN_IN = 64
_CHUNK = 4_096  # items per pickle in a run file: streams back without loading the run


def sorted_by_time(items: Iterable[T], key: Callable[[T], int], *, run_size: int = 200_000,
                   spill_dir: str | Path | None = None) -> Generator[T, None, None]:
    """``items`` in ``key`` order, ties in input order, holding at most about ``run_size``
    items (and one chunk per run) in memory; spill files go to a temporary directory under
    ``spill_dir`` (default: the system's), removed when the iteration ends or is closed."""
    if run_size < 1:
        raise ValueError(f"run_size must be at least 1, got {run_size}")
    with tempfile.TemporaryDirectory(prefix="featurestream-sort-", dir=spill_dir) as tmp:
        runs: list[Path] = []
        names = count()  # run file numbers, never reused
        buffer: list[Keyed[T]] = []
        for position, item in enumerate(items):
            buffer.append((key(item), position, item))
            if len(buffer) >= run_size:
                runs.append(_spill(sorted(buffer, key=_time_and_position), Path(tmp), next(names)))
                buffer = []
                if len(runs) >= MAX_FAN_IN:
                    runs = [_merge_to_run(runs, Path(tmp), next(names))]
        buffer.sort(key=_time_and_position)
        if not runs:
            for _, _, item in buffer:
                yield item
            return
        files = [path.open("rb") for path in runs]
        try:
            merged = heapq.merge(*(_read(f) for f in files), iter(buffer),
                                 key=_time_and_position)
            for _, _, item in merged:
                yield item
        finally:
            for f in files:
                f.close()


def _time_and_position(keyed: Keyed[T]) -> tuple[int, int]:
    return keyed[0], keyed[1]


def _spill(run: Iterable[Keyed[T]], tmp: Path, number: int) -> Path:
    """Write a sorted run to a file of pickled chunks."""
    path = tmp / f"run-{number:06d}.pickle"
    with path.open("wb") as f:
        chunk: list[Keyed[T]] = []
        for keyed in run:
            chunk.append(keyed)
            if len(chunk) >= _CHUNK:
                pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
                chunk = []
        if chunk:
            pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _merge_to_run(runs: list[Path], tmp: Path, number: int) -> Path:
    """Merge spilled runs into one (bounding the files open at once), deleting them."""
    files = [path.open("rb") for path in runs]
    try:
        merged = _spill(heapq.merge(*(_read(f) for f in files), key=_time_and_position),
                        tmp, number)
    finally:
        for f in files:
            f.close()
    for path in runs:
        path.unlink()
    return merged


def _read(f: BinaryIO) -> Iterator[Keyed[T]]:
    """The items of a run file, a chunk at a time."""
    while True:
        try:
            chunk: list[Keyed[T]] = pickle.load(f)
        except EOFError:
            return
        yield from chunk
