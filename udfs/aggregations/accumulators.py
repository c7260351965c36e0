"""Accumulators: one implementation per aggregation, online and offline.

An accumulator is a stateless strategy over a plain state it creates (Quix Streams' and
Chronon's shape): :meth:`initialize`, :meth:`add` a value into a bucket, :meth:`expire` the
buckets that left the window, :meth:`merge` another state of the same buckets, :meth:`result`.
States are builtins (dicts and lists of numbers), never an object per bucket: they pickle fast
and a worker holding millions of them spends no time in Python's cycle collector. ``dump`` and
``load`` turn a state into what Flink stores (builtins only) and back.

``add`` never sees a null value: the caller skips events whose field is null or that fail the
feature's filter. Buckets are the window's (:mod:`udfs.aggregations.windows`); a lifetime
window puts everything in bucket 0 and never expires it.
"""

from __future__ import annotations

import bisect
import math
import textwrap
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from datasketches import hll_sketch, hll_union, tgt_hll_type  # type: ignore[import-untyped]

Value = Any  # what a feature row holds: int, float, str, bool, a list of those, or None


class Accumulator:
    """The shape every accumulator has (see the module docstring).

    An accumulator may give its ``initialize``, ``add``, ``expire`` and ``result`` as code text
    instead of methods: :attr:`INIT` is a new state; :attr:`ADD` adds ``VALUE`` to state ``s``
    in bucket ``k``; :attr:`EXPIRE_EACH` drops bucket ``k`` from state ``STATE`` (and
    :attr:`EXPIRE_AFTER` finishes once all are dropped); :attr:`RESULT` is an expression over
    ``s``. The methods are then built from that
    text, and the feature engine inlines the same text into its generated hot path
    (:mod:`udfs.features.codegen`: one loop over the dropped buckets for a whole window).
    """

    kind: ClassVar[str]
    INIT: ClassVar[str | None] = None  # an expression: a new state
    ADD: ClassVar[str | None] = None
    EXPIRE_EACH: ClassVar[str | None] = None
    EXPIRE_AFTER: ClassVar[str] = ""
    RESULT: ClassVar[str | None] = None  # an expression over the state ``s``

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("INIT") is not None:
            cls.initialize = _method("initialize", "", f"return {cls.INIT}")  # type: ignore
        if cls.__dict__.get("ADD") is not None:
            cls.add = _method("add", "s, k, v", cls.ADD.replace("VALUE", "v"))  # type: ignore
        each = cls.__dict__.get("EXPIRE_EACH")
        if each is not None:
            body = f"for k in dropped:\n{textwrap.indent(each, '    ')}\n{cls.EXPIRE_AFTER}"
            cls.expire = _method("expire", "s, dropped", body.replace("STATE", "s"))  # type: ignore
        if cls.__dict__.get("RESULT") is not None:
            cls.result = _method("result", "s", f"return {cls.RESULT}")  # type: ignore

    def initialize(self) -> Any:
        raise NotImplementedError

    def add(self, state: Any, bucket: int, value: Any) -> None:
        raise NotImplementedError

    def expire(self, state: Any, buckets: Iterable[int]) -> None:
        raise NotImplementedError

    def merge(self, into: Any, other: Any) -> None:
        raise NotImplementedError

    def result(self, state: Any) -> Value:
        raise NotImplementedError

    def dump(self, state: Any) -> Any:
        """The state as builtins only (what Flink stores)."""
        return state

    def load(self, plain: Any) -> Any:
        """Inverse of :meth:`dump`."""
        return plain


def _method(name: str, parameters: str, body: str) -> Callable[..., Any]:
    """A method ``name(self, parameters)`` from code text (an accumulator's ADD or EXPIRE)."""
    scope: dict[str, Any] = {"math": math}  # what the code texts may use
    signature = f"self, {parameters}" if parameters else "self"
    exec(f"def {name}({signature}):\n{textwrap.indent(body, '    ')}", scope)
    return scope[name]


