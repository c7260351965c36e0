"""``featurestream produce`` (a JSON-lines file) and ``generate`` (synthetic stream) to Kafka.

Both send each event keyed by ``user_id`` with the Kafka timestamp set to its event time, as
framed Avro (schema id from the configured registry) or as JSON, show progress on stderr when it
is a terminal, and end with a one-line summary. Exit status 1 if anything was skipped or lost.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from itertools import islice
from pathlib import Path

from featurestream.devstack.generator import (
    Shift,
    ShiftError,
    StreamConfig,
    generate_labelled_events,
)
from featurestream.devstack.kafka_producer import EventProducer
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.codec import EventDecoder, EventEncoder
from featurestream.udfs.contract.events import Event
from featurestream.udfs.contract.schema_registry import (
    SchemaNotRegistered,
    SchemaRegistryError,
    registry_for,
)
from featurestream.udfs.offline.training_set import LabelsWriter
from featurestream.udfs.wire.dead_letters import Problem

# Simulated event rate of `generate --rate 0`; the burst's event times end at about "now".
BACKFILL_EVENTS_PER_SECOND = 100.0
_MAX_REPORTED_LINES = 20


def produce_command(settings: Settings, args: argparse.Namespace) -> int:
    """Validate each line of ``args.file``; send the valid ones, report and skip the rest."""
    path = Path(args.file)
    topic = args.topic or settings.events_topic
    registry = registry_for(settings.schema_registry)
    decoder = EventDecoder(registry)
    encoder = EventEncoder(registry, subject=f"{topic}-value")
    progress = _Progress(total=None)
    skipped = 0

    def valid_records(lines: Iterable[bytes]) -> Iterator[tuple[Event, bytes]]:
        nonlocal skipped
        for number, line in enumerate(lines, start=1):
            record = line.strip()
            if not record:
                continue
            result = decoder.decode(record)
            if isinstance(result, Problem):
                skipped += 1
                if skipped <= _MAX_REPORTED_LINES:
                    progress.message(f"{path}:{number}: skipped, {result}")
                continue
            yield result, record if args.format == "json" else encoder.avro(result)

    try:
        file = path.open("rb")
    except OSError as exc:
        raise UserFacingError(f"cannot read {path}: {exc.strerror}") from None
    with file, _registry_errors(settings), EventProducer(settings, topic) as producer:
        sent = _send_all(producer, valid_records(file), progress)
        undelivered = producer.flush()
    if skipped > _MAX_REPORTED_LINES:
        print(f"({skipped - _MAX_REPORTED_LINES} more bad lines not shown)", file=sys.stderr)
    return _summarize(producer, args.format, sent, undelivered, skipped)


def generate_command(settings: Settings, args: argparse.Namespace) -> int:
    """Produce ``--events`` synthetic events (or write them as JSON lines to ``--out``); with
    ``--labels FILE`` also write each event's fraud label there (event_id,label CSV); with
    ``--skip N`` the stream's events after its first N (the same users and catalogue as a run
    with the same ``--seed`` and ``--users``: its continuation)."""
    if args.events < 0 or args.users < 1 or args.rate < 0 or args.skip < 0:
        raise UserFacingError("use --events >= 0, --users >= 1, --rate >= 0 and --skip >= 0")
    simulated_rate = args.rate or BACKFILL_EVENTS_PER_SECOND
    now_ms = int(time.time() * 1000)
    # the first event sent is at about now (paced), or the burst ends at about now
    first_ts = now_ms if args.rate else now_ms - int(args.events / simulated_rate * 1000)
    start_ts = first_ts - int(args.skip / simulated_rate * 1000)
    config = StreamConfig(users=args.users, events_per_second=simulated_rate, start_ts=start_ts,
                          seed=args.seed, shift=_shift(args))
    with _labels_file(args.labels) as labels:
        stream = islice(generate_labelled_events(config), args.skip, args.skip + args.events)
        status = _generate(settings, args, _labelled(stream, labels), first_ts)
    if labels is not None:
        print(f"wrote {labels.rows:,} labels (event_id,label) to {args.labels}")
    return status


_SHIFT_OPTIONS = {"amount_factor": "--shift-amount", "user_share": "--shift-users",
                  "after_events": "--shift-after"}


def _shift(args: argparse.Namespace) -> Shift | None:
    """The ``--shift-*`` options as a :class:`Shift` (None without ``--shift-amount``)."""
    if args.shift_amount is None:
        if args.shift_users is not None or args.shift_after is not None:
            raise UserFacingError("--shift-users and --shift-after need --shift-amount FACTOR "
                                  "(e.g. --shift-amount 2)")
        return None
    try:
        shift = Shift(amount_factor=args.shift_amount,
                      user_share=0.1 if args.shift_users is None else args.shift_users,
                      after_events=args.shift_after or 0)
    except ShiftError as exc:
        raise UserFacingError(f"{_SHIFT_OPTIONS[exc.field]} {exc.value}: use {exc.requirement}"
                              ) from None
    if shift.after_events >= max(args.events, 1):
        raise UserFacingError(f"--shift-after {shift.after_events}: use fewer than --events "
                              f"({args.events}), or the shift never starts")
    return replace(shift, after_events=args.skip + shift.after_events)  # counted from --skip


def _generate(settings: Settings, args: argparse.Namespace, events: Iterator[Event],
              start_ts: int) -> int:
    progress = _Progress(total=args.events)
    encoder = EventEncoder(registry_for(settings.schema_registry),
                           subject=f"{settings.events_topic}-value")
    if args.out:
        _write_json_lines(Path(args.out), events, encoder, progress)
        print(f"wrote {args.events:,} events to {args.out}")
        return 0
    if args.rate:
        events = _paced(events, start_ts)
    encode: Callable[[Event], bytes] = encoder.json if args.format == "json" else encoder.avro
    with _registry_errors(settings), EventProducer(settings) as producer:
        sent = _send_all(producer, ((event, encode(event)) for event in events), progress)
        undelivered = producer.flush()
    return _summarize(producer, args.format, sent, undelivered, skipped=0)


@contextmanager
def _labels_file(path: str | None) -> Iterator[LabelsWriter | None]:
    """The ``--labels`` CSV writer (None without the option)."""
    if path is None:
        yield None
        return
    try:
        writer = LabelsWriter(path)
    except OSError as exc:
        raise UserFacingError(f"cannot write {path}: {exc.strerror}") from None
    with writer:
        yield writer


def _labelled(history: Iterable[tuple[Event, bool]],
              labels: LabelsWriter | None) -> Iterator[Event]:
    """The events of ``history``, each one's label written as it passes (with ``--labels``)."""
    for event, label in history:
        if labels is not None:
            labels.add(event.event_id, label)
        yield event


