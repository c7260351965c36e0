"""Which model version serves a user: an experiment's weights over a stable hash of user_id.

An experiment is written ``v3:90,v4:10`` (version:weight pairs; weights are relative). A user's
point in ``[0, 1)`` is the first 8 bytes of ``blake2b(user_id UTF-8)`` read big-endian, divided by
2**64: the same in every process, language and restart. Arms own consecutive slices of ``[0, 1)``
in the order written, so changing 90/10 to 80/20 moves only the users between 0.8 and 0.9.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from itertools import accumulate

LATEST = "latest"  # the variant of every score when no experiment is set


@dataclass(frozen=True)
class Arm:
    """One experiment arm: a model version and its relative weight."""

    version: int
    weight: int

    @property
    def label(self) -> str:
        """The variant name written on scores, e.g. ``v3``."""
        return version_label(self.version)


def version_label(version: int) -> str:
    """``3`` -> ``v3``."""
    return f"v{version}"


def parse_version(text: str) -> int:
    """``v3`` or ``3`` -> 3 (ValueError otherwise)."""
    digits = text.strip().removeprefix("v")
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(f"{text!r} is not a model version (use v1, v2, ...)")
    return int(digits)


def parse_experiment(text: str) -> tuple[Arm, ...]:
    """``v3:90,v4:10`` -> its arms; empty text -> no experiment (serve the latest version)."""
    arms = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        version, sep, weight = part.partition(":")
        if not sep or not weight.strip().isdigit() or int(weight) < 1:
            raise ValueError(f"{part!r} is not version:weight with a positive integer weight")
        arms.append(Arm(parse_version(version), int(weight)))
    if len({arm.version for arm in arms}) != len(arms):
        raise ValueError("each version may appear once")
    return tuple(arms)


def user_point(user_id: str) -> float:
    """The user's stable point in ``[0, 1)``."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class VariantAssigner:
    """Maps users to arms in proportion to the weights."""

    def __init__(self, arms: tuple[Arm, ...]) -> None:
        if not arms:
            raise ValueError("an experiment needs at least one arm")
        self.arms = arms
        total = sum(arm.weight for arm in arms)
        self._bounds = [cumulative / total for cumulative in accumulate(a.weight for a in arms)]

    def assign(self, user_id: str) -> Arm:
        """The arm serving ``user_id``."""
        index = bisect.bisect_right(self._bounds, user_point(user_id))
        return self.arms[min(index, len(self.arms) - 1)]