class Count(Accumulator):
    """Events counted: ``[bucket -> n, total]``."""

    kind = "count"
    ADD = "b = s[0]\nb[k] = b.get(k, 0) + 1\ns[1] += 1"
    EXPIRE_EACH = "STATE[1] -= STATE[0].pop(k, 0)"
    INIT = "[{}, 0]"

    def merge(self, into: list, other: list) -> None:
        counts = into[0]
        for k, n in other[0].items():
            counts[k] = counts.get(k, 0) + n
        into[1] += other[1]

    RESULT = "s[1]"


class IntSum(Count):
    """A sum of integers: ``[bucket -> partial sum, total]``; a count that adds the value, so
    it expires, merges and reads like one (exact, so expiry subtracts)."""

    kind = "sum"
    ADD = "b = s[0]\nb[k] = b.get(k, 0) + VALUE\ns[1] += VALUE"


class FloatSum(IntSum):
    """A sum of floats: ``[bucket -> partial sum, total]``. The total is rebuilt with
    ``math.fsum`` on every expiry of the window (even when no dropped bucket held a sum), so
    no rounding drift accumulates from subtracting; past the float range (or inf + -inf) it is
    what ``+=`` gives, as fsum raises there."""

    EXPIRE_EACH = "STATE[0].pop(k, None)"
    EXPIRE_AFTER = textwrap.dedent("""\
        try:
            STATE[1] = math.fsum(STATE[0].values())
        except (OverflowError, ValueError):
            STATE[1] = sum(STATE[0].values(), 0.0)""")
    INIT = "[{}, 0.0]"

    def merge(self, into: list, other: list) -> None:
        sums = into[0]
        for k, s in other[0].items():
            sums[k] = sums.get(k, 0) + s
        self.expire(into, ())


class Extreme(Accumulator):
    """Min or max: ``[bucket -> extreme, current]``. Extremes cannot be subtracted, so an
    expiry recomputes the current one from the live buckets (at most 60). ``add`` is written
    out in each subclass: comparing inline is 4x faster than calling ``min``/``max``."""

    def __init__(self, pick: Callable[[Any, Any], Any]) -> None:
        self.pick = pick

    INIT = "[{}, None]"

    def expire(self, state: list, buckets: Iterable[int]) -> None:
        values = state[0]
        dropped = [values.pop(k) for k in buckets if k in values]
        if dropped:
            state[1] = self._extreme(values.values())

    def merge(self, into: list, other: list) -> None:
        for k, v in other[0].items():
            self.add(into, k, v)

    RESULT = "s[1]"

    def _extreme(self, values: Iterable[Any]) -> Any:
        current = None
        for v in values:
            current = v if current is None else self.pick(current, v)
        return current


class Min(Extreme):
    kind = "min"

    def __init__(self) -> None:
        super().__init__(min)

    def add(self, state: list, bucket: int, value: Any) -> None:
        buckets = state[0]
        old = buckets.get(bucket)
        if old is None or value < old:
            buckets[bucket] = value
        current = state[1]
        if current is None or value < current:
            state[1] = value


class Max(Extreme):
    kind = "max"

    def __init__(self) -> None:
        super().__init__(max)

    def add(self, state: list, bucket: int, value: Any) -> None:
        buckets = state[0]
        old = buckets.get(bucket)
        if old is None or value > old:
            buckets[bucket] = value
        current = state[1]
        if current is None or value > current:
            state[1] = value


class Distinct(Accumulator):
    """Exact distinct values: ``[bucket -> {value: n}, {value: n}]`` (multisets, so a value
    leaves the window only when its last occurrence does)."""

    kind = "distinct"
    INIT = "[{}, {}]"

    ADD = textwrap.dedent("""\
        b = s[0].get(k)
        if b is None:
            b = s[0][k] = {}
        b[VALUE] = b.get(VALUE, 0) + 1
        b = s[1]
        b[VALUE] = b.get(VALUE, 0) + 1""")
    EXPIRE_EACH = textwrap.dedent("""\
        for x, n in STATE[0].pop(k, {}).items():
            n = STATE[1][x] - n
            if n:
                STATE[1][x] = n
            else:
                del STATE[1][x]""")

    def merge(self, into: list, other: list) -> None:
        items = into[1]
        for k, values in other[0].items():
            in_bucket = into[0].setdefault(k, {})
            for value, n in values.items():
                in_bucket[value] = in_bucket.get(value, 0) + n
                items[value] = items.get(value, 0) + n

    RESULT = "len(s[1])"


