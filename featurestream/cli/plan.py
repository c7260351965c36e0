"""``featurestream plan``: what resubmitting the feature job with these definitions would do.

Like ``terraform plan`` or ``feast plan``: the definitions are validated, compiled and compared
with the layout the running feature job published in Redis at start
(:func:`udfs.store.redis_layout.layout_key`, :func:`udfs.features.layout.describe`), and each
added (+), changed (~), removed (-) and refused (!) feature is printed with how it warms up,
then a one-line summary. Exit 0 when the job would start from its savepoint, 1 when it would
refuse to; a mistake in the definitions or an unreachable Redis is one line and exit 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from typing import Any

from featurestream.cli.redis_access import RedisUnreadable, redis_client
from featurestream.errors import UserFacingError
from featurestream.settings import Settings, masked_url
from featurestream.udfs.features.layout import (
    FeatureChange,
    PlanReport,
    describe,
    parse_published,
    plan_changes,
)
from featurestream.udfs.features.plan import compile_plans
from featurestream.udfs.store.redis_layout import layout_key

REFUSES = 1  # the exit code when the job would refuse the definitions


def plan_command(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: print the plan; 0 if it can be applied, 1 if the job would refuse."""
    if args.definitions is not None:
        settings = settings.replace(definitions=args.definitions)
    definitions = settings.load_definitions()
    new = describe(compile_plans(definitions), settings.state_shards)
    running = read_published(settings)
    where = f"{masked_url(settings.redis_url)} under {layout_key(settings.redis_key_prefix)}"
    print(f"Definitions: {settings.definitions or 'the built-in user features'} "
          f"(fingerprint {definitions.fingerprint()})")
    if running is None:
        print(f"No published layout at {where}: no feature job has run against this Redis "
              "and prefix, so everything is new.")
        for line in render_new(new):
            print(line)
        return 0
    print(f"Running layout: {where} ({running['shards']} state shards)")
    report = plan_changes(running, new)
    for line in render(report):
        print(line)
    return 0 if report.can_apply else REFUSES


def refuse_unresumable_state(settings: Settings) -> None:
    """Before the feature job resumes a savepoint: UserFacingError if the layout the last job
    published in Redis is one these settings and definitions would refuse (another shard
    count, another entity key). The job refuses such state too, but only in the subtasks that
    hold some of it; the others would meanwhile write rows counted from empty state."""
    try:
        running = read_published(settings)
    except RedisUnreadable as exc:
        raise RedisUnreadable(f"{exc}. A feature job resumes only after its state layout is "
                              "checked against the one the last job published there: submit "
                              "again once Redis answers") from None
    if running is None:
        return
    new = describe(compile_plans(settings.load_definitions()), settings.state_shards)
    refused = plan_changes(running, new).refused
    if refused:
        reasons = "; ".join(f"{r.subject}: {r.reason} (fix: {r.fix})" for r in refused)
        raise UserFacingError(f"the feature job would refuse the state it resumes, as the "
                              f"layout the last job published says: {reasons}. "
                              "`featurestream plan` shows the whole plan")


def read_published(settings: Settings) -> dict[str, Any] | None:
    """The layout the feature job published (None if none has), one clear line if Redis
    cannot be read or the layout is not one this release reads."""
    key = layout_key(settings.redis_key_prefix)
    with redis_client(settings) as client:
        text = client.get(key)
    if text is None:
        return None
    try:
        return parse_published(text)
    except ValueError as exc:
        raise UserFacingError(f"the layout published at {key} cannot be read: {exc}") from None


def render(report: PlanReport) -> list[str]:
    """The plan as printed: changes, refusals, the unchanged count, the summary line."""
    lines: list[str] = []
    for change in report.added:
        entity = f"  (new entity {change.entity})" if change.whole_entity else ""
        lines += [f"  + {change.name} = {change.definition}{entity}",
                  f"      {warm_up(change)}"]
    for change in report.changed:
        lines += [f"  ~ {change.name} = {change.before}",
                  f"      -> {change.definition}",
                  f"      {warm_up(change, changed=True)}"]
    for change in report.removed:
        entity = f"  (entity {change.entity} removed)" if change.whole_entity else ""
        lines.append(f"  - {change.name} = {change.definition}{entity}")
    for refusal in report.refused:
        lines += [f"  ! {refusal.subject}: {refusal.reason}", f"      fix: {refusal.fix}"]
    if lines:
        lines.insert(0, "")
        lines.append("")
    if report.unchanged:
        lines.append(f"{_count(len(report.unchanged), 'feature')} unchanged.")
    lines.append(summary(report))
    return lines


def warm_up(change: FeatureChange, changed: bool = False) -> str:
    """How an added or changed feature comes to its full value after the restart."""
    if not change.starts_empty:
        return "keeps its state: it reads only aggregations the job already keeps"
    start = "restarts empty" if changed else "starts empty"
    if change.complete_after_ms is None:
        text, until = f"{start}; never complete: it misses history", "for good"
    else:
        text, until = f"{start}; warms up for {duration(change.complete_after_ms)}", "until then"
    return f"{text} (reported as warming up {until})"


def summary(report: PlanReport) -> str:
    """``Plan: 2 to add, 1 to change, 1 to remove; ...`` with whether the job would start."""
    counts = (f"Plan: {len(report.added)} to add, {len(report.changed)} to change, "
              f"{len(report.removed)} to remove")
    if report.refused:
        return (f"{counts}; the job would refuse to start: "
                f"{'; '.join(r.subject for r in report.refused)} cannot be carried over (!).")
    if not report.has_changes:
        return f"{counts}; the running job already runs these definitions."
    return f"{counts}; the job can resume from its savepoint."


def render_new(new: Mapping[str, Any]) -> Iterator[str]:
    """Every feature of a layout no job has run yet."""
    total = 0
    yield ""
    for entity, layout in new["entities"].items():
        for feature, published in layout["features"].items():
            total += 1
            yield f"  + {entity}.{feature} = {published['definition']}"
    yield ""
    yield (f"Plan: {total} to add, 0 to change, 0 to remove; a job without a savepoint reads "
           "the topics from the earliest offset.")


def duration(ms: int) -> str:
    """``90m`` -> ``1h30m``, ``86400000`` -> ``1d``: a window's length as people write it."""
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                       ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts) or "0ms"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
