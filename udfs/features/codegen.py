"""Straight-line Python for an entity plan's hot path: what one event adds, what one expiry drops.

A generic engine walking lists of (filter, field, accumulator) per event pays Python's price for
every loop step and call; the hand-written engine it replaced did not. So, as ``dataclasses`` and
``namedtuple`` do, each plan's event and expiry paths are generated once as source text and
compiled: filters are evaluated once per event as plain expressions, and accumulators that give
their code (``INIT``, ``ADD``, ``EXPIRE_EACH``, ``RESULT`` of
:class:`udfs.aggregations.accumulators.Accumulator`: the same text their own methods are built
from, so there is one implementation) are inlined; the others are called. The generated source
is kept on the function (``__source__``) for reading and tests.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from featurestream.udfs.aggregations.accumulators import Accumulator
from featurestream.udfs.aggregations.windows import BUCKETS_PER_WINDOW
from featurestream.udfs.definitions.filters import Condition, Filter
from featurestream.udfs.features.plan import EntityPlan, FeatureSpec

Feed = Callable[[list, int, Sequence[Any], int], None]  # (windows, ts, values, as_of)
RowOf = Callable[[Any], dict[str, Any]]  # (entity state) -> row
Expire = Callable[[list, list[int]], None]  # (window, dropped buckets)

_COMPARE = {"eq": "==", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _indent(code: str, depth: int) -> str:
    return textwrap.indent(code, "    " * depth)


class _Namespace(dict[str, Any]):
    """Constants the generated code refers to by name."""

    def name(self, value: Any, prefix: str) -> str:
        for key, held in self.items():
            if held is value:
                return key
        key = f"{prefix}{len(self)}"
        self[key] = value
        return key


def _condition(condition: Condition, var: str, ns: _Namespace) -> str:
    op = condition.op
    if op == "is_null":
        return f"{var} is None"
    if op == "not_null":
        return f"{var} is not None"
    constant = ns.name(frozenset(condition.value) if op == "in"  # type: ignore[arg-type]
                       else condition.value, "c")
    if op == "in":
        return f"({var} is not None and {var} in {constant})"
    if op == "eq":  # a null never equals a value
        return f"{var} == {constant}"
    return f"({var} is not None and {var} {_COMPARE[op]} {constant})"


def _filter(where: Filter, variables: dict[str, str], ns: _Namespace) -> str:
    return " and ".join(_condition(c, variables[c.field], ns) for c in where.conditions)


def _add_code(acc: Accumulator, value: str, ns: _Namespace) -> str:
    if acc.ADD is not None:
        return acc.ADD.replace("VALUE", value)
    return f"{ns.name(acc.add, 'add')}(s, k, {value})"


def compile_feed(plan: EntityPlan, source: int, accumulators: Sequence[Accumulator]) -> Feed:
    """The function counting an event of ``source`` into an entity's windows.

    A window records the buckets any of its accumulators took (they schedule its expiries): in
    its own dict, or, with an anchor (:attr:`EntityPlan.anchors`), in the anchor's buckets.
    """
    slots = plan.slots
    ns = _Namespace()
    fields = plan.fields[source]
    variables = {f: f"v{i}" for i, f in enumerate(fields)}
    name = plan.sources[source].name
    lines = ["def feed(windows, ts, values, as_of):"]
    if fields:
        lines.append(f"    {', '.join(variables.values())}, = values")
    filters: dict[Filter, str] = {}
    for spec in plan.accumulators:
        if spec.source == name and spec.where.conditions and spec.where not in filters:
            filters[spec.where] = f"f{len(filters)}"
            lines.append(f"    {filters[spec.where]} = {_filter(spec.where, variables, ns)}")
    for wi, window in enumerate(plan.windows):
        members = [(slot, p) for slot, p in enumerate(slots[wi])
                   if plan.accumulators[p].source == name]
        if not members:
            continue
        anchor = plan.anchors[wi]
        always = any(slot == anchor for slot, _ in members)  # the anchor takes every event
        body = [f"window = windows[{wi}]", "accs = window[2]"]
        body += [] if always else ["took = False"]
        for slot, p in members:
            spec = plan.accumulators[p]
            tests = [filters[spec.where]] if spec.where.conditions else []
            value = "None"
            if spec.field is not None:
                value = variables[spec.field]
                tests.append(f"{value} is not None")
                if spec.takes_time:
                    value = f"(ts, {value})"
            code = f"s = accs[{slot}]\n{_add_code(accumulators[p], value, ns)}"
            if not always:
                code += "\ntook = True"
            body.append(f"if {' and '.join(tests)}:\n{_indent(code, 1)}" if tests else code)
        body.append(_record_bucket(always, anchor is not None))
        hop = window.hop_ms
        if hop is None:
            lines.append(f"    k = 0\n{_indent(chr(10).join(body), 1)}")
        else:
            lines.append(f"    k = ts // {hop}\n"
                         f"    if k > as_of // {hop} - {BUCKETS_PER_WINDOW}:\n"
                         f"{_indent(chr(10).join(body), 2)}")
    return _compile("\n".join(lines), "feed", ns)


def _record_bucket(always: bool, anchored: bool) -> str:
    """Record bucket ``k`` in the window (its oldest bucket, and its bucket record unless an
    anchor that took the event already holds it); without ``always``, only if ``took``."""
    lines = []
    if not always:
        lines.append("sizes = window[0]")
        lines.append("if k not in sizes:\n    sizes[k] = 0" if anchored
                     else "sizes[k] = sizes.get(k, 0) + 1")
    lines.append("if window[1] is None or k < window[1]:\n    window[1] = k")
    code = "\n".join(lines)
    return code if always else f"if took:\n{_indent(code, 1)}"


def compile_expire(accumulators: Sequence[Accumulator], window_slots: Sequence[int]) -> Expire:
    """The function dropping ``dropped`` buckets from every accumulator of one window: one loop
    over the buckets for the accumulators that give their code, a call for the others."""
    ns = _Namespace()
    lines = ["def expire(window, dropped):", "    accs = window[2]"]
    each, after, calls = [], [], []
    for slot, p in enumerate(window_slots):
        acc = accumulators[p]
        state = f"s{slot}"
        if acc.EXPIRE_EACH is None:
            calls.append(f"{ns.name(acc.expire, 'expire')}(accs[{slot}], dropped)")
            continue
        lines.append(f"    {state} = accs[{slot}]")
        bind = f"{ns.name(acc, 'acc')}."
        each.append(acc.EXPIRE_EACH.replace("STATE", state).replace("self.", bind))
        if acc.EXPIRE_AFTER:
            after.append(acc.EXPIRE_AFTER.replace("STATE", state).replace("self.", bind))
    if each:
        lines.append("    for k in dropped:")
        lines += [_indent(code, 2) for code in each]
    lines += [_indent(code, 1) for code in after + calls]
    return _compile("\n".join(lines), "expire", ns)


def compile_windows(plan: EntityPlan, accumulators: Sequence[Accumulator]
                    ) -> tuple[Callable[[], list], Callable[[list, int], bool],
                               Callable[[list], int | None]]:
    """Three functions over an entity's windows: ``new()`` (empty windows),
    ``advance(windows, as_of)`` (expire what left each sliding window; True if anything did)
    and ``next_expiry(windows)`` (the earliest bucket expiry, None if none is pending)."""
    ns = _Namespace()
    new = ["def new():"]
    advance = ["def advance(windows, as_of):", "    expired = False"]
    expiry = ["def next_expiry(windows):", "    due = None"]
    windows = []
    for wi, (window, slots) in enumerate(zip(plan.windows, plan.slots, strict=True)):
        anchor = plan.anchors[wi]
        states = []
        for slot, p in enumerate(slots):
            acc = accumulators[p]
            init = acc.INIT or f"{ns.name(acc.initialize, 'init')}()"
            new.append(f"    a{wi}_{slot} = {init}")
            states.append(f"a{wi}_{slot}")
        record = "{}" if anchor is None else f"a{wi}_{anchor}[0]"
        windows.append(f"[{record}, None, [{', '.join(states)}]]")
        hop = window.hop_ms
        if hop is None:
            continue
        expire = ns.name(compile_expire(accumulators, slots), "expire")
        advance.append(_indent(textwrap.dedent(f"""\
            w = windows[{wi}]
            oldest = w[1]
            if oldest is not None:
                first = as_of // {hop} - {BUCKETS_PER_WINDOW - 1}
                if oldest < first:
                    sizes = w[0]
                    dropped = [k for k in sizes if k < first]
                    {expire}(w, dropped)"""), 1))
        if anchor is None:  # an anchor's own expiry already dropped them
            advance.append("            for k in dropped:\n                del sizes[k]")
        advance.append("            w[1] = min(sizes) if sizes else None\n"
                       "            expired = True")
        expiry.append(_indent(textwrap.dedent(f"""\
            oldest = windows[{wi}][1]
            if oldest is not None:
                t = (oldest + {BUCKETS_PER_WINDOW}) * {hop}
                if due is None or t < due:
                    due = t"""), 1))
    new.append(f"    return [{', '.join(windows)}]")
    advance.append("    return expired")
    expiry.append("    return due")
    return (_compile("\n".join(new), "new", ns), _compile("\n".join(advance), "advance", ns),
            _compile("\n".join(expiry), "next_expiry", ns))


def compile_row(plan: EntityPlan, accumulators: Sequence[Accumulator]) -> RowOf:
    """The function building an entity's row (features in declaration order, after ``as_of``
    and ``version``) from its state; a feature's value from its accumulators' results:

    - count, sum, min, max, distinct, approx_distinct, last, last_n: the result;
    - mean: sum / count of values (null without values);
    - time_since_last: ``as_of`` - the latest event time (null without events);
    - ratio: numerator / denominator (two other features; null when the denominator is 0);
    - last_event_ts: the entity's latest event time.
    """
    ns = _Namespace()
    lines = ["def row(state):", "    w = state.windows", "    as_of = state.as_of"]
    for wi, slots in enumerate(plan.slots):
        for slot, p in enumerate(slots):
            acc = accumulators[p]
            lines.append(f"    s = w[{wi}][2][{slot}]")
            result = acc.RESULT or f"{ns.name(acc.result, 'result')}(s)"
            lines.append(f"    r{p} = {result}")
    variables = {spec.feature.name: f"x{i}" for i, spec in enumerate(plan.features)}
    for spec in plan.features:  # ratios come after the features they read
        lines.append(f"    {variables[spec.feature.name]} = {_value(spec, variables)}")
    entries = ", ".join(f"{name!r}: {variables[name]}" for name in plan.feature_order)
    lines.append(f"    return {{'as_of': as_of, 'version': state.version, {entries}}}")
    return _compile("\n".join(lines), "row", ns)


def _value(spec: FeatureSpec, variables: dict[str, str]) -> str:
    feature, positions = spec.feature, spec.accumulators
    kind = feature.kind
    if kind == "last_event_ts":
        return "state.last_event_ts"
    if kind == "ratio":
        num = variables[feature.numerator or ""]
        den = variables[feature.denominator or ""]
        return f"({num} / {den} if {den} else None)"
    if kind == "mean":
        total, count = (f"r{p}" for p in positions)
        return f"({total} / {count} if {count} else None)"
    (p,) = positions
    if kind == "time_since_last":
        return f"(None if r{p} is None else as_of - r{p})"
    return f"r{p}"


def _compile(source: str, name: str, ns: _Namespace) -> Any:
    scope: dict[str, Any] = {"math": math, **ns}  # what the accumulators' code texts may use
    exec(compile(source, f"<featurestream {name}>", "exec"), scope)
    function = scope[name]
    function.__source__ = source
    return function