def _send_all(producer: EventProducer, records: Iterable[tuple[Event, bytes]],
              progress: _Progress) -> int:
    sent = 0
    try:
        for event, payload in records:
            producer.send(event.user_id, payload, event.ts)
            sent += 1
            progress.update(sent)
    finally:
        progress.finish()
    return sent


def _summarize(producer: EventProducer, fmt: str, sent: int, undelivered: int,
               skipped: int) -> int:
    summary = (f"sent {sent:,} events to {producer.topic!r} as {fmt}:"
               f" {producer.delivered:,} delivered, {producer.failed:,} failed")
    if undelivered:
        summary += f", {undelivered:,} unconfirmed (flush timed out)"
    if skipped:
        summary += f"; skipped {skipped:,} bad line{'' if skipped == 1 else 's'}"
    print(summary)
    if producer.first_error:
        print(f"first delivery error: {producer.first_error}", file=sys.stderr)
    return 1 if producer.failed or undelivered or skipped else 0


def _write_json_lines(path: Path, events: Iterable[Event], encoder: EventEncoder,
                      progress: _Progress) -> None:
    try:
        with path.open("wb") as out:
            for written, event in enumerate(events, start=1):
                out.write(encoder.json(event) + b"\n")
                progress.update(written)
    except OSError as exc:
        raise UserFacingError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        progress.finish()


def _paced(events: Iterable[Event], start_ts: int) -> Iterator[Event]:
    """Release each event when its event time comes due on the wall clock (late ones at once)."""
    started = time.monotonic()
    for event in events:
        delay = started + (event.ts - start_ts) / 1000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield event


@contextmanager
def _registry_errors(settings: Settings) -> Iterator[None]:
    """Turn schema-registry failures into one clear line naming the setting."""
    try:
        yield
    except (SchemaRegistryError, SchemaNotRegistered) as exc:
        where = settings.schema_registry_url or "empty (file-backed registry in schemas/)"
        raise UserFacingError(f"{exc} [FEATURESTREAM_SCHEMA_REGISTRY_URL is {where}]") from None


class _Progress:
    """One self-overwriting status line on stderr, only when stderr is a terminal."""

    def __init__(self, total: int | None) -> None:
        self._total = total
        self._enabled = sys.stderr.isatty()
        self._next_refresh = 0.0

    def update(self, done: int) -> None:
        if not self._enabled or time.monotonic() < self._next_refresh:
            return
        self._next_refresh = time.monotonic() + 0.1
        share = f"/{self._total:,} ({done / self._total:.0%})" if self._total else ""
        sys.stderr.write(f"\r{done:,}{share} events")
        sys.stderr.flush()

    def message(self, line: str) -> None:
        self.finish()
        print(line, file=sys.stderr)

    def finish(self) -> None:
        if self._enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
