"""Filters on an event's fields (``where=``): data, so definitions pickle, hash and compare.

A filter is a :class:`Condition` (one field against a value) or several of them that must all
hold (:func:`all_of`). Comparisons follow SQL's rule for nulls: a null field fails every
condition except ``is_null``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Scalar = str | int | float | bool

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "ge": operator.ge,
    "lt": operator.lt, "le": operator.le,
}
ORDERED_OPS = frozenset({"gt", "ge", "lt", "le"})  # numeric fields only
VALUE_OPS = frozenset(OPS) | {"in"}
NULL_OPS = frozenset({"is_null", "not_null"})


@dataclass(frozen=True)
class Condition:
    """``field op value``; ``op`` is one of eq, ne, gt, ge, lt, le, in, is_null, not_null."""

    field: str
    op: str
    value: Scalar | tuple[Scalar, ...] | None = None

    def describe(self) -> str:
        """The condition as users write it, for messages and plans."""
        if self.op in NULL_OPS:
            return f"{self.op}({self.field!r})"
        if self.op == "in":
            values = self.value if isinstance(self.value, tuple) else (self.value,)
            return f"isin({self.field!r}, {list(values)!r})"
        return f"{self.op}({self.field!r}, {self.value!r})"


@dataclass(frozen=True)
class Filter:
    """All of ``conditions`` hold (an empty filter passes every event)."""

    conditions: tuple[Condition, ...] = ()

    def describe(self) -> str:
        """The filter as users write it."""
        return " and ".join(c.describe() for c in self.conditions) or "every event"

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the filter reads."""
        return tuple(dict.fromkeys(c.field for c in self.conditions))


def _condition(field: str, op: str, value: Any = None) -> Filter:
    return Filter((Condition(field, op, value),))


def eq(field: str, value: Scalar) -> Filter:
    """The field equals ``value``."""
    return _condition(field, "eq", value)


def ne(field: str, value: Scalar) -> Filter:
    """The field is not null and differs from ``value``."""
    return _condition(field, "ne", value)


def gt(field: str, value: int | float) -> Filter:
    """The (numeric) field is greater than ``value``."""
    return _condition(field, "gt", value)


def ge(field: str, value: int | float) -> Filter:
    """The (numeric) field is at least ``value``."""
    return _condition(field, "ge", value)


def lt(field: str, value: int | float) -> Filter:
    """The (numeric) field is less than ``value``."""
    return _condition(field, "lt", value)


def le(field: str, value: int | float) -> Filter:
    """The (numeric) field is at most ``value``."""
    return _condition(field, "le", value)


def isin(field: str, values: Iterable[Scalar]) -> Filter:
    """The field is one of ``values`` (a list: a lone string would be read as its letters)."""
    if isinstance(values, str):
        raise TypeError(f"isin({field!r}, {values!r}): give a list of values, e.g. "
                        f"isin({field!r}, [{values!r}])")
    return _condition(field, "in", tuple(values))


def is_null(field: str) -> Filter:
    """The field is null or absent."""
    return _condition(field, "is_null")


def not_null(field: str) -> Filter:
    """The field has a value."""
    return _condition(field, "not_null")


def all_of(*filters: Filter) -> Filter:
    """Every one of ``filters`` holds."""
    return Filter(tuple(c for f in filters for c in f.conditions))


Predicate = Callable[[Sequence[Any]], bool]


def compile_filter(where: Filter, position: Callable[[str], int]) -> Predicate:
    """A predicate over an event's values; ``position(field)`` is the field's index in them."""
    tests = [_compile_condition(c, position(c.field)) for c in where.conditions]
    if not tests:
        return lambda values: True
    if len(tests) == 1:
        return tests[0]
    return lambda values: all(test(values) for test in tests)


def _compile_condition(condition: Condition, i: int) -> Predicate:
    op, value = condition.op, condition.value
    if op == "is_null":
        return lambda values: values[i] is None
    if op == "not_null":
        return lambda values: values[i] is not None
    if op == "in":
        members = frozenset(value)  # type: ignore[arg-type]
        return lambda values: values[i] is not None and values[i] in members
    compare = OPS[op]
    return lambda values: values[i] is not None and compare(values[i], value)