# DataSketches ignores an empty string; a fixed suffix keeps "" a value (and stays injective).
_HLL_SUFFIX = "|"


class ApproxDistinct(Accumulator):
    """Distinct values estimated with HyperLogLog (Apache DataSketches): ``{bucket -> sketch}``.

    Memory is bounded by ``2**lg_k`` bytes per live bucket whatever the cardinality (small
    sketches stay smaller); the result unions the live buckets. Relative standard error is
    about ``1.04 / sqrt(2**lg_k)`` (3.3 % at ``lg_k=10``).
    """

    kind = "approx_distinct"

    def __init__(self, lg_k: int) -> None:
        self.lg_k = lg_k

    INIT = "{}"

    def add(self, state: dict, bucket: int, value: Any) -> None:
        sketch = state.get(bucket)
        if sketch is None:
            sketch = state[bucket] = hll_sketch(self.lg_k, tgt_hll_type.HLL_8)
        sketch.update(str(value) + _HLL_SUFFIX)

    def expire(self, state: dict, buckets: Iterable[int]) -> None:
        for k in buckets:
            state.pop(k, None)

    def merge(self, into: dict, other: dict) -> None:
        for k, sketch in other.items():
            mine = into.get(k)
            if mine is None:
                into[k] = hll_sketch.deserialize(sketch.serialize_updatable())
            else:
                union = hll_union(self.lg_k)
                union.update(mine)
                union.update(sketch)
                into[k] = union.get_result(tgt_hll_type.HLL_8)

    def result(self, state: dict) -> int:
        if not state:
            return 0
        if len(state) == 1:
            return round(next(iter(state.values())).get_estimate())
        union = hll_union(self.lg_k)
        for sketch in state.values():
            union.update(sketch)
        return round(union.get_estimate())

    def dump(self, state: dict) -> dict:
        return {k: sketch.serialize_compact() for k, sketch in state.items()}

    def load(self, plain: dict) -> dict:
        return {k: hll_sketch.deserialize(data) for k, data in plain.items()}


class LastN(Accumulator):
    """The values of the ``n`` latest events by event time, newest first:
    ``{bucket -> [(ts, seq, value)] oldest first, at most n}`` and an arrival counter, so
    events with the same time keep their arrival order (:meth:`merge` counts the other
    state's events as arriving after this one's). ``n = 1`` is ``last``."""

    kind = "last_n"

    def __init__(self, n: int, single: bool = False) -> None:
        self.n = n
        self.single = single  # result is the value itself (``last``), not a list

    INIT = "[{}, 0]"

    def add(self, state: list, bucket: int, value: Any) -> None:
        """``value`` is ``(ts, value)``."""
        ts, item = value
        entries = state[0].get(bucket)
        if entries is None:
            entries = state[0][bucket] = []
        state[1] += 1
        # the arrival number is unique, so tuples order by (ts, arrival) and never compare items
        bisect.insort(entries, (ts, state[1], item))
        if len(entries) > self.n:
            del entries[0]

    def expire(self, state: list, buckets: Iterable[int]) -> None:
        for k in buckets:
            state[0].pop(k, None)

    def merge(self, into: list, other: list) -> None:
        for k, entries in other[0].items():
            for ts, _, item in entries:
                self.add(into, k, (ts, item))

    def result(self, state: list) -> Value:
        newest: list = []
        buckets = state[0]
        for k in sorted(buckets, reverse=True):
            newest.extend(e[2] for e in reversed(buckets[k]))
            if len(newest) >= self.n:
                break
        if self.single:
            return newest[0] if newest else None
        return newest[:self.n]
