"""The backfill's dead letters: one JSON object per line, never a record dropped silently.

Each line: ``position`` (``kafka:<topic>[<partition>]@<offset>`` or ``<file>:<record>``, the
record or line number 1-based), ``input``, ``partition`` (null for a file), ``offset``
(0-based), ``stage``, ``error_class`` and ``message`` -- the job's own
:class:`~featurestream.udfs.wire.dead_letters.Problem`, as its DLQ headers carry them -- and
``value``, the record's bytes in base64.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from types import TracebackType

from featurestream.backfill.records import Position
from featurestream.udfs.wire.dead_letters import Problem


class DeadLetterFile:
    """Appends dead letters to a JSON-lines file (created, or truncated, on open) and counts
    them by error class."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("w", encoding="utf-8")
        self.by_reason: Counter[str] = Counter()

    def add(self, position: Position, value: bytes, problem: Problem) -> None:
        """Write one dead letter."""
        self._file.write(json.dumps({
            "position": str(position), "input": position.input,
            "partition": position.partition, "offset": position.offset,
            "stage": str(problem.stage), "error_class": str(problem.error_class),
            "message": problem.message, "value": base64.b64encode(value).decode("ascii"),
        }, ensure_ascii=False) + "\n")
        self.by_reason[str(problem.error_class)] += 1

    @property
    def count(self) -> int:
        """How many were written."""
        return sum(self.by_reason.values())

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> DeadLetterFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
