"""Online against offline: what ``featurestream verify`` compares, free of Kafka and Redis.

Two checks, each over values the online side recorded and the offline replay
(:mod:`udfs.offline.replay`) recomputed from the same log with the same code:

- **scores** (:class:`ScoreCheck`): each score's recorded vector against the vector assembled
  (:mod:`udfs.scoring.vector`, with the scored version's defaults) from the rows the replay
  captured for the same event. Equal to the bit is expected; a scored event that arrived behind
  the watermark (``late``) may differ, depending on when the watermark moved
  (:mod:`udfs.features.point_in_time`), and is counted apart.
- **rows** (:class:`RowCheck`): each online row in the store against the replay's row of the
  same entity as of the online row's ``as_of``, when the replay has counted the same events
  (equal ``version``) and has not moved past that time; otherwise it says why it cannot compare
  (the job has not caught up with the log, or the replay's event time is ahead).

Both count mismatches per feature and keep a few examples.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestream.udfs.features.processor import Row

EXAMPLES = 5  # examples kept per check
_META = frozenset({"as_of", "version", "updated_at", "warming_up"})


def same(a: Any, b: Any) -> bool:
    """Equal values: NaN equals NaN, an int equals the same float, a boolean only itself."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


@dataclass(frozen=True)
class Mismatch:
    """One value that differs: where (an event id or a row's key), the feature, both values."""

    where: str
    feature: str
    online: Any
    offline: Any


@dataclass
class Check:
    """What one check found."""

    compared: int = 0
    mismatched: int = 0  # compared records with at least one differing value
    by_feature: Counter[str] = field(default_factory=Counter)
    examples: list[Mismatch] = field(default_factory=list)
    not_compared: Counter[str] = field(default_factory=Counter)  # reason -> count

    def _differ(self, where: str, online: Mapping[str, Any], offline: Mapping[str, Any],
                names: Sequence[str]) -> bool:
        found = False
        for name in names:
            a, b = online.get(name), offline.get(name)
            if not same(a, b):
                found = True
                self.by_feature[name] += 1
                if len(self.examples) < EXAMPLES:
                    self.examples.append(Mismatch(where, name, a, b))
        self.compared += 1
        self.mismatched += found
        return found


@dataclass
class ScoreCheck:
    """Recorded vectors against the replay's: ``exact`` for events captured in time, ``late``
    for those that arrived behind the watermark (allowed to differ)."""

    exact: Check = field(default_factory=Check)
    late: Check = field(default_factory=Check)
    missing: int = 0  # scores of events the replay never captured (not in the log read)

    def add(self, event_id: str, recorded: Mapping[str, float],
            replayed: Mapping[str, float] | None, late: bool) -> None:
        """One score: its recorded vector, and the replay's (None: event not replayed)."""
        if replayed is None:
            self.missing += 1
            return
        (self.late if late else self.exact)._differ(event_id, recorded, replayed,
                                                    list(recorded))


@dataclass
class RowCheck(Check):
    """Online rows against the replay's rows at their ``as_of``."""

    def add(self, key: str, online: Row, offline: Row | str) -> None:
        """One online row, and the replay's row at its as_of (a str: why there is none)."""
        if isinstance(offline, str):
            self.not_compared[offline] += 1
            return
        names = [n for n in dict.fromkeys([*online, *offline]) if n not in _META]
        self._differ(key, online, offline, names)
